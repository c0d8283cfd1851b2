/**
 * Pure detectors: `(snapshot, history, thresholds, now) => Anomaly[]`. No I/O, no clock: `now` is passed in.
 * `history` is the previous cycles' records, oldest first. Noise control (consecutive cycles to fire and to
 * clear) is applied afterwards by `applyHysteresis`, so each detector answers only "is it wrong right now".
 */
import { sanitizeTargetPart } from './ids';
import type { CycleRecord, LockInfo, Snapshot, WorkerWindow } from './snapshot';
import type { Anomaly, AnomalyType, Severity } from './types';

export interface Thresholds {
  /** s a non-empty queue may go without progress. */
  queueStallSeconds: number;
  /** failed / (completed + failed) above which an error-rate spike fires, 0..1. */
  errorRateThreshold: number;
  /** Minimum outcomes in the window for a rate to count. */
  errorRateMinSamples: number;
  /** s of the error-rate and recent-processing-time window. */
  errorRateWindowSeconds: number;
  /** Recent mean over baseline that is a slowdown. */
  slowdownFactor: number;
  /** Minimum completions in the window, and baseline cycles, for a slowdown to count. */
  slowdownMinSamples: number;
  /** s a document may stay processing. */
  stuckDocumentSeconds: number;
  /** Consecutive failed health checks before a container is unhealthy. */
  healthFailuresBeforeUnhealthy: number;
  /** Consecutive cycles a candidate must be seen before it fires. */
  fireAfterCycles: number;
  /** Consecutive cycles a fired anomaly must be absent before it clears. */
  clearAfterCycles: number;
  /** Deaths of different worker processes while processing one document before it is poison (POISON_CRASHES). */
  poisonCrashes?: number;
}

export type Detector = (snapshot: Snapshot, history: CycleRecord[], t: Thresholds, now: number) => Anomaly[];

/** Capped id lists in evidence keep anomalies (and workflow inputs) small. */
export const EVIDENCE_ID_CAP = 50;
/**
 * Stale locks an anomaly carries as evidence (and one clear_stale_locks clears): as many as a snapshot carries, so that
 * one healing clears every observed lock of a dead owner, not 50 of its 200.
 */
export const LOCK_EVIDENCE_CAP = 200;

function anomaly(
  type: AnomalyType,
  target: string,
  severity: Severity,
  summary: string,
  evidence: Record<string, unknown>,
  now: number,
): Anomaly {
  return {
    type,
    target,
    severity,
    fingerprint: `${type}:${sanitizeTargetPart(target)}`,
    summary,
    evidence,
    detectedAt: now,
  };
}

/**
 * Containers serving a stage (label `selfheal.stage`), the ones failing their health check or not running first:
 * what a restart of a stage-level anomaly may act on. Never chosen by the LLM.
 */
export function stageContainers(snapshot: Snapshot, stage: string): { name: string; healthy: boolean }[] {
  return snapshot.containers
    .filter((c) => c.stage === stage)
    .map((c) => ({
      name: c.name,
      healthy: c.running && (snapshot.health.find((h) => h.container === c.name)?.ok ?? true),
    }))
    .sort((a, b) => Number(a.healthy) - Number(b.healthy) || a.name.localeCompare(b.name));
}

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

/** Per-worker rows listed in evidence (the suspects are always among them). */
const EVIDENCE_WORKER_CAP = 10;

const rateOf = (w: { completed: number; failed: number }) =>
  w.completed + w.failed > 0 ? w.failed / (w.completed + w.failed) : 0;

/**
 * The workers of a stage that are bad while their peers, doing the same work on the same kind of input, are fine:
 * the only case where a restart is a remedy rather than a guess. Empty when every worker is affected alike (the
 * input or a dependency), when no peer has enough samples to compare with, or when the stage has one worker.
 */
function outliers(
  workers: WorkerWindow[],
  bad: (w: WorkerWindow) => boolean,
  peersFine: (peers: WorkerWindow[]) => boolean,
): string[] {
  const suspects = workers.filter(bad);
  if (suspects.length === 0 || suspects.length === workers.length) return [];
  const peers = workers.filter((w) => !suspects.includes(w));
  return peersFine(peers) ? suspects.map((w) => w.worker).sort() : [];
}

/** Suspect workers that are containers serving the stage: the only ones a restart may act on. */
function suspectContainers(snapshot: Snapshot, stage: string, suspects: string[]): string[] {
  const names = new Set(stageContainers(snapshot, stage).map((c) => c.name));
  return suspects.filter((w) => names.has(w));
}

function workerEvidence(workers: WorkerWindow[], suspects: string[]): WorkerWindow[] {
  const listed = workers.filter((w) => suspects.includes(w.worker));
  for (const w of workers) {
    if (listed.length >= EVIDENCE_WORKER_CAP) break;
    if (!listed.includes(w)) listed.push(w);
  }
  return listed;
}

const sum = (workers: WorkerWindow[]) =>
  workers.reduce(
    (a, w) => ({
      completed: a.completed + w.completed,
      failed: a.failed + w.failed,
      totalMs: a.totalMs + (w.meanMs ?? 0) * w.completed,
    }),
    { completed: 0, failed: 0, totalMs: 0 },
  );

export const detectErrorRateSpike: Detector = (snapshot, _history, t) => {
  const out: Anomaly[] = [];
  for (const stage of snapshot.stages) {
    const workers = stage.workers ?? [];
    const suspects = outliers(
      workers,
      (w) => w.completed + w.failed >= t.errorRateMinSamples && rateOf(w) > t.errorRateThreshold,
      (peers) => {
        const p = sum(peers);
        return p.completed + p.failed >= t.errorRateMinSamples && rateOf(p) <= t.errorRateThreshold;
      },
    );
    const samples = stage.windowCompleted + stage.windowFailed;
    const rate = samples > 0 ? stage.windowFailed / samples : 0;
    const stageWide = samples >= t.errorRateMinSamples && rate > t.errorRateThreshold;
    if (!stageWide && suspects.length === 0) continue;
    const byWorker = suspects.map((w) => {
      const row = workers.find((x) => x.worker === w)!;
      return `${w} ${(rateOf(row) * 100).toFixed(0)}%`;
    });
    out.push(
      anomaly(
        'error_rate_spike',
        stage.stage,
        rate >= 0.5 ? 'critical' : 'warning',
        `${stage.stage}: ${(rate * 100).toFixed(0)}% of ${samples} documents failed in the last ${t.errorRateWindowSeconds} s` +
          (suspects.length > 0 ? `; failing: ${byWorker.join(', ')}, peers fine` : ''),
        {
          errorRate: rate,
          failed: stage.windowFailed,
          completed: stage.windowCompleted,
          threshold: t.errorRateThreshold,
          workers: workerEvidence(workers, suspects),
          suspects,
          containers: suspectContainers(snapshot, stage.stage, suspects),
        },
        snapshot.at,
      ),
    );
  }
  return out;
};

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Baseline of a stage's processing time: the median of the recent means recorded by earlier cycles that lie
 * wholly before the current window (so a slowdown does not raise its own baseline), or null when fewer than
 * `slowdownMinSamples` such cycles exist.
 */
export function stageBaselineMs(stage: string, history: CycleRecord[], t: Thresholds, now: number): number | null {
  const cutoff = now - t.errorRateWindowSeconds * 1000;
  const means = history
    .filter((r) => r.snapshot.at <= cutoff)
    .map((r) => r.snapshot.stages.find((s) => s.stage === stage))
    .filter((s) => s !== undefined && s.recentMeanMs !== null && s.recentSamples >= t.slowdownMinSamples)
    .map((s) => s!.recentMeanMs!);
  return means.length >= t.slowdownMinSamples ? median(means) : null;
}

export const detectProcessingTimeAnomaly: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  for (const stage of snapshot.stages) {
    const baseline = stageBaselineMs(stage.stage, history, t, now);
    if (baseline === null || baseline <= 0) continue;
    const workers = stage.workers ?? [];
    const slow = (w: { completed: number; meanMs: number | null }) =>
      w.completed >= t.slowdownMinSamples && w.meanMs !== null && w.meanMs / baseline > t.slowdownFactor;
    const suspects = outliers(workers, slow, (peers) => {
      const p = sum(peers);
      return p.completed >= t.slowdownMinSamples && !slow({ completed: p.completed, meanMs: p.totalMs / p.completed });
    });
    // One slow worker of several hardly moves the stage mean (it finishes fewer documents): it fires on its own.
    const stageSlow =
      stage.recentMeanMs !== null &&
      stage.recentSamples >= t.slowdownMinSamples &&
      stage.recentMeanMs / baseline > t.slowdownFactor;
    if (!stageSlow && suspects.length === 0) continue;
    const worst = Math.max(
      stage.recentMeanMs ?? 0,
      ...workers.filter((w) => suspects.includes(w.worker)).map((w) => w.meanMs ?? 0),
    );
    const factor = worst / baseline;
    out.push(
      anomaly(
        'processing_time_anomaly',
        stage.stage,
        factor >= t.slowdownFactor * 3 ? 'critical' : 'warning',
        suspects.length > 0
          ? `${stage.stage}: ${suspects.join(', ')} take${suspects.length === 1 ? 's' : ''} ${factor.toFixed(1)}x the baseline (${Math.round(worst)} ms vs ${Math.round(baseline)} ms), peers fine`
          : `${stage.stage}: processing takes ${factor.toFixed(1)}x its baseline (${Math.round(worst)} ms vs ${Math.round(baseline)} ms)`,
        {
          recentMeanMs: stage.recentMeanMs,
          baselineMs: baseline,
          factor,
          samples: stage.recentSamples,
          workers: workerEvidence(workers, suspects),
          suspects,
          containers: suspectContainers(snapshot, stage.stage, suspects),
        },
        now,
      ),
    );
  }
  return out;
};

export const detectUnhealthyContainer: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  const seen = new Set<string>();
  for (const result of snapshot.health) {
    if (result.ok) continue;
    // Consecutive failures: this cycle and the most recent ones before it.
    let failures = 1;
    for (let i = history.length - 1; i >= 0 && failures < t.healthFailuresBeforeUnhealthy; i--) {
      const past = history[i]!.snapshot;
      if (!past.sources.health.ok) break;
      const r = past.health.find((h) => h.container === result.container);
      if (!r || r.ok) break;
      failures++;
    }
    if (failures < t.healthFailuresBeforeUnhealthy) continue;
    seen.add(result.container);
    out.push(
      anomaly(
        'unhealthy_container',
        result.container,
        'critical',
        `${result.container}: health check failed ${failures} times in a row (${result.status ? `HTTP ${result.status}` : (result.error ?? 'no answer')})`,
        { url: result.url, status: result.status ?? null, error: result.error ?? null, consecutiveFailures: failures },
        now,
      ),
    );
  }
  for (const c of snapshot.containers) {
    if (c.running || seen.has(c.name)) continue;
    out.push(
      anomaly(
        'unhealthy_container',
        c.name,
        'critical',
        `${c.name}: container is ${c.state}`,
        { state: c.state, restartCount: c.restartCount },
        now,
      ),
    );
  }
  return out;
};

export const detectStuckDocuments: Detector = (snapshot, _history, t, now) => {
  const live = new Set(snapshot.liveWorkers);
  const cutoff = now - t.stuckDocumentSeconds * 1000;
  const byStage = new Map<string, { ids: number[]; count: number; oldest: number; deadOwners: Set<string> }>();
  for (const doc of snapshot.processing) {
    const since = doc.startedAt ?? doc.updatedAt;
    const ownerDead = doc.workerId === null || !live.has(doc.workerId);
    if (since >= cutoff && !ownerDead) continue;
    const entry = byStage.get(doc.stage) ?? { ids: [], count: 0, oldest: since, deadOwners: new Set<string>() };
    entry.count++;
    if (entry.ids.length < EVIDENCE_ID_CAP) entry.ids.push(doc.id);
    entry.oldest = Math.min(entry.oldest, since);
    if (ownerDead && doc.workerId) entry.deadOwners.add(doc.workerId);
    byStage.set(doc.stage, entry);
  }
  return [...byStage.entries()].map(([stage, e]) =>
    anomaly(
      'stuck_documents',
      stage,
      e.count >= 10 ? 'critical' : 'warning',
      `stuck_documents on ${stage}: ${e.count} document${e.count === 1 ? '' : 's'}`,
      {
        count: e.count,
        documentIds: e.ids,
        oldestSince: e.oldest,
        stuckForSeconds: Math.round((now - e.oldest) / 1000),
        deadOwners: [...e.deadOwners].sort(),
        capped: snapshot.processing.length < snapshot.processingTotal,
      },
      now,
    ),
  );
};

export const detectStaleLocks: Detector = (snapshot, _history, _t, now) => {
  const byOwner = new Map<string, LockInfo[]>();
  for (const lock of snapshot.staleLocks) {
    byOwner.set(lock.owner, [...(byOwner.get(lock.owner) ?? []), lock]);
  }
  return [...byOwner.entries()].map(([owner, locks]) =>
    anomaly(
      'stale_locks',
      owner,
      'warning',
      `${locks.length}${snapshot.staleLockTotal > snapshot.staleLocks.length ? '+' : ''} document locks held by ${owner}, which has no heartbeat`,
      {
        owner,
        documentIds: locks.slice(0, EVIDENCE_ID_CAP).map((l) => l.documentId),
        // The exact tokens observed: clear_stale_locks compare-and-deletes these and nothing else.
        locks: locks
          .slice(0, LOCK_EVIDENCE_CAP)
          .map((l) => ({ documentId: l.documentId, owner: l.owner, token: l.token })),
        count: locks.length,
        totalStale: snapshot.staleLockTotal,
      },
      now,
    ),
  );
};

export const detectLlmUnavailable: Detector = (snapshot, _history, _t, now) => {
  const o = snapshot.ollama;
  if (o.reachable && o.modelPresent) return [];
  return [
    anomaly(
      'llm_unavailable',
      'ollama',
      'warning',
      o.reachable
        ? 'Ollama answers but the model is not available'
        : `Ollama does not answer${o.error ? `: ${o.error}` : ''}`,
      { reachable: o.reachable, modelPresent: o.modelPresent, error: o.error ?? null },
      now,
    ),
  ];
};

/** Lost document ids in evidence: as many as one requeue takes by default (REQUEUE_CAP), so one healing does it. */
export const LOST_EVIDENCE_CAP = 1_000;

export const detectLostDocuments: Detector = (snapshot, _history, _t, now) => {
  const rec = snapshot.reconcile;
  if (!rec || rec.error || rec.lost.length === 0) return [];
  const byStage = new Map<string, typeof rec.lost>();
  for (const d of rec.lost) byStage.set(d.stage, [...(byStage.get(d.stage) ?? []), d]);
  return [...byStage.entries()].map(([stage, docs]) => {
    const oldest = Math.min(...docs.map((d) => d.queuedSince));
    return anomaly(
      'lost_documents',
      stage,
      docs.length >= 100 ? 'critical' : 'warning',
      `${stage}: ${docs.length} queued documents are in no queue or processing list (oldest queued ${Math.round((now - oldest) / 1000)} s ago)`,
      {
        stage,
        count: docs.length,
        documentIds: docs.slice(0, LOST_EVIDENCE_CAP).map((d) => d.id),
        oldestQueuedSince: oldest,
        candidatesChecked: rec.lostCandidates,
      },
      now,
    );
  });
};

export const detectOrphanedEntries: Detector = (snapshot, _history, _t, now) => {
  const rec = snapshot.reconcile;
  if (!rec || rec.error || rec.orphans.length === 0) return [];
  const byQueue = new Map<string, typeof rec.orphans>();
  for (const e of rec.orphans) byQueue.set(e.queue, [...(byQueue.get(e.queue) ?? []), e]);
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

/**
 * Deaths of worker processes observed while they were processing a document: in a snapshot, a processing row whose
 * worker is a container that is not running or has no heartbeat; between two snapshots, a container that started
 * again (a restart in between) while it had the row. Keyed by document, then by `worker@incarnation` (the
 * container's start time), so one death seen over many cycles counts once.
 */
function deathsByDocument(records: Snapshot[]): Map<number, Set<string>> {
  const deaths = new Map<number, Set<string>>();
  const add = (id: number, who: string) => deaths.set(id, (deaths.get(id) ?? new Set()).add(who));
  let prev: Snapshot | undefined;
  for (const s of records) {
    const containers = new Map(s.containers.map((c) => [c.name, c]));
    const live = new Set(s.liveWorkers);
    for (const d of s.processing) {
      if (!d.workerId) continue;
      const c = containers.get(d.workerId);
      if (c ? !c.running : !live.has(d.workerId)) add(d.id, `${d.workerId}@${c?.startedAt ?? 'process'}`);
    }
    if (prev) {
      const before = new Map(prev.containers.map((c) => [c.name, c]));
      for (const d of prev.processing) {
        if (!d.workerId) continue;
        const was = before.get(d.workerId);
        const is = containers.get(d.workerId);
        if (was?.startedAt !== undefined && is?.startedAt !== undefined && is.startedAt !== was.startedAt) {
          add(d.id, `${d.workerId}@${was.startedAt}`);
        }
      }
    }
    prev = s;
  }
  return deaths;
}

export const detectPoisonDocument: Detector = (snapshot, history, t, now) => {
  const threshold = t.poisonCrashes ?? 3;
  const deaths = deathsByDocument([...history.map((r) => r.snapshot), snapshot]);
  const out: Anomaly[] = [];
  // Only a document that is still being processed (by a live or a dead worker): once quarantined it is gone.
  for (const d of snapshot.processing) {
    const seen = deaths.get(d.id);
    if (!seen || seen.size < threshold) continue;
    const workers = [...new Set([...seen].map((k) => k.slice(0, k.lastIndexOf('@'))))].sort();
    out.push(
      anomaly(
        'poison_document',
        String(d.id),
        'critical',
        `document ${d.id} (${d.stage}) was being processed when ${seen.size} worker processes died (${workers.join(', ')})`,
        {
          stage: d.stage,
          documentIds: [d.id],
          crashes: seen.size,
          deaths: [...seen].sort().slice(0, EVIDENCE_ID_CAP),
          workers,
          threshold,
        },
        now,
      ),
    );
  }
  return out;
};

/** Pipeline detectors: they run only when Redis and Postgres could both be read. */
export const PIPELINE_DETECTORS: Detector[] = [
  detectStalledQueue,
  detectErrorRateSpike,
  detectProcessingTimeAnomaly,
  detectUnhealthyContainer,
  detectStuckDocuments,
  detectStaleLocks,
  detectLostDocuments,
  detectOrphanedEntries,
  detectPoisonDocument,
];

/** Redis or Postgres could not be read: the snapshot says nothing true about the pipeline. */
export function isBlind(snapshot: Snapshot): boolean {
  return !snapshot.sources.redis.ok || !snapshot.sources.postgres.ok;
}

/** The anomaly types a blind cycle still evaluates (every other type it cannot see). */
const SEEN_WHEN_BLIND: ReadonlySet<string> = new Set(['monitoring_degraded', 'llm_unavailable']);

/**
 * Every detector over one snapshot. When Redis or Postgres cannot be read, the snapshot says nothing true about
 * the pipeline: only `monitoring_degraded` (and the LLM's state) is reported, never a pipeline anomaly.
 */
export function detectAll(snapshot: Snapshot, history: CycleRecord[], t: Thresholds, now: number): Anomaly[] {
  const out = detectLlmUnavailable(snapshot, history, t, now);
  const down = (['redis', 'postgres'] as const).filter((s) => !snapshot.sources[s].ok);
  if (down.length > 0) {
    for (const source of down) {
      out.push(
        anomaly(
          'monitoring_degraded',
          source,
          'critical',
          `monitoring degraded: ${source} cannot be read (${snapshot.sources[source].error ?? 'unknown error'})`,
          { source, error: snapshot.sources[source].error ?? null },
          now,
        ),
      );
    }
    return out;
  }
  // Pipeline history from degraded cycles would read as "empty queues" and "no health": leave it out.
  const usable = history.filter((r) => !isBlind(r.snapshot));
  for (const detector of PIPELINE_DETECTORS) out.push(...detector(snapshot, usable, t, now));
  return out;
}

export interface HysteresisResult {
  /** Open anomalies after noise control. */
  active: Anomaly[];
  /** The subset of `active` that fired in this cycle (was not active in the previous one). */
  fired: Anomaly[];
  /** Fingerprints that were active and cleared in this cycle. */
  cleared: string[];
}

/**
 * Noise control. A candidate fires when it was seen in this cycle and the `fireAfterCycles - 1` cycles before it;
 * an active anomaly clears only after `clearAfterCycles` consecutive cycles without it. While it lingers it keeps
 * its last evidence.
 */
export function applyHysteresis(
  candidates: Anomaly[],
  history: CycleRecord[],
  t: Thresholds,
  blindNow = false,
): HysteresisResult {
  const previous = history[history.length - 1];
  const previousActive = new Map((previous?.active ?? []).map((a) => [a.fingerprint, a]));
  const current = new Map(candidates.map((a) => [a.fingerprint, a]));
  const active: Anomaly[] = [];
  const fired: Anomaly[] = [];
  const cleared: string[] = [];

  for (const [fp, a] of current) {
    if (previousActive.has(fp)) {
      active.push(a);
      continue;
    }
    let streak = 1;
    for (let i = history.length - 1; i >= 0 && streak < t.fireAfterCycles; i--) {
      if (!history[i]!.candidates.some((c) => c.fingerprint === fp)) break;
      streak++;
    }
    if (streak >= t.fireAfterCycles) {
      active.push(a);
      fired.push(a);
    }
  }
  for (const [fp, a] of previousActive) {
    if (current.has(fp)) continue;
    // A cycle that could not read Redis or Postgres saw nothing of the pipeline: it is no evidence that a pipeline
    // anomaly went away. Counting it as absence cleared every open anomaly during an outage, and each fired again
    // afterwards as a new healing (asking again for an approval a human had just refused).
    const unseen = (r: { snapshot: Snapshot }) => isBlind(r.snapshot) && !SEEN_WHEN_BLIND.has(a.type);
    if (blindNow && !SEEN_WHEN_BLIND.has(a.type)) {
      active.push(a);
      continue;
    }
    let absent = 1;
    for (let i = history.length - 1; i >= 0 && absent < t.clearAfterCycles; i--) {
      if (unseen(history[i]!)) continue;
      if (history[i]!.candidates.some((c) => c.fingerprint === fp)) break;
      absent++;
    }
    if (absent >= t.clearAfterCycles) cleared.push(fp);
    else active.push(a);
  }
  return { active, fired, cleared };
}

/** One cycle's decision: detect, then apply noise control against the previous cycles. */
export function evaluateCycle(
  snapshot: Snapshot,
  history: CycleRecord[],
  t: Thresholds,
  now: number,
): HysteresisResult & { candidates: Anomaly[] } {
  const candidates = detectAll(snapshot, history, t, now);
  return { candidates, ...applyHysteresis(candidates, history, t, isBlind(snapshot)) };
}
