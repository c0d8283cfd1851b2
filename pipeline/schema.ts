/**
 * The reference pipeline's own tables: `documents` (docs/ARCHITECTURE.md's pipeline contract, plus the reference's `payload` and its indexes) and
 * `document_events` (one row per processing outcome). The pipeline creates them itself, on its setup path (`selfheal
 * up` and `demo` before starting it, each worker script on start, the test environments): selfheal's `migrate` never
 * creates or alters a table of the pipeline it watches. A real pipeline brings its own `documents` table (or a view of
 * that shape); `document_events` and these indexes are optional there (see activities/metrics.ts).
 *
 * The SQL is a string here, not a file, so that the worker bundled into the pipeline image carries it.
 */
import type pg from 'pg';
import { applySchema } from '../db/migrate';

export const PIPELINE_SCHEMA_SQL = `
-- The monitored pipeline's documents (the pipeline contract of docs/ARCHITECTURE.md). A real pipeline with another schema exposes this shape as a view.
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
-- The error-rate window reads recent events across stages.
CREATE INDEX IF NOT EXISTS document_events_at ON document_events (at);
`;

/** Every relation the schema creates: when all exist (and the obsolete index is gone), nothing is run. */
const PIPELINE_RELATIONS = [
  'documents',
  'documents_processing_updated_at',
  'documents_queued_updated_at',
  'documents_stage_status_updated_at',
  'documents_completed_at',
  'documents_status_updated_at',
  'document_events',
  'document_events_stage_at',
  'document_events_document',
  'document_events_at',
];

/**
 * Creates the reference pipeline's tables and indexes where they are missing (idempotent, serialized with the other
 * schema changes by an advisory lock). When everything exists already it only reads the catalog: a worker starting
 * next to busy peers takes no table lock (CREATE INDEX IF NOT EXISTS would take a SHARE lock on `documents` first).
 */
export async function ensurePipelineSchema(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{ missing: number }>(
    `SELECT count(*) FILTER (WHERE to_regclass(n) IS NULL)::int
            + (to_regclass('documents_stage_status') IS NOT NULL)::int AS missing
       FROM unnest($1::text[]) AS n`,
    [PIPELINE_RELATIONS],
  );
  if (rows[0]?.missing === 0) return;
  await applySchema(pool, PIPELINE_SCHEMA_SQL);
}
