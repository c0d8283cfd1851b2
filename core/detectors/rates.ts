/** Rate detectors over a stage's recent window: the error rate and the processing time, stage-wide or per worker. */
import { anomaly, stageContainers, type Detector, type Thresholds } from './common';
import type { CycleRecord, Snapshot, StageMetrics, WorkerWindow } from '../snapshot';
import type { Anomaly } from '../types';

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

/**
 * The outliers of a stage that have lasted. A fault of the whole stage (its input, a dependency) reaches the
 * workers' windows one after the other: each window holds its own mix of outcomes from before and after the onset,
 * so for a cycle or two the worker that happened to take more documents since then looks bad beside peers that
 * still look fine. A worker is therefore a suspect only once it has been an outlier in every cycle of the last half
 * window, back to one at least that long ago: by then a fault of the whole stage has reached its peers' windows as
 * well (each holds half a window of outcomes from after the onset), and no worker is an outlier any more.
 *
 * `wait`: some worker is an outlier that has not lasted yet, and none has: the detector reports nothing for the
 * stage until it is told apart (it lasts, or its peers turn bad too). A stage bad in every cycle of a whole window
 * (an outlier that comes and goes) is reported at last, without the outliers that have not lasted.
 */
function lastingOutliers(
  stage: string,
  snapshot: Snapshot,
  history: CycleRecord[],
  t: Thresholds,
  outliersOf: (s: StageMetrics) => string[],
  badOf: (s: StageMetrics) => boolean,
): { suspects: string[]; wait: boolean } {
  const now = snapshot.at;
  const current = snapshot.stages.find((s) => s.stage === stage);
  const found = current ? outliersOf(current) : [];
  if (found.length === 0) return { suspects: [], wait: false };
  const windowMs = t.errorRateWindowSeconds * 1000;
  const past = history
    .filter((r) => r.snapshot.at < now)
    .map((r) => ({ at: r.snapshot.at, stage: r.snapshot.stages.find((s) => s.stage === stage) }));
  /** `holds` in every earlier cycle back to one at least `spanMs` old. */
  const lasted = (spanMs: number, holds: (s: StageMetrics) => boolean) => {
    for (let i = past.length - 1; i >= 0; i--) {
      const p = past[i]!;
      if (!p.stage || !holds(p.stage)) return false;
      if (p.at <= now - spanMs) return true;
    }
    return false;
  };
  const suspects = found.filter((w) => lasted(windowMs / 2, (s) => outliersOf(s).includes(w)));
  const wait = suspects.length === 0 && !lasted(windowMs, badOf);
  return { suspects, wait };
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

/** The workers failing beside fine peers in one cycle's window of a stage. */
function errorOutliers(stage: StageMetrics, t: Thresholds): string[] {
  return outliers(
    stage.workers ?? [],
    (w) => w.completed + w.failed >= t.errorRateMinSamples && rateOf(w) > t.errorRateThreshold,
    (peers) => {
      const p = sum(peers);
      return p.completed + p.failed >= t.errorRateMinSamples && rateOf(p) <= t.errorRateThreshold;
    },
  );
}

/** The stage as a whole fails over the threshold. */
function errorStageWide(stage: StageMetrics, t: Thresholds): boolean {
  const samples = stage.windowCompleted + stage.windowFailed;
  return samples >= t.errorRateMinSamples && stage.windowFailed / samples > t.errorRateThreshold;
}

export const detectErrorRateSpike: Detector = (snapshot, history, t) => {
  const out: Anomaly[] = [];
  for (const stage of snapshot.stages) {
    const workers = stage.workers ?? [];
    const { suspects, wait } = lastingOutliers(
      stage.stage,
      snapshot,
      history,
      t,
      (s) => errorOutliers(s, t),
      (s) => errorStageWide(s, t) || errorOutliers(s, t).length > 0,
    );
    if (wait) continue;
    const samples = stage.windowCompleted + stage.windowFailed;
    const rate = samples > 0 ? stage.windowFailed / samples : 0;
    const stageWide = errorStageWide(stage, t);
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

/** The workers slower than `baseline` by the factor beside fine peers in one cycle's window of a stage. */
function slowOutliers(stage: StageMetrics, baseline: number, t: Thresholds): string[] {
  const slow = (w: { completed: number; meanMs: number | null }) =>
    w.completed >= t.slowdownMinSamples && w.meanMs !== null && w.meanMs / baseline > t.slowdownFactor;
  return outliers(stage.workers ?? [], slow, (peers) => {
    const p = sum(peers);
    return p.completed >= t.slowdownMinSamples && !slow({ completed: p.completed, meanMs: p.totalMs / p.completed });
  });
}

/**
 * The anomaly's suspects that are still outliers of its stage in this snapshot (none for a stage-wide anomaly).
 * The healing's re-check before a restart and its verification ask it when the detector reports nothing: a suspect
 * whose streak one cycle broke (too few samples) makes the detector wait again, which does not mean the fault is
 * gone, while a worker that is no outlier any more is fine.
 */
export function suspectsStillOutliers(
  anomaly: Anomaly,
  snapshot: Snapshot,
  history: CycleRecord[],
  t: Thresholds,
): string[] {
  const suspects = Array.isArray(anomaly.evidence.suspects)
    ? anomaly.evidence.suspects.filter((w): w is string => typeof w === 'string')
    : [];
  const stage = snapshot.stages.find((s) => s.stage === anomaly.target);
  if (suspects.length === 0 || !stage) return [];
  let now: string[] = [];
  if (anomaly.type === 'error_rate_spike') now = errorOutliers(stage, t);
  else if (anomaly.type === 'processing_time_anomaly') {
    const baseline = stageBaselineMs(stage.stage, history, t, snapshot.at);
    if (baseline !== null && baseline > 0) now = slowOutliers(stage, baseline, t);
  }
  return suspects.filter((w) => now.includes(w));
}

export const detectProcessingTimeAnomaly: Detector = (snapshot, history, t, now) => {
  const out: Anomaly[] = [];
  for (const stage of snapshot.stages) {
    const baseline = stageBaselineMs(stage.stage, history, t, now);
    if (baseline === null || baseline <= 0) continue;
    const workers = stage.workers ?? [];
    const workersSlow = (s: StageMetrics) => slowOutliers(s, baseline, t);
    // One slow worker of several hardly moves the stage mean (it finishes fewer documents): it fires on its own.
    const slowStage = (s: StageMetrics) =>
      s.recentMeanMs !== null &&
      s.recentSamples >= t.slowdownMinSamples &&
      s.recentMeanMs / baseline > t.slowdownFactor;
    // Measured against today's baseline in the earlier cycles too: they lie within the last window.
    const { suspects, wait } = lastingOutliers(
      stage.stage,
      snapshot,
      history,
      t,
      workersSlow,
      (s) => slowStage(s) || workersSlow(s).length > 0,
    );
    if (wait) continue;
    const stageSlow = slowStage(stage);
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
