#!/bin/sh
# Runs once, when the postgres service initializes an empty data volume (/docker-entrypoint-initdb.d): one role per
# component, each with its own password from the compose environment. Later password changes are made with
# ALTER ROLE, not here (this script never runs again on an initialized volume).
#   temporal  may create databases: temporal/setup-schema.sh creates temporal and temporal_visibility;
#   selfheal  owns the selfheal database (documents, healing_log, ...), whose schema `selfheal migrate` applies.
set -eu
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD is required}"
: "${SELFHEAL_DB_PASSWORD:?SELFHEAL_DB_PASSWORD is required}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_password="$TEMPORAL_DB_PASSWORD" -v selfheal_password="$SELFHEAL_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE ROLE selfheal LOGIN PASSWORD :'selfheal_password';
CREATE DATABASE selfheal OWNER selfheal;
REVOKE ALL ON DATABASE selfheal FROM PUBLIC;
SQL
