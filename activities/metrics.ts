/**
 * collectMetrics: one snapshot of the pipeline. Each source is read independently and bounded in time; a source
 * that fails is marked in `sources` and the cycle goes on with what the others gave.
 *
 * Cost stays flat as the pipeline grows: Redis lengths come in one pipelined round trip, locks and heartbeats are
 * read with SCAN (never KEYS), and Postgres answers a fixed number of queries served by partial or range indexes
 * whose cost follows the live backlog (queued, processing, the error-rate window), not the table size.
 *
 * Postgres needs only the contract's `documents` table (docs/ARCHITECTURE.md). Outcomes (error rates, processing times,
 * progress) come from `document_events` when the watched database has it (the reference pipeline does), else from
 * `documents` itself: failed = `status = 'failed'` updated in the window, completed = `status = 'completed'` with
 * `completed_at` in the window, processing time = their `processing_ms`. The snapshot says which (`outcomes`).
 */
import type { Reconciliation, Snapshot, SourceStatus, StageMetrics } from '../core/snapshot';
import { checkHealthTargets, checkOllama } from './metrics/http';
import { readPostgres } from './metrics/postgres';
import { readRedis } from './metrics/redis';
import { errorLine, type MetricsDeps } from './metrics/shared';
import { reconcile } from './reconcile';

export {
  COUNT_CAP,
  OUTCOME_SOURCE_RECHECK_MS,
  PROCESSING_CAP,
  snapshotQueries,
  type OutcomeSource,
} from './metrics/postgres';
export { scanAll, STALE_LOCK_CAP } from './metrics/redis';
export type { MetricsDeps } from './metrics/shared';

const SOURCE_TIMEOUT_MS = 5_000;

function bounded<T>(p: Promise<T>, ms = SOURCE_TIMEOUT_MS): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref()),
  ]);
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
