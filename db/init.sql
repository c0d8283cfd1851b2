-- selfheal schema. Idempotent: applied by `selfheal migrate` and `selfheal up` on every start.

-- The monitored pipeline's documents (DESIGN.md §3). A real pipeline with another schema exposes this shape as a view.
CREATE TABLE IF NOT EXISTS documents (
  id             bigserial PRIMARY KEY,
  stage          text        NOT NULL,
  status         text        NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'dead')),
  worker_id      text        NULL,
  attempts       integer     NOT NULL DEFAULT 0,
  requeue_count  integer     NOT NULL DEFAULT 0,
  error          text        NULL,
  payload        jsonb       NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  started_at     timestamptz NULL,
  completed_at   timestamptz NULL,
  processing_ms  integer     NULL
);

-- Stuck-document query: only the (few) processing rows are indexed, so it costs the same at 10M rows as at 10k.
CREATE INDEX IF NOT EXISTS documents_processing_updated_at
  ON documents (updated_at) WHERE status = 'processing';
-- Lost-document candidates: queued rows, oldest first.
CREATE INDEX IF NOT EXISTS documents_queued_updated_at
  ON documents (updated_at) WHERE status = 'queued';
-- Per-stage counts, capped, in index order (the updated_at column makes the capped count an index range the planner
-- cannot trade for a sequential scan); it replaces the former (stage, status) index.
CREATE INDEX IF NOT EXISTS documents_stage_status_updated_at ON documents (stage, status, updated_at);
DROP INDEX IF EXISTS documents_stage_status;
CREATE INDEX IF NOT EXISTS documents_completed_at ON documents (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS documents_status_updated_at ON documents (status, updated_at);

-- One row per processing outcome of a stage (the documents row only keeps the last one): error rates and
-- processing-time baselines per stage are computed from it over a window.
CREATE TABLE IF NOT EXISTS document_events (
  id            bigserial   PRIMARY KEY,
  document_id   bigint      NOT NULL,
  stage         text        NOT NULL,
  worker_id     text        NOT NULL,
  outcome       text        NOT NULL CHECK (outcome IN ('completed', 'failed')),
  processing_ms integer     NOT NULL,
  error         text        NULL,
  at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS document_events_stage_at ON document_events (stage, at);
CREATE INDEX IF NOT EXISTS document_events_document ON document_events (document_id);

-- Append-only audit of every healing step (DESIGN.md §8).
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

-- The error-rate window reads recent events across stages.
CREATE INDEX IF NOT EXISTS document_events_at ON document_events (at);

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
