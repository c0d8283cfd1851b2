/**
 * A silently hung worker: its container runs and answers its health check (and may keep heartbeating), but its
 * consumer loop is stuck. Its stage's queue is not stalled while a peer keeps taking documents, so only a per-worker
 * view tells it from an idle worker: with a backlog in the queue all along, a working consumer always takes
 * something. Each such worker is its own `unhealthy_container` anomaly, so two hung workers are two healings. Its
 * fingerprint is the one Docker's facts and the health URL give that container, on purpose: one healing per container,
 * whichever sign came first.
 */
import { anomaly, type Thresholds } from './common';
import { containerWorking, WORKER_WINDOW_CAP, type CycleRecord, type Snapshot } from '../snapshot';
import type { Anomaly } from '../types';

/** `evidence.source` of a hung worker: its lack of progress, not its health, says it is broken. */
export const PROGRESS_SOURCE = 'progress';

/** Outcomes of `worker` in a snapshot's window of its stage (0 when it has none). */
function outcomes(snapshot: Snapshot, stage: string, worker: string): number {
  const w = snapshot.stages.find((s) => s.stage === stage)?.workers?.find((x) => x.worker === worker);
  return w ? w.completed + w.failed : 0;
}

/** Whether the snapshot can tell that `worker` held no document: its processing list is complete and has none. */
function heldNothing(snapshot: Snapshot, worker: string): boolean {
  return (
    snapshot.processing.length >= snapshot.processingTotal && !snapshot.processing.some((d) => d.workerId === worker)
  );
}

/**
 * Workers that took and finished nothing while their stage's queue held documents in every cycle of the last
 * QUEUE_STALL_THRESHOLD s and a peer of the same stage finished some. Each of those cycles saw no outcome of it in its
 * own ERROR_RATE_WINDOW, so it finished nothing for QUEUE_STALL_THRESHOLD + ERROR_RATE_WINDOW s. Only a worker whose
 * id is its container's name (a live heartbeat under that name: the reference pipeline's workers are), that runs (not
 * paused), is not reported unhealthy, started before that period (a worker still starting is not hung) and holds no
 * document (one that holds a document too long is a stuck document, another detector). Only where the outcomes are
 * read per worker from `document_events`, the workers' windows are complete (fewer than WORKER_WINDOW_CAP workers),
 * the processing list is complete, and the history has no gap longer than ERROR_RATE_WINDOW (blind cycles are left
 * out of it): anything else cannot be told apart from an idle worker, and is not reported.
 */
export function hungWorkers(
  snapshot: Snapshot,
  history: CycleRecord[],
  t: Thresholds,
  now: number,
  skip: ReadonlySet<string>,
): Anomaly[] {
  const out: Anomaly[] = [];
  if (snapshot.outcomes !== 'document_events') return out;
  const windowStart = now - t.queueStallSeconds * 1000;
  // The last record at or before the window's start, then every record up to now, each at most one outcome window
  // after the one before: together their windows cover the whole period.
  const boundary = history.findLastIndex((r) => r.snapshot.at <= windowStart);
  if (boundary < 0) return out;
  const covering = [...history.slice(boundary).map((r) => r.snapshot), snapshot];
  const gapMs = t.errorRateWindowSeconds * 1000;
  if (covering.some((s, i) => i > 0 && s.at - covering[i - 1]!.at > gapMs)) return out;
  const inWindow = covering.slice(1);
  const live = new Set(snapshot.liveWorkers);
  for (const stage of snapshot.stages) {
    const workers = stage.workers;
    if (!workers || workers.length >= WORKER_WINDOW_CAP) continue;
    // A backlog all along: every cycle of the window saw documents waiting in the stage's queue.
    const backlog = inWindow.map((s) => s.stages.find((x) => x.stage === stage.stage)?.queueDepth ?? 0);
    if (backlog.some((d) => d === 0)) continue;
    const containers = snapshot.containers.filter((c) => c.stage === stage.stage);
    for (const c of containers) {
      if (skip.has(c.name) || !containerWorking(c) || c.state !== 'running' || !live.has(c.name)) continue;
      if (c.startedAt === undefined || c.startedAt > windowStart) continue;
      if (snapshot.health.some((h) => h.container === c.name && !h.ok)) continue;
      const idle = inWindow.every((s) => outcomes(s, stage.stage, c.name) === 0 && heldNothing(s, c.name));
      if (!idle) continue;
      const peers = workers.filter((w) => w.worker !== c.name && w.completed + w.failed > 0);
      const peersFinished = peers.reduce((n, w) => n + w.completed + w.failed, 0);
      if (peersFinished === 0) continue;
      const idleFor = t.queueStallSeconds + t.errorRateWindowSeconds;
      out.push(
        anomaly(
          'unhealthy_container',
          c.name,
          'critical',
          `${c.name}: took and finished no document for ${idleFor} s while queue:${stage.stage} held ${stage.queueDepth} and its peers finished ${peersFinished} (hung behind a working health check)`,
          {
            state: c.state,
            source: PROGRESS_SOURCE,
            stage: stage.stage,
            worker: c.name,
            queueDepth: stage.queueDepth,
            idleForSeconds: idleFor,
            peers: peers.slice(0, 10).map((w) => ({ worker: w.worker, completed: w.completed, failed: w.failed })),
            ...(c.health ? { health: c.health } : {}),
          },
          now,
        ),
      );
    }
  }
  return out;
}

/**
 * Whether the worker of a hung-worker anomaly is hung still, from a fresh snapshot: the detector's rule cannot say,
 * since it leaves a worker alone for a while after it starts. Not yet restarted (started before the anomaly was
 * detected): hung until it shows progress (an outcome in the window, or a document held). Restarted since: hung again
 * only when the queue holds documents and it has taken and finished none since; with an empty queue nothing proves it
 * either way, and it counts as working. Not running or not reported working: not hung (Docker's own facts are another
 * anomaly of the same fingerprint, which the caller sees).
 */
export function stillHung(snapshot: Snapshot, anomaly: Anomaly): boolean {
  const c = snapshot.containers.find((x) => x.name === anomaly.target);
  const stage = typeof anomaly.evidence.stage === 'string' ? anomaly.evidence.stage : c?.stage;
  if (!c || !stage || !containerWorking(c) || c.state !== 'running') return false;
  const progressed = outcomes(snapshot, stage, c.name) > 0 || !heldNothing(snapshot, c.name);
  if (progressed) return false;
  const restarted = c.startedAt === undefined || c.startedAt > anomaly.detectedAt;
  if (!restarted) return true;
  return (snapshot.stages.find((s) => s.stage === stage)?.queueDepth ?? 0) > 0;
}
