#!/bin/sh
# `ollama serve`, after registering the model shipped in the image (/opt/selfheal-model, SELFHEAL_BAKED_MODEL) in the
# model store when its manifest is not there yet: through a server of its own on a loopback port that nothing else
# uses, stopped before the real one starts, so that the real one lists the model from its first answer. Any other
# command (ollama list, ollama pull ...) runs as it is.
set -eu
if [ "${1:-}" = serve ] && [ -n "${SELFHEAL_BAKED_MODEL:-}" ]; then
  models=${OLLAMA_MODELS:-${HOME:-/root}/.ollama/models}
  name=${SELFHEAL_BAKED_MODEL%%:*}
  tag=${SELFHEAL_BAKED_MODEL#*:}
  if [ ! -s "$models/manifests/registry.ollama.ai/library/$name/$tag" ]; then
    echo "registering $SELFHEAL_BAKED_MODEL from /opt/selfheal-model" >&2
    OLLAMA_HOST=127.0.0.1:11499 ollama serve >/tmp/ollama-register.log 2>&1 &
    pid=$!
    i=0
    until OLLAMA_HOST=127.0.0.1:11499 ollama list >/dev/null 2>&1; do
      i=$((i + 1))
      if [ "$i" -gt 150 ] || ! kill -0 "$pid" 2>/dev/null; then cat /tmp/ollama-register.log >&2; exit 1; fi
      sleep 0.2
    done
    (cd /opt/selfheal-model && OLLAMA_HOST=127.0.0.1:11499 ollama create "$SELFHEAL_BAKED_MODEL" -f Modelfile >/dev/null)
    kill "$pid"
    wait "$pid" || true
  fi
fi
exec ollama "$@"
