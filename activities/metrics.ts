/**
 * collectMetrics: one snapshot of the pipeline. Each source is read independently and bounded in time; a source
 * that fails is marked in `sources` and the cycle goes on with what the others gave.
 *
 * Cost stays flat as the pipeline grows: Redis lengths come in one pipelined round trip, locks and heartbeats are
 * read with SCAN (never KEYS), and Postgres answers a fixed number of queries served by partial or range indexes
 * whose cost follows the live backlog (queued, processing, the error-rate window), not the table size.
 *
 * Postgres needs only the contract's `documents` table (DESIGN.md §3). Outcomes (error rates, processing times,
 * progress) come from `document_events` when the watched database has it (the reference pipeline does), else from
 * `documents` itself: failed = `status = 'failed'` updated in the window, completed = `status = 'completed'` with
 * `completed_at` in the window, processing time = their `processing_ms`. The snapshot says which (`outcomes`).
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { HealthTarget } from '../core/config';
import { LOCK_EVIDENCE_CAP } from '../core/detectors';
import { parseLockValue, type Keys } from '../core/keys';
import { redactSecrets } from '../core/redact';
import { reconcile } from './reconcile';
import { withoutCredentials } from './url-credentials';
import {
  isHealthyStatus,
  WORKER_WINDOW_CAP,
  type LockInfo,
  type Reconciliation,
  type Snapshot,
  type SourceStatus,
  type StageMetrics,
  type WorkerWindow,
} from '../core/snapshot';

/** Caps of what a snapshot carries (counts stay exact). */
export const PROCESSING_CAP = 500;
/** Stale locks a snapshot carries (all owners): the detector's evidence cap, so no observed lock goes unplanned. */
export const STALE_LOCK_CAP = LOCK_EVIDENCE_CAP;
/** Rows of one stage and status counted exactly; above it, the planner's estimate (see readPostgres). */
export const COUNT_CAP = 10_000;
const SCAN_COUNT = 1000;
const SOURCE_TIMEOUT_MS = 5_000;
const HEALTH_TIMEOUT_MS = 2_000;

export interface MetricsDeps {
  redis: Redis;
  pool: pg.Pool;
  keys: Keys;
  stages: string[];
  healthTargets: HealthTarget[];
  ollamaHost: string;
  ollamaModel: string;
  /** s of the error-rate and recent-processing-time window. */
  windowSeconds: number;
  /** s a document may stay queued in no list before it is lost (LOST_DOCUMENT_THRESHOLD). */
  lostDocumentSeconds: number;
  /**
   * s back from now that the `documents` fallback looks for a stage's last progress (completions and failures; a
   * bound keeps the query cheap on a large table). Older progress reads as none, which the stall detector treats as
   * older than its threshold: give at least QUEUE_STALL_THRESHOLD. Default: no bound.
   */
  progressLookbackSeconds?: number;
  /** Reconcile Postgres with the Redis lists (lost documents, orphan entries). Default true; off for benchmarks. */
  reconcile?: boolean;
  /** The clock, injectable for tests. */
  now?: () => number;
}

/** First line of an error, credentials redacted (errors quote URLs, and URLs may carry passwords). */
function errorLine(err: unknown): string {
  return redactSecrets((err instanceof Error ? err.message : String(err)).split('\n')[0]!).slice(0, 300);
}

function bounded<T>(p: Promise<T>, ms = SOURCE_TIMEOUT_MS): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref()),
  ]);
}

/** Every key matching `pattern`, by SCAN (never KEYS, which blocks Redis on a large keyspace). */
export async function scanAll(redis: Redis, pattern: string): Promise<string[]> {
  const found = new Set<string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
    cursor = next;
    for (const k of keys) found.add(k);
  } while (cursor !== '0');
  return [...found];
}

interface RedisPart {
  processingLists: string[];
  queueDepth: Map<string, number>;
  processingDepth: Map<string, number>;
  liveWorkers: string[];
  staleLocks: LockInfo[];
  staleLockTotal: number;
  locksTotal: number;
}

async function readRedis(deps: MetricsDeps): Promise<RedisPart> {
  const { redis, keys, stages } = deps;
  const [processingLists, heartbeatKeys, lockKeys] = await Promise.all([
    scanAll(redis, keys.processingPattern()),
    scanAll(redis, keys.heartbeatPattern()),
    scanAll(redis, keys.lockPattern()),
  ]);
  // Every list length in one round trip.
  const pipe = redis.pipeline();
  for (const stage of stages) pipe.llen(keys.queue(stage));
  for (const list of processingLists) pipe.llen(list);
  const lengths = ((await pipe.exec()) ?? []).map(([err, n]) => {
    if (err) throw err;
    return Number(n);
  });
  const queueDepth = new Map(stages.map((s, i) => [s, lengths[i] ?? 0]));
  const processingDepth = new Map(stages.map((s) => [s, 0]));
  const procPrefix = keys.processing('', '').slice(0, -1); // `<prefix>processing:`
  processingLists.forEach((list, i) => {
    const stage = list.slice(procPrefix.length).split(':')[0] ?? '';
    processingDepth.set(stage, (processingDepth.get(stage) ?? 0) + (lengths[stages.length + i] ?? 0));
  });

  const hbPrefix = keys.heartbeat('').slice(0, -':heartbeat'.length); // `<prefix>worker:`
  const liveWorkers = heartbeatKeys.map((k) => k.slice(hbPrefix.length, -':heartbeat'.length)).sort();
  const live = new Set(liveWorkers);

  const staleLocks: LockInfo[] = [];
  let staleLockTotal = 0;
  const lockPrefix = keys.lock('');
  for (let i = 0; i < lockKeys.length; i += SCAN_COUNT) {
    const batch = lockKeys.slice(i, i + SCAN_COUNT);
    const values = await redis.mget(...batch);
    batch.forEach((key, j) => {
      const value = values[j];
      if (value === null || value === undefined) return; // expired between SCAN and MGET
      const parsed = parseLockValue(value);
      const owner = parsed?.worker ?? value;
      if (live.has(owner)) return;
      staleLockTotal++;
      if (staleLocks.length < STALE_LOCK_CAP) {
        staleLocks.push({ documentId: key.slice(lockPrefix.length), owner, token: parsed?.token ?? '' });
      }
    });
  }
  return {
    processingLists,
    queueDepth,
    processingDepth,
    liveWorkers,
    staleLocks,
    staleLockTotal,
    locksTotal: lockKeys.length,
  };
}

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

interface PostgresPart {
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
    processing: {
      text: `SELECT id, stage, worker_id, started_at, updated_at FROM documents
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

async function readPostgres(deps: MetricsDeps, now: number): Promise<PostgresPart> {
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
    pool.query<{ id: number; stage: string; worker_id: string | null; started_at: Date | null; updated_at: Date }>(
      q.processing,
    ),
  ]);
  const counts = new Map<string, StageMetrics['counts']>();
  const blank = () => ({ queued: 0, processing: 0, completed: 0, failed: 0, dead: 0 });
  for (const [stage, n] of estimates) counts.set(stage, { ...blank(), completed: n });
  let processingTotal = 0;
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
    if (r.status === 'processing') processingTotal += r.n;
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
    processingTotal,
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

async function checkHealthTargets(targets: HealthTarget[], now: () => number): Promise<Snapshot['health']> {
  return Promise.all(
    targets.map(async ({ container, url }) => {
      const t0 = now();
      try {
        const target = withoutCredentials(new URL(url));
        const res = await fetch(target.url, {
          headers: target.headers,
          signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS),
        });
        await res.body?.cancel();
        return {
          container,
          url: redactSecrets(url),
          ok: isHealthyStatus(res.status),
          status: res.status,
          latencyMs: now() - t0,
        };
      } catch (err) {
        return { container, url: redactSecrets(url), ok: false, error: errorLine(err), latencyMs: now() - t0 };
      }
    }),
  );
}

async function checkOllama(host: string, model: string): Promise<Snapshot['ollama']> {
  try {
    const target = withoutCredentials(new URL('/api/tags', host));
    const res = await fetch(target.url, { headers: target.headers, signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
    if (!res.ok) return { reachable: false, modelPresent: false, error: `HTTP ${res.status}` };
    const body = (await res.json()) as { models?: { name?: string; model?: string }[] };
    const names = (body.models ?? []).map((m) => m.name ?? m.model ?? '');
    const modelPresent = names.some((n) => n === model || n === `${model}:latest`);
    return { reachable: true, modelPresent };
  } catch (err) {
    return { reachable: false, modelPresent: false, error: errorLine(err) };
  }
}

/**
 * The snapshot without Docker state (the monitoring workflow asks the actions worker, the only one with Docker
 * access, for that and merges it in).
 */
export async function collectSnapshot(deps: MetricsDeps): Promise<Snapshot> {
  const now = deps.now ?? Date.now;
  const at = now();
  const settle = async <T>(p: Promise<T>): Promise<[T | undefined, SourceStatus]> => {
    try {
      return [await bounded(p), { ok: true }];
    } catch (err) {
      return [undefined, { ok: false, error: errorLine(err) }];
    }
  };
  // Reconciliation runs alongside the reads (the cycle's latency is the slowest part, not the sum) and counts
  // only when both stores answered.
  const reconciling =
    deps.reconcile !== false
      ? bounded(reconcile(deps)).then(
          (part): Reconciliation => part,
          (err: unknown): Reconciliation => ({
            lost: [],
            lostCandidates: 0,
            orphans: [],
            entriesChecked: 0,
            error: errorLine(err),
          }),
        )
      : undefined;
  const [[r, redisStatus], [p, pgStatus], health, ollama, reconciled] = await Promise.all([
    settle(readRedis(deps)),
    settle(readPostgres(deps, at)),
    checkHealthTargets(deps.healthTargets, now),
    checkOllama(deps.ollamaHost, deps.ollamaModel),
    reconciling,
  ]);
  const reconciliation = r && p ? reconciled : undefined;
  const stages: StageMetrics[] = deps.stages.map((stage) => {
    const w = p?.window.get(stage);
    return {
      stage,
      queueDepth: r?.queueDepth.get(stage) ?? 0,
      processingDepth: r?.processingDepth.get(stage) ?? 0,
      counts: p?.counts.get(stage) ?? { queued: 0, processing: 0, completed: 0, failed: 0, dead: 0 },
      windowCompleted: w?.completed ?? 0,
      windowFailed: w?.failed ?? 0,
      recentMeanMs: w?.meanMs ?? null,
      recentSamples: w?.samples ?? 0,
      lastProgressAt: p?.lastProgress.get(stage) ?? null,
      workers: w?.workers ?? [],
    };
  });
  return {
    at,
    durationMs: now() - at,
    sources: {
      redis: redisStatus,
      postgres: pgStatus,
      health: { ok: true },
      docker: { ok: true },
      ollama: ollama.reachable ? { ok: true } : { ok: false, error: ollama.error ?? 'unreachable' },
    },
    stages,
    ...(p ? { outcomes: p.outcomes } : {}),
    processing: p?.processing ?? [],
    processingTotal: p?.processingTotal ?? 0,
    staleLocks: r?.staleLocks ?? [],
    staleLockTotal: r?.staleLockTotal ?? 0,
    locksTotal: r?.locksTotal ?? 0,
    liveWorkers: r?.liveWorkers ?? [],
    health,
    containers: [],
    ollama,
    ...(reconciliation ? { reconcile: reconciliation } : {}),
  };
}

export function createMetricsActivities(deps: MetricsDeps) {
  return {
    /** One snapshot of the pipeline (Docker state is merged in by the workflow). */
    async collectMetrics(): Promise<Snapshot> {
      return collectSnapshot(deps);
    },
  };
}
