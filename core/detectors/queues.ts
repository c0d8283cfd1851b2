/** Queue detectors: a queue that makes no progress, and queue entries that should not be there. */
import { anomaly, groupBy, stageContainers, type Detector } from './common';
import type { Anomaly } from '../types';

export const detectStalledQueue: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  const windowStart = now - t.queueStallSeconds * 1000;
  for (const stage of snapshot.stages) {
    if (stage.queueDepth === 0) continue;
    // No progress: nothing taken or finished in the stage for the whole threshold...
    if (stage.lastProgressAt !== null && stage.lastProgressAt >= windowStart) continue;
    // ...and the history covers the threshold with the queue non-empty and not falling.
    const inWindow = history.filter((r) => r.snapshot.at >= windowStart);
    const covered = history.some((r) => r.snapshot.at <= windowStart);
    if (!covered) continue;
    const depths = inWindow.map((r) => r.snapshot.stages.find((s) => s.stage === stage.stage)?.queueDepth ?? 0);
    if (depths.some((d) => d === 0)) continue;
    const first = depths[0] ?? stage.queueDepth;
    if (stage.queueDepth < first) continue;
    out.push(
      anomaly(
        'stalled_queue',
        stage.stage,
        stage.queueDepth >= 100 ? 'critical' : 'warning',
        `queue:${stage.stage} stalled: ${stage.queueDepth} waiting, no progress for ${t.queueStallSeconds} s`,
        {
          queueDepth: stage.queueDepth,
          processingDepth: stage.processingDepth,
          lastProgressAt: stage.lastProgressAt,
          stalledForSeconds: stage.lastProgressAt === null ? null : Math.round((now - stage.lastProgressAt) / 1000),
          containers: stageContainers(snapshot, stage.stage).map((c) => c.name),
        },
        now,
      ),
    );
  }
  return out;
};

export const detectOrphanedEntries: Detector = (snapshot, _history, _t, now) => {
  const rec = snapshot.reconcile;
  if (!rec || rec.error || rec.orphans.length === 0) return [];
  const byQueue = groupBy(rec.orphans, (e) => e.queue);
  return [...byQueue.entries()].map(([queue, entries]) => {
    const reasons: Record<string, number> = {};
    for (const e of entries) reasons[e.reason] = (reasons[e.reason] ?? 0) + 1;
    const described = Object.entries(reasons)
      .sort()
      .map(([r, n]) => `${n} ${r}`)
      .join(', ');
    return anomaly(
      'orphaned_entries',
      queue,
      'warning',
      `queue:${queue} holds ${entries.length} entries that should not be there (${described})`,
      {
        stage: queue,
        entries: entries.map((e) => ({ queue: e.queue, id: e.id, count: e.count, reason: e.reason })),
        reasons,
        entriesChecked: rec.entriesChecked,
      },
      now,
    );
  });
};
