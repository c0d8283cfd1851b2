#!/bin/sh
# One-shot job of docker-compose.yml (service temporal-setup, image temporalio/admin-tools), run once the server is
# healthy: creates the namespace selfheal uses and registers the custom search attributes of
# workflows/definitions.ts (SearchAttr), as `selfheal up` does for the dev server (starter/temporal-local.ts).
# Idempotent: an existing namespace is kept as it is, existing attributes are left alone, and an attribute that
# exists with another type stops the job with a message (the workers would fail on it later, less clearly).
set -eu

ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
RETENTION=${TEMPORAL_NAMESPACE_RETENTION:-168h}
# name=type, one per search attribute; tests/unit/compose.test.ts checks this list against SearchAttr.
SEARCH_ATTRIBUTES="AnomalyType=Keyword HealTarget=Keyword HealPhase=Keyword HealAction=Keyword Severity=Keyword HealConfidence=Double"
MAX_ATTEMPTS=${SETUP_MAX_ATTEMPTS:-60}

t() {
  temporal --address "$ADDRESS" "$@"
}

retry() { # retry WHAT: counts attempts in $attempt, gives up after MAX_ATTEMPTS
  if [ "$attempt" -ge "$MAX_ATTEMPTS" ]; then
    echo "setup-namespace: $1 still failing after $MAX_ATTEMPTS attempts" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 2
}

attempt=1
until t operator cluster health >/dev/null 2>&1; do retry "cluster health at $ADDRESS"; done
echo "setup-namespace: Temporal at $ADDRESS is healthy"

attempt=1
until t operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; do
  if t operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"; then
    echo "setup-namespace: created namespace $NAMESPACE (retention $RETENTION)"
  fi
  retry "namespace $NAMESPACE"
done
echo "setup-namespace: namespace $NAMESPACE exists"

for pair in $SEARCH_ATTRIBUTES; do
  name=${pair%%=*}
  type=${pair#*=}
  attempt=1
  while :; do
    # A new namespace takes a few seconds to reach every frontend cache: list and add are retried until then.
    if existing=$(t operator search-attribute list --namespace "$NAMESPACE" --output json 2>/dev/null | tr -d ' \t\r\n'); then
      # The JSON is the ListSearchAttributes response: {"customAttributes":{"Name":"INDEXED_VALUE_TYPE_KEYWORD",...}}
      if echo "$existing" | grep -q "\"$name\":\""; then
        if echo "$existing" | grep -qiE "\"$name\":\"(INDEXED_VALUE_TYPE_)?$type\""; then
          echo "setup-namespace: search attribute $name ($type) exists"
          break
        fi
        echo "setup-namespace: search attribute $name exists with another type; selfheal needs $type" >&2
        exit 1
      fi
      if t operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type "$type"; then
        echo "setup-namespace: registered search attribute $name ($type)"
        break
      fi
    fi
    retry "search attribute $name"
  done
done
