/**
 * One monitoring cycle's view of the pipeline, as collected by `collectMetrics` and read by the detectors.
 * Plain JSON: times are epoch ms. Lists of ids are capped by the collector; counts are exact.
 */
import type { DockerHealth, HealthCheckResult } from './container-scope';
import type { StoppedOnPurpose } from './docker-events';
import type { DocumentStatus } from './keys';
import type { Anomaly } from './types';

export const Source = {
  redis: 'redis',
  postgres: 'postgres',
  health: 'health',
  docker: 'docker',
  ollama: 'ollama',
} as const;
export type Source = (typeof Source)[keyof typeof Source];

export interface SourceStatus {
  ok: boolean;
  /** First line of the error when not ok. */
  error?: string;
}

export interface StageMetrics {
  stage: string;
  /** Length of `queue:<stage>`. */
  queueDepth: number;
  /** Sum of the lengths of every `processing:<stage>:<worker>` list. */
  processingDepth: number;
  /** Documents currently in this stage, by status. */
  counts: Record<DocumentStatus, number>;
  /** Outcomes in the error-rate window. */
  windowCompleted: number;
  windowFailed: number;
  /** Mean processing time of completions in the window, ms; null without samples. */
  recentMeanMs: number | null;
  recentSamples: number;
  /** Last time a document of this stage was taken or finished (epoch ms); null if never. */
  lastProgressAt: number | null;
  /**
   * The same window by worker (`worker_id` of the outcomes), busiest first, at most WORKER_WINDOW_CAP: what tells
   * one bad worker apart from a stage-wide cause. Absent in snapshots recorded before it existed.
   */
  workers?: WorkerWindow[];
}

/** One worker's outcomes in the error-rate window of a stage. */
export interface WorkerWindow {
  worker: string;
  completed: number;
  failed: number;
  /** Mean processing time of its completions in the window, ms; null without completions. */
  meanMs: number | null;
}

/** Workers listed per stage in a snapshot. */
export const WORKER_WINDOW_CAP = 50;

export interface ProcessingDocument {
  id: number;
  stage: string;
  workerId: string | null;
  /** epoch ms */
  startedAt: number | null;
  /** epoch ms */
  updatedAt: number;
}

export interface LockInfo {
  documentId: string;
  owner: string;
  token: string;
}

/** A health check passes on any 2xx answer (200 OK, 204 No Content...); anything else, or no answer, fails it. */
export function isHealthyStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 200 && status <= 299;
}

export interface HealthResult {
  container: string;
  url: string;
  ok: boolean;
  status?: number;
  error?: string;
  latencyMs: number;
}

export interface ContainerState {
  name: string;
  /** Docker's id, when inspected (absent in records from before it was kept). */
  id?: string;
  /** Docker's state: running, exited, restarting, paused, dead, created. */
  state: string;
  running: boolean;
  restartCount: number;
  /** epoch ms of the last start, when known. */
  startedAt?: number;
  /** Pipeline stage the container serves (label `selfheal.stage`), when labelled. */
  stage?: string;
  /** Docker's health status when the container declares a HEALTHCHECK (`starting` is not unhealthy). */
  health?: DockerHealth;
  /** While unhealthy: the last health-check results, redacted and truncated. */
  healthLog?: HealthCheckResult[];
  /** The label that puts it in scope for restart (`selfheal.enable=true`, `autoheal=true`), if any. */
  scopeLabel?: string;
  /** Its compose service, `<project>/<service>`: the replicas the last-healthy-worker rule counts among. */
  service?: string;
  /** When not running: how it ended (`State.ExitCode`, `State.OOMKilled`). */
  exitCode?: number;
  oomKilled?: boolean;
  /** Stopped on purpose, as Docker's event stream told (a `stop`, a kill with SIGTERM/SIGINT), until it starts. */
  stopped?: StoppedOnPurpose;
}

/** Whether a container works, as far as Docker knows: running and not reported unhealthy by its HEALTHCHECK. */
export function containerWorking(c: Pick<ContainerState, 'running' | 'health'>): boolean {
  return c.running && c.health !== 'unhealthy';
}

export interface Snapshot {
  /** epoch ms when collection started. */
  at: number;
  durationMs: number;
  sources: Record<Source, SourceStatus>;
  stages: StageMetrics[];
  /**
   * Where the window's outcomes, processing times and progress were read: `document_events` when the watched
   * database has that table, else `documents` alone (its last outcome per document). Absent when Postgres did not
   * answer, or in snapshots recorded before it existed.
   */
  outcomes?: 'document_events' | 'documents';
  /** Processing documents, oldest first, capped; `processingTotal` is the exact count. */
  processing: ProcessingDocument[];
  processingTotal: number;
  /** Locks whose owner has no heartbeat, capped; `locksTotal` counts every lock seen. */
  staleLocks: LockInfo[];
  staleLockTotal: number;
  locksTotal: number;
  /** Worker ids with a live heartbeat. */
  liveWorkers: string[];
  health: HealthResult[];
  containers: ContainerState[];
  ollama: { reachable: boolean; modelPresent: boolean; error?: string };
  /**
   * Postgres reconciled with the Redis lists (lost documents, orphan entries); absent when Redis or Postgres did not
   * answer, or in snapshots recorded before it existed.
   */
  reconcile?: Reconciliation;
}

/** A document `queued` past LOST_DOCUMENT_THRESHOLD that is in no queue and no processing list. */
export interface LostDocument {
  id: number;
  stage: string;
  /** epoch ms of its last update (when it became queued). */
  queuedSince: number;
}

/** A queue entry whose document is completed, dead or missing, or an id present more than once in a queue. */
export interface OrphanEntry {
  /** The stage whose queue holds it. */
  queue: string;
  id: string;
  /** Occurrences seen in the examined part of the queue. */
  count: number;
  reason: 'completed' | 'dead' | 'missing' | 'duplicate';
}

export interface Reconciliation {
  /** Lost documents among the candidates, oldest first. */
  lost: LostDocument[];
  /** Candidates examined (queued past the threshold, oldest first, capped). */
  lostCandidates: number;
  orphans: OrphanEntry[];
  /** Queue entries examined (the next ones to be consumed, per queue). */
  entriesChecked: number;
  /** Why reconciliation could not run this cycle. */
  error?: string;
}

/** One entry of the `monitoring:metrics` stream: the snapshot and what the detectors made of it. */
export interface CycleRecord {
  snapshot: Snapshot;
  /** Anomalies seen in this cycle before noise control. */
  candidates: Anomaly[];
  /** Anomalies open after noise control (fired and not yet cleared). */
  active: Anomaly[];
  /** Whole cycle up to detection, ms (collection, Docker inspection, history read). */
  cycleMs?: number;
}

/** What Docker told about the containers (the actions worker's `inspectContainers`). */
export interface ContainersView {
  ok: boolean;
  error?: string;
  containers: ContainerState[];
}

/** The snapshot with Docker's view of the containers in it, and Docker as one of its sources. */
export function withContainers(snapshot: Snapshot, docker: ContainersView): Snapshot {
  return {
    ...snapshot,
    containers: docker.containers,
    sources: { ...snapshot.sources, docker: docker.ok ? { ok: true } : { ok: false, error: docker.error } },
  };
}
