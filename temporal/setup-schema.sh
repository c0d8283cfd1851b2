#!/bin/sh
# One-shot job of docker-compose.yml (service temporal-schema, image temporalio/admin-tools of the server's version).
# Creates the temporal and temporal_visibility databases and schemas on the first start, and upgrades them to the
# image's schema version on every later start (a new server version comes with its admin-tools of the same version).
# Safe to run any number of times: setup-schema -v 0.0 leaves an existing schema alone and update-schema applies only
# the versions not yet applied.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}" # read by temporal-sql-tool itself
PORT=${DB_PORT:-5432}
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" "$@"
}

attempt=1
until nc -z -w 5 "$POSTGRES_SEEDS" "$PORT"; do
  if [ "$attempt" -ge 30 ]; then
    echo "setup-schema: Postgres at $POSTGRES_SEEDS:$PORT does not answer" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 2
done

for pair in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
  db=${pair%%:*}
  dir=${pair#*:}
  # `create` fails when the database already exists, which is every start after the first; a real problem
  # (credentials, network) fails setup-schema right below, with its own error.
  if sql --db "$db" create; then
    echo "setup-schema: created database $db"
  else
    echo "setup-schema: database $db not created (it exists, or see the error above)"
  fi
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$SCHEMA_DIR/$dir/versioned"
  echo "setup-schema: $db is at the schema version of this admin-tools image"
done
