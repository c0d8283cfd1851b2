import type pg from 'pg';
import { WORKER_WINDOW_CAP, type Snapshot, type StageMetrics, type WorkerWindow } from '../../core/snapshot';
import type { MetricsDeps } from './shared';

/** Caps of what a snapshot carries (counts stay exact). */
export const PROCESSING_CAP = 500;
/** Rows of one stage and status counted exactly; above it, the planner's estimate (see readPostgres). */
export const COUNT_CAP = 10_000;

/** Where a snapshot's outcomes come from: the event table when the watched database has one, else `documents`. */
export type OutcomeSource = NonNullable<Snapshot['outcomes']>;

/** ms before the presence of `document_events` is checked again (it may be created or dropped while we run). */
export const OUTCOME_SOURCE_RECHECK_MS = 5 * 60_000;
const outcomeSources = new WeakMap<pg.Pool, { source: OutcomeSource; checkedAt: number }>();

/**
 * `document_events` or `documents`, probed once per pool (a connection string, so one database and search_path) and
 * again every OUTCOME_SOURCE_RECHECK_MS, or at once after a query found the table gone.
 */
async function outcomeSource(pool: pg.Pool, now: number): Promise<OutcomeSource> {
  const cached = outcomeSources.get(pool);
  if (cached && now - cached.checkedAt < OUTCOME_SOURCE_RECHECK_MS) return cached.source;
  const { rows } = await pool.query<{ present: boolean }>(
    `SELECT to_regclass('document_events') IS NOT NULL AS present`,
  );
  const source: OutcomeSource = rows[0]?.present ? 'document_events' : 'documents';
  outcomeSources.set(pool, { source, checkedAt: now });
  return source;
}

/** undefined_table: `document_events` went away since the probe. */
const isUndefinedTable = (err: unknown) => (err as { code?: string }).code === '42P01';

export interface PostgresPart {
  outcomes: OutcomeSource;
  counts: Map<string, StageMetrics['counts']>;
  window: Map<string, StageWindow>;
  lastProgress: Map<string, number | null>;
  processing: Snapshot['processing'];
  processingTotal: number;
}

/**
 * The SQL of one snapshot, every statement bounded whatever the table's size (exported so that the benchmark can run
 * the same statements directly as the cycle's floor). `outcomes` picks where error rates, processing times and
 * progress come from; the other statements read only the contract's columns of `documents`.
 */
export function snapshotQueries(
  stages: string[],
  windowSeconds: number,
  outcomes: OutcomeSource = 'document_events',
  progressLookbackSeconds?: number,
) {
  const fromEvents = outcomes === 'document_events';
  return {
    // Exact counts of the non-terminal and failure statuses up to COUNT_CAP each: a range of the (stage, status,
    // updated_at) index that stops at the cap (the ORDER BY keeps the planner on it). Counting every queued row of a
    // 100,000-deep backlog took 35 ms a cycle at 1M documents.
    counts: {
      text: `SELECT s.stage, st.status,
                    (SELECT count(*)::int FROM (SELECT 1 FROM documents d
                                                 WHERE d.stage = s.stage AND d.status = st.status
                                                 ORDER BY d.updated_at LIMIT $2) x) AS n
               FROM unnest($1::text[]) AS s(stage)
              CROSS JOIN unnest(ARRAY['queued', 'processing', 'failed', 'dead']) AS st(status)`,
      values: [stages, COUNT_CAP + 1],
    },
    // Completed rows grow without bound: the planner's estimate per stage, not a scan.
    completedEstimates: stages.map((stage) => estimateQuery(stage, 'completed')),
    // By stage and worker: the same index range as the stage totals, which are the sums.
    window: fromEvents
      ? {
          text: `SELECT stage, worker_id,
                    count(*) FILTER (WHERE outcome = 'completed')::int AS completed,
                    count(*) FILTER (WHERE outcome = 'failed')::int AS failed,
                    avg(processing_ms) FILTER (WHERE outcome = 'completed')::float8 AS mean_ms
               FROM document_events WHERE at > now() - make_interval(secs => $1) GROUP BY stage, worker_id`,
          values: [windowSeconds],
        }
      : {
          // The last outcome of each document, as `documents` keeps it: completions by completed_at, failures by
          // updated_at, both in the window; worker_id as the pipeline left it (null rows count in the stage only).
          // Two ranges, each served by an index on its time column when the pipeline has one.
          text: `SELECT stage, worker_id,
                    count(*) FILTER (WHERE outcome = 'completed')::int AS completed,
                    count(*) FILTER (WHERE outcome = 'failed')::int AS failed,
                    avg(processing_ms) FILTER (WHERE outcome = 'completed')::float8 AS mean_ms,
                    count(processing_ms) FILTER (WHERE outcome = 'completed')::int AS timed
               FROM (SELECT stage, worker_id, 'completed' AS outcome, processing_ms FROM documents
                      WHERE status = 'completed' AND completed_at > now() - make_interval(secs => $1)
                     UNION ALL
                     SELECT stage, worker_id, 'failed', NULL FROM documents
                      WHERE status = 'failed' AND updated_at > now() - make_interval(secs => $1)) o
              GROUP BY stage, worker_id`,
          values: [windowSeconds],
        },
    progress: fromEvents
      ? {
          text: `SELECT s.stage,
                    (SELECT max(e.at) FROM document_events e WHERE e.stage = s.stage) AS last_event,
                    (SELECT max(d.started_at) FROM documents d
                      WHERE d.status = 'processing' AND d.stage = s.stage) AS last_start
               FROM unnest($1::text[]) AS s(stage)`,
          values: [stages],
        }
      : {
          // A stage's last completion or failure (within the look-back) and its newest start of work in progress.
          text: `SELECT s.stage,
                    GREATEST(
                      (SELECT max(d.completed_at) FROM documents d
                        WHERE d.status = 'completed' AND d.stage = s.stage
                          AND ($2::float8 IS NULL OR d.completed_at > now() - make_interval(secs => $2))),
                      (SELECT max(d.updated_at) FROM documents d
                        WHERE d.status = 'failed' AND d.stage = s.stage
                          AND ($2::float8 IS NULL OR d.updated_at > now() - make_interval(secs => $2)))) AS last_event,
                    (SELECT max(d.started_at) FROM documents d
                      WHERE d.status = 'processing' AND d.stage = s.stage) AS last_start
               FROM unnest($1::text[]) AS s(stage)`,
          values: [stages, progressLookbackSeconds ?? null],
        },
    // With the total of the same statement: the list is complete exactly when it holds `total` rows. (The total from
    // the counts above, read at the same time on another connection, could differ from the list by the documents
    // taken in between, and a complete list then looked capped: a hung worker looked as if it held one.)
    processing: {
      text: `SELECT id, stage, worker_id, started_at, updated_at, count(*) OVER ()::int AS total FROM documents
              WHERE status = 'processing' ORDER BY updated_at LIMIT $1`,
      values: [PROCESSING_CAP],
    },
  };
}

const estimateQuery = (stage: string, status: string) => ({
  text: 'EXPLAIN (FORMAT JSON) SELECT 1 FROM documents WHERE stage = $1 AND status = $2',
  values: [stage, status],
});

/** Rows of a (stage, status) the planner expects: one index lookup in the statistics, no scan. */
async function plannerEstimate(pool: pg.Pool, stage: string, status: string): Promise<number> {
  const { rows } = await pool.query<{ 'QUERY PLAN': { Plan: { 'Plan Rows': number } }[] }>(
    estimateQuery(stage, status),
  );
  return Math.round(rows[0]?.['QUERY PLAN'][0]?.Plan['Plan Rows'] ?? 0);
}

export async function readPostgres(deps: MetricsDeps, now: number): Promise<PostgresPart> {
  try {
    return await readPostgresFrom(deps, await outcomeSource(deps.pool, now));
  } catch (err) {
    // The event table was dropped since the probe: probe again now, not in five minutes.
    if (!isUndefinedTable(err) || outcomeSources.get(deps.pool)?.source !== 'document_events') throw err;
    outcomeSources.delete(deps.pool);
    return readPostgresFrom(deps, await outcomeSource(deps.pool, now));
  }
}

async function readPostgresFrom(deps: MetricsDeps, outcomes: OutcomeSource): Promise<PostgresPart> {
  const { pool, stages, windowSeconds } = deps;
  const q = snapshotQueries(stages, windowSeconds, outcomes, deps.progressLookbackSeconds);
  const [live, estimates, window, progress, processing] = await Promise.all([
    pool.query<{ stage: string; status: string; n: number }>(q.counts),
    Promise.all(stages.map(async (stage) => [stage, await plannerEstimate(pool, stage, 'completed')] as const)),
    pool.query<WindowRow>(q.window),
    pool.query<{ stage: string; last_event: Date | null; last_start: Date | null }>(q.progress),
    pool.query<{
      id: number;
      stage: string;
      worker_id: string | null;
      started_at: Date | null;
      updated_at: Date;
      total: number;
    }>(q.processing),
  ]);
  const counts = new Map<string, StageMetrics['counts']>();
  const blank = () => ({ queued: 0, processing: 0, completed: 0, failed: 0, dead: 0 });
  for (const [stage, n] of estimates) counts.set(stage, { ...blank(), completed: n });
  // Past the cap, the planner's estimate (never below the cap: a stale estimate must not hide a backlog).
  const liveCounts = await Promise.all(
    live.rows.map(async (r) =>
      r.n > COUNT_CAP ? { ...r, n: Math.max(COUNT_CAP + 1, await plannerEstimate(pool, r.stage, r.status)) } : r,
    ),
  );
  for (const r of liveCounts) {
    const c = counts.get(r.stage) ?? blank();
    c[r.status as keyof StageMetrics['counts']] = r.n;
    counts.set(r.stage, c);
  }
  return {
    outcomes,
    counts,
    window: stageWindows(window.rows),
    lastProgress: new Map(
      progress.rows.map((r) => {
        const times = [r.last_event, r.last_start].filter((d): d is Date => d !== null).map((d) => d.getTime());
        return [r.stage, times.length ? Math.max(...times) : null];
      }),
    ),
    processing: processing.rows.map((r) => ({
      id: r.id,
      stage: r.stage,
      workerId: r.worker_id,
      startedAt: r.started_at?.getTime() ?? null,
      updatedAt: r.updated_at.getTime(),
    })),
    processingTotal: processing.rows[0]?.total ?? 0,
  };
}

interface StageWindow {
  completed: number;
  failed: number;
  meanMs: number | null;
  /** Completions the mean is over (those with a processing time). */
  samples: number;
  workers: WorkerWindow[];
}

interface WindowRow {
  stage: string;
  /** null only from `documents` (a pipeline that clears worker_id): counted in the stage, listed under no worker. */
  worker_id: string | null;
  completed: number;
  failed: number;
  mean_ms: number | null;
  /** Completions with a processing time (from `documents`, where processing_ms may be null); default completed. */
  timed?: number;
}

/** Stage totals (the mean weighted by timed completions) and the per-worker rows, busiest first, capped. */
function stageWindows(rows: WindowRow[]): Map<string, StageWindow> {
  const out = new Map<string, StageWindow & { totalMs: number; timed: number }>();
  for (const r of rows) {
    const w = out.get(r.stage) ?? {
      completed: 0,
      failed: 0,
      meanMs: null,
      samples: 0,
      workers: [],
      totalMs: 0,
      timed: 0,
    };
    const timed = r.timed ?? r.completed;
    w.completed += r.completed;
    w.failed += r.failed;
    w.timed += timed;
    if (r.mean_ms !== null) w.totalMs += r.mean_ms * timed;
    if (r.worker_id !== null) {
      w.workers.push({ worker: r.worker_id, completed: r.completed, failed: r.failed, meanMs: r.mean_ms });
    }
    out.set(r.stage, w);
  }
  for (const w of out.values()) {
    w.meanMs = w.timed > 0 ? w.totalMs / w.timed : null;
    w.samples = w.timed;
    w.workers.sort((a, b) => b.completed + b.failed - (a.completed + a.failed) || a.worker.localeCompare(b.worker));
    w.workers = w.workers.slice(0, WORKER_WINDOW_CAP);
  }
  return new Map([...out].map(([stage, { totalMs: _t, timed: _n, ...w }]) => [stage, w]));
}
