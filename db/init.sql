-- selfheal's own schema, and nothing else. Idempotent: applied by `selfheal migrate` and `selfheal up` on every start,
-- to SELFHEAL_DATABASE_URL (default DATABASE_URL). It never creates or alters a table of the watched pipeline: the
-- reference pipeline's tables (`documents`, `document_events`) are created by the pipeline itself (pipeline/schema.ts).

-- Append-only audit of every healing step (docs/ARCHITECTURE.md).
CREATE TABLE IF NOT EXISTS healing_log (
  id               bigserial   PRIMARY KEY,
  workflow_id      text        NOT NULL,
  run_id           text        NOT NULL,
  step             text        NOT NULL,
  anomaly_type     text        NOT NULL,
  target           text        NOT NULL,
  action           text        NULL,
  params           jsonb       NOT NULL DEFAULT '{}'::jsonb,
  decided_by       text        NULL,
  confidence       double precision NULL CHECK (confidence IS NULL OR (confidence >= 0 AND confidence <= 1)),
  outcome          text        NULL,
  error            text        NULL,
  idempotency_key  text        NULL,
  -- Temporal activity id of the write: a retried audit activity writes its row once.
  activity_id      text        NULL,
  created_at       timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE healing_log ADD COLUMN IF NOT EXISTS activity_id text NULL;
CREATE UNIQUE INDEX IF NOT EXISTS healing_log_run_activity ON healing_log (run_id, activity_id);
-- An executed action is recorded once, whatever the retries.
CREATE UNIQUE INDEX IF NOT EXISTS healing_log_executed_idempotency
  ON healing_log (idempotency_key) WHERE step = 'executed' AND idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS healing_log_workflow ON healing_log (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS healing_log_created_at ON healing_log (created_at);
CREATE INDEX IF NOT EXISTS healing_log_target ON healing_log (target, action, created_at);

-- The audit is append-only in the database itself, whoever connects.
CREATE OR REPLACE FUNCTION healing_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'healing_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER IF EXISTS healing_log_append_only ON healing_log;
CREATE TRIGGER healing_log_append_only
  BEFORE UPDATE OR DELETE ON healing_log
  FOR EACH ROW EXECUTE FUNCTION healing_log_refuse_change();
DROP TRIGGER IF EXISTS healing_log_no_truncate ON healing_log;
CREATE TRIGGER healing_log_no_truncate
  BEFORE TRUNCATE ON healing_log
  FOR EACH STATEMENT EXECUTE FUNCTION healing_log_refuse_change();

-- Safety state: one row per permit of the global action budget (MAX_ACTIONS_PER_HOUR), reserved atomically before
-- an action runs. Times are the workflow's clock (epoch ms), so durable timers and the budget agree, also in the
-- time-skipping test environment. Restart rows also give the cooldown, the circuit breaker and restarts in flight.
CREATE TABLE IF NOT EXISTS action_permits (
  id               bigserial PRIMARY KEY,
  idempotency_key  text   NOT NULL UNIQUE,
  workflow_id      text   NOT NULL,
  action           text   NOT NULL,
  target           text   NOT NULL,
  stage            text   NULL,
  reserved_at_ms   bigint NOT NULL,
  finished_at_ms   bigint NULL,
  outcome          text   NULL
);
CREATE INDEX IF NOT EXISTS action_permits_reserved ON action_permits (reserved_at_ms);
CREATE INDEX IF NOT EXISTS action_permits_target ON action_permits (action, target, reserved_at_ms);

-- Silences (maintenance windows): while one matches an anomaly (its type, or any; its target by glob, or any) and
-- now is in [starts_at, ends_at), the anomaly is still detected and shown but no action runs; a healing waits.
-- A silence is never deleted: `silence remove` marks removed_at/removed_by, and every add and remove is also written
-- to the append-only silence_log (who, why, when).
CREATE TABLE IF NOT EXISTS silences (
  id            bigserial   PRIMARY KEY,
  anomaly_type  text        NULL,
  target_glob   text        NULL,
  starts_at     timestamptz NOT NULL DEFAULT now(),
  ends_at       timestamptz NOT NULL,
  reason        text        NOT NULL CHECK (btrim(reason) <> ''),
  created_by    text        NOT NULL CHECK (btrim(created_by) <> ''),
  created_at    timestamptz NOT NULL DEFAULT now(),
  removed_at    timestamptz NULL,
  removed_by    text        NULL,
  CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS silences_open ON silences (ends_at) WHERE removed_at IS NULL;

CREATE TABLE IF NOT EXISTS silence_log (
  id          bigserial   PRIMARY KEY,
  silence_id  bigint      NOT NULL,
  event       text        NOT NULL CHECK (event IN ('added', 'removed')),
  actor       text        NOT NULL,
  reason      text        NULL,
  details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS silence_log_silence ON silence_log (silence_id, id);

CREATE OR REPLACE FUNCTION silence_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'silence_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER IF EXISTS silence_log_append_only ON silence_log;
CREATE TRIGGER silence_log_append_only
  BEFORE UPDATE OR DELETE ON silence_log
  FOR EACH ROW EXECUTE FUNCTION silence_log_refuse_change();
DROP TRIGGER IF EXISTS silence_log_no_truncate ON silence_log;
CREATE TRIGGER silence_log_no_truncate
  BEFORE TRUNCATE ON silence_log
  FOR EACH STATEMENT EXECUTE FUNCTION silence_log_refuse_change();
