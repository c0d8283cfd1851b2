/**
 * Redis key names of the monitored pipeline (docs/ARCHITECTURE.md). Every key takes the configured prefix
 * (`REDIS_KEY_PREFIX`, default none) so one Redis can host several pipelines.
 */

/** Pipeline stages of the reference pipeline, in order. */
export const STAGES = ['extract', 'evaluate'] as const;
export type Stage = (typeof STAGES)[number];

/** Document statuses of the `documents` table. */
export const DocumentStatus = {
  queued: 'queued',
  processing: 'processing',
  completed: 'completed',
  failed: 'failed',
  dead: 'dead',
} as const;
export type DocumentStatus = (typeof DocumentStatus)[keyof typeof DocumentStatus];

export function createKeys(prefix = '') {
  return {
    prefix,
    /** List of document ids waiting for a stage. */
    queue: (stage: string) => `${prefix}queue:${stage}`,
    /** List of ids a worker has taken (reliable-queue pattern). */
    processing: (stage: string, worker: string) => `${prefix}processing:${stage}:${worker}`,
    /** Pattern matching every processing list (for SCAN). */
    processingPattern: (stage = '*') => `${prefix}processing:${stage}:*`,
    /** Per-document lease, value `<worker>:<token>`. */
    lock: (id: string | number) => `${prefix}lock:document:${id}`,
    lockPattern: () => `${prefix}lock:document:*`,
    /** Worker liveness, value epoch ms. */
    heartbeat: (worker: string) => `${prefix}worker:${worker}:heartbeat`,
    heartbeatPattern: () => `${prefix}worker:*:heartbeat`,
    /** Stream of monitoring snapshots. */
    metricsStream: () => `${prefix}monitoring:metrics`,
    /**
     * Hash anomaly fingerprint -> epoch ms of the snapshot in which a healing's recheck last found it gone: a cycle
     * that sees it again after that fires it again (`refiredAfterGone`), though it never cleared.
     */
    monitoringGone: () => `${prefix}monitoring:gone`,
    /** Stream of detected anomalies. */
    alertsStream: () => `${prefix}monitoring:alerts`,
    /** Hash of faults injected by `selfheal chaos` that the reference pipeline's workers obey. */
    pipelineFaults: () => `${prefix}pipeline:faults`,
    /** Hash worker id -> JSON registration of the reference pipeline's workers (how to reach and kill them). */
    pipelineWorkers: () => `${prefix}pipeline:workers`,
    /**
     * Hash container name -> JSON `{at, how}`: containers stopped on purpose, as the Docker event stream told the
     * actions worker (a `stop`, or a kill with SIGTERM or SIGINT); the container's next `start`, or its removal,
     * removes it. That worker keeps a copy in memory (activities/docker-stops.ts).
     */
    dockerStops: () => `${prefix}selfheal:docker:stopped`,
    /** Hash container name -> Docker's `RestartCount` as the last inspection saw it. */
    dockerRestartCounts: () => `${prefix}selfheal:docker:restart-counts`,
    /**
     * Sorted set of the restarts Docker's restart policy made of a container (its `RestartCount` grew), scored by
     * the epoch ms of the inspection that saw them: crash loops count them beside selfheal's own restarts.
     */
    dockerRestarts: (container: string) => `${prefix}selfheal:docker:restarts:${container}`,
  };
}
export type Keys = ReturnType<typeof createKeys>;

/** Lock values are `<worker>:<token>`; worker ids never contain ':'. */
export function parseLockValue(value: string): { worker: string; token: string } | undefined {
  const i = value.indexOf(':');
  if (i <= 0 || i === value.length - 1) return undefined;
  return { worker: value.slice(0, i), token: value.slice(i + 1) };
}
