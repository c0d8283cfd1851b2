/**
 * A silently hung worker: its container runs and answers its health check (and may keep heartbeating), but its
 * consumer loop is stuck. Its stage's queue is not stalled while a peer keeps taking documents, so only a per-worker
 * view tells it from an idle worker: with a backlog in the queue all along, a working consumer always takes
 * something. Each such worker is its own `unhealthy_container` anomaly, so two hung workers are two healings.
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
 * Workers that took and finished nothing for QUEUE_STALL_THRESHOLD s, in every cycle of that window, while their
 * stage's queue held documents in every cycle and a peer of the same stage finished some: running, not reported
 * unhealthy, started before the window (a worker still starting is not hung), holding no document (one that holds a
 * document too long is a stuck document, another detector). Their workers' windows must be complete (fewer than
 * WORKER_WINDOW_CAP workers) and their ids must be container names, as the reference pipeline's are; anything else
 * cannot be told apart from an idle worker, and is not reported.
 */
export function hungWorkers(
  snapshot: Snapshot,
  history: CycleRecord[],
  t: Thresholds,
  now: number,
  skip: ReadonlySet<string>,
): Anomaly[] {
  const out: Anomaly[] = [];
  const windowStart = now - t.queueStallSeconds * 1000;
  if (!history.some((r) => r.snapshot.at <= windowStart)) return out;
  const inWindow = [...history.filter((r) => r.snapshot.at >= windowStart).map((r) => r.snapshot), snapshot];
  for (const stage of snapshot.stages) {
    const workers = stage.workers;
    if (!workers || workers.length >= WORKER_WINDOW_CAP) continue;
    // A backlog all along: every cycle of the window saw documents waiting in the stage's queue.
    const backlog = inWindow.map((s) => s.stages.find((x) => x.stage === stage.stage)?.queueDepth ?? 0);
    if (backlog.some((d) => d === 0)) continue;
    const containers = snapshot.containers.filter((c) => c.stage === stage.stage);
    for (const c of containers) {
      if (skip.has(c.name) || !containerWorking(c)) continue;
      if (c.startedAt === undefined || c.startedAt > windowStart) continue;
      if (snapshot.health.some((h) => h.container === c.name && !h.ok)) continue;
      const idle = inWindow.every((s) => outcomes(s, stage.stage, c.name) === 0 && heldNothing(s, c.name));
      if (!idle) continue;
      const peers = workers.filter((w) => w.worker !== c.name && w.completed + w.failed > 0);
      const peersFinished = peers.reduce((n, w) => n + w.completed + w.failed, 0);
      if (peersFinished === 0) continue;
      out.push(
        anomaly(
          'unhealthy_container',
          c.name,
          'critical',
          `${c.name}: took and finished no document for ${t.queueStallSeconds} s while queue:${stage.stage} held ${stage.queueDepth} and its peers finished ${peersFinished} (hung behind a working health check)`,
          {
            state: c.state,
            source: PROGRESS_SOURCE,
            stage: stage.stage,
            worker: c.name,
            queueDepth: stage.queueDepth,
            idleForSeconds: t.queueStallSeconds,
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
