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
