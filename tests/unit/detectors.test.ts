import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  applyHysteresis,
  detectAll,
  detectErrorRateSpike,
  detectLlmUnavailable,
  detectLostDocuments,
  detectOrphanedEntries,
  detectPoisonDocument,
  LOST_EVIDENCE_CAP,
  detectProcessingTimeAnomaly,
  detectStaleLocks,
  detectStalledQueue,
  detectStuckDocuments,
  detectUnhealthyContainer,
  evaluateCycle,
  lostStill,
  refiredAfterGone,
  stillHung,
  suspectsStillOutliers,
  type Detector,
  type Thresholds,
} from '../../core/detectors';
import { isHealthyStatus, type CycleRecord, type Snapshot, type WorkerWindow } from '../../core/snapshot';
import { healthDecides } from '../../core/plan';
import { runbookPlan } from '../../core/runbook';
import type { Anomaly, AnomalyType } from '../../core/types';
import { history, snapshot, stage, T0, thresholds } from '../helpers/snapshots';

const NOW = T0;
const S = 1000;

interface Case {
  name: string;
  snapshot: Snapshot;
  history?: CycleRecord[];
  t?: Partial<Thresholds>;
  /** Targets expected to fire; [] = quiet. */
  fires: string[];
}

function run(detector: Detector, cases: Case[]) {
  it.each(cases)('$name', (c) => {
    const out = detector(c.snapshot, c.history ?? [], { ...thresholds, ...c.t }, NOW);
    expect(out.map((a) => a.target).sort()).toEqual([...c.fires].sort());
    for (const a of out) {
      expect(a.detectedAt).toBe(NOW);
      expect(a.fingerprint).toBe(`${a.type}:${a.target.toLowerCase()}`);
      expect(JSON.parse(JSON.stringify(a))).toEqual(a); // JSON only
    }
  });
}

/** A queue of `depth` waiting items in extract, no progress since `lastProgressAt`. */
const stalled = (depth: number, lastProgressAt: number | null) => (at: number) =>
  snapshot(at, { stages: [stage('extract', { queueDepth: depth, lastProgressAt }), stage('evaluate')] });

describe('stalled_queue (threshold 60 s)', () => {
  run(detectStalledQueue, [
    {
      name: 'fires: items waiting, no progress for 61 s, depth flat over the whole threshold',
      snapshot: stalled(10, NOW - 61 * S)(NOW),
      history: history(NOW, 14, 5 * S, stalled(10, NOW - 61 * S)),
      fires: ['extract'],
    },
    {
      name: 'fires: a queue that never made progress (lastProgressAt null)',
      snapshot: stalled(3, null)(NOW),
      history: history(NOW, 14, 5 * S, stalled(3, null)),
      fires: ['extract'],
    },
    {
      name: 'quiet at the boundary: last progress exactly 60 s ago',
      snapshot: stalled(10, NOW - 60 * S)(NOW),
      history: history(NOW, 14, 5 * S, stalled(10, NOW - 60 * S)),
      fires: [],
    },
    {
      name: 'quiet: empty queue, however long without progress',
      snapshot: stalled(0, NOW - 3600 * S)(NOW),
      history: history(NOW, 14, 5 * S, stalled(0, NOW - 3600 * S)),
      fires: [],
    },
    {
      name: 'quiet: depth is falling (something drains it)',
      snapshot: stalled(10, NOW - 61 * S)(NOW),
      history: history(NOW, 14, 5 * S, (at) => stalled(10 + Math.round((NOW - at) / S), NOW - 61 * S)(at)),
      fires: [],
    },
    {
      name: 'needs history covering the threshold: 50 s of history is not enough',
      snapshot: stalled(10, NOW - 61 * S)(NOW),
      history: history(NOW, 10, 5 * S, stalled(10, NOW - 61 * S)),
      fires: [],
    },
    {
      name: 'quiet: the queue was empty at some point in the window',
      snapshot: stalled(10, NOW - 61 * S)(NOW),
      history: history(NOW, 14, 5 * S, (at) => stalled(at === NOW - 20 * S ? 0 : 10, NOW - 61 * S)(at)),
      fires: [],
    },
  ]);
});

const rates = (completed: number, failed: number) =>
  snapshot(NOW, {
    stages: [stage('extract', { windowCompleted: completed, windowFailed: failed }), stage('evaluate')],
  });

describe('error_rate_spike (threshold 0.2, min 20 samples)', () => {
  run(detectErrorRateSpike, [
    { name: 'fires: 11 of 50 failed (22%)', snapshot: rates(39, 11), fires: ['extract'] },
    { name: 'fires: everything failed', snapshot: rates(0, 20), fires: ['extract'] },
    { name: 'quiet at the boundary: exactly 20%', snapshot: rates(40, 10), fires: [] },
    { name: 'needs its minimum samples: 19 of 19 failed is not enough', snapshot: rates(0, 19), fires: [] },
    { name: 'quiet: no traffic at all (no division by zero)', snapshot: rates(0, 0), fires: [] },
    {
      name: 'a stricter threshold fires earlier',
      snapshot: rates(45, 5),
      t: { errorRateThreshold: 0.05 },
      fires: ['extract'],
    },
  ]);
});

/** Cycles every 5 s whose recent mean is `baseline` ms, then `recent` ms inside the 30 s window. */
const timings =
  (baseline: number, recent: number, samples = 50, baselineSamples = 50) =>
  (at: number) =>
    snapshot(at, {
      stages: [
        stage('extract', {
          recentMeanMs: at > NOW - 30 * S ? recent : baseline,
          recentSamples: at > NOW - 30 * S ? samples : baselineSamples,
        }),
        stage('evaluate'),
      ],
    });

describe('processing_time_anomaly (factor 3, min 5 samples)', () => {
  run(detectProcessingTimeAnomaly, [
    {
      name: 'fires: 4x the baseline',
      snapshot: timings(100, 400)(NOW),
      history: history(NOW, 20, 5 * S, timings(100, 400)),
      fires: ['extract'],
    },
    {
      name: 'quiet at the boundary: exactly 3x',
      snapshot: timings(100, 300)(NOW),
      history: history(NOW, 20, 5 * S, timings(100, 300)),
      fires: [],
    },
    {
      name: 'needs its minimum samples in the window',
      snapshot: timings(100, 1000, 4)(NOW),
      history: history(NOW, 20, 5 * S, timings(100, 1000)),
      fires: [],
    },
    {
      name: 'needs a baseline: 4 cycles before the window are not enough',
      snapshot: timings(100, 1000)(NOW),
      history: history(NOW, 9, 5 * S, timings(100, 1000)),
      fires: [],
    },
    {
      name: 'baseline cycles with too few samples do not count',
      snapshot: timings(100, 1000)(NOW),
      history: history(NOW, 20, 5 * S, timings(100, 1000, 50, 2)),
      fires: [],
    },
    {
      name: 'quiet: faster than usual is not an anomaly',
      snapshot: timings(100, 10)(NOW),
      history: history(NOW, 20, 5 * S, timings(100, 10)),
      fires: [],
    },
  ]);
});

/** A stage whose window is the sum of its workers' rows; containers named like the workers serve it. */
const byWorker = (rows: WorkerWindow[], at = NOW) => {
  const completed = rows.reduce((n, w) => n + w.completed, 0);
  const failed = rows.reduce((n, w) => n + w.failed, 0);
  const totalMs = rows.reduce((n, w) => n + (w.meanMs ?? 0) * w.completed, 0);
  return snapshot(at, {
    stages: [
      stage('extract', {
        windowCompleted: completed,
        windowFailed: failed,
        recentMeanMs: completed > 0 ? totalMs / completed : null,
        recentSamples: completed,
        workers: rows,
      }),
      stage('evaluate'),
    ],
    containers: rows.map((w) => ({
      name: w.worker,
      state: 'running',
      running: true,
      restartCount: 0,
      stage: 'extract',
    })),
  });
};
const w = (worker: string, completed: number, failed: number, meanMs: number | null = 100): WorkerWindow => ({
  worker,
  completed,
  failed,
  meanMs,
});

describe('one bad worker among fine peers: the suspects a restart may act on', () => {
  const detect = (d: Detector, s: Snapshot, h: CycleRecord[] = []) => d(s, h, thresholds, NOW);
  const baseline = (at: number) => byWorker([w('x-1', 25, 0), w('x-2', 25, 0)], at);

  const cases: {
    name: string;
    detector: Detector;
    snapshot: Snapshot;
    suspects: string[] | null;
  }[] = [
    {
      name: 'error rate: x-2 fails 80%, x-1 fine: x-2 is the suspect (stage rate 40%)',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 30, 0), w('x-2', 5, 20)]),
      suspects: ['x-2'],
    },
    {
      name: 'error rate: one bad worker of five fires even though the stage rate is under the threshold',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 30, 0), w('x-2', 30, 0), w('x-3', 30, 0), w('x-4', 30, 0), w('x-5', 0, 25)]),
      suspects: ['x-5'],
    },
    {
      name: 'error rate: every worker fails alike: stage-wide, no suspect',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 10, 15), w('x-2', 10, 15)]),
      suspects: [],
    },
    {
      name: 'error rate: the only worker fails: nobody to compare with, no suspect',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 5, 20)]),
      suspects: [],
    },
    {
      name: 'error rate: peers with too few samples prove nothing: no suspect',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 3, 0), w('x-2', 5, 20)]),
      suspects: [],
    },
    {
      name: 'error rate: a worker under its minimum samples is not a suspect (and the stage is fine)',
      detector: detectErrorRateSpike,
      snapshot: byWorker([w('x-1', 80, 0), w('x-2', 0, 19)]),
      suspects: null,
    },
    {
      name: 'slowdown: x-2 at 10x, x-1 at baseline: fires on x-2 alone though the stage mean is under 3x',
      detector: detectProcessingTimeAnomaly,
      snapshot: byWorker([w('x-1', 50, 0, 100), w('x-2', 5, 0, 1000)]),
      suspects: ['x-2'],
    },
    {
      name: 'slowdown: every worker slow alike: stage-wide, no suspect',
      detector: detectProcessingTimeAnomaly,
      snapshot: byWorker([w('x-1', 20, 0, 500), w('x-2', 20, 0, 500)]),
      suspects: [],
    },
    {
      name: 'slowdown: a slow worker with fewer completions than the minimum is not a suspect',
      detector: detectProcessingTimeAnomaly,
      snapshot: byWorker([w('x-1', 50, 0, 100), w('x-2', 4, 0, 1000)]),
      suspects: null,
    },
  ];
  /** Fine workers until 20 s ago, then the case's shape (more than half the 30 s window: it has lasted). */
  const lasting = (s: Snapshot, sinceMs = 20 * S) =>
    history(NOW, 20, 5 * S, (at) => (at > NOW - sinceMs ? { ...s, at } : baseline(at)));
  it.each(cases)('$name', (c) => {
    const out = detect(c.detector, c.snapshot, lasting(c.snapshot));
    if (c.suspects === null) {
      expect(out).toEqual([]);
      return;
    }
    expect(out).toHaveLength(1);
    expect(out[0]!.target).toBe('extract');
    expect(out[0]!.evidence.suspects).toEqual(c.suspects);
    // Only suspects that are containers serving the stage can be restarted; never a peer.
    expect(out[0]!.evidence.containers).toEqual(c.suspects);
    for (const s of c.suspects) expect(out[0]!.summary).toContain(s);
  });

  it('a suspect that is not a container of the stage is named but not offered for a restart', () => {
    const s = byWorker([w('x-1', 30, 0), w('x-2', 5, 20)]);
    s.containers = [{ name: 'x-1', state: 'running', running: true, restartCount: 0, stage: 'extract' }];
    const [a] = detect(detectErrorRateSpike, s, lasting(s));
    expect(a!.evidence.suspects).toEqual(['x-2']);
    expect(a!.evidence.containers).toEqual([]);
  });

  // The onset of a fault of the whole stage: each worker's window holds its own mix of outcomes from before and
  // after it, so for a cycle or two one worker looks bad beside a peer that still looks fine.
  const oneAhead = byWorker([w('x-1', 40, 8), w('x-2', 25, 20)]);
  const bothBad = byWorker([w('x-1', 30, 25), w('x-2', 20, 30)]);

  it('an outlier seen for less than half the window: nothing yet, though the stage rate is over the threshold', () => {
    for (const since of [1 * S, 6 * S, 14 * S]) {
      expect(detect(detectErrorRateSpike, oneAhead, lasting(oneAhead, since)), `since ${since} ms`).toEqual([]);
    }
  });

  it('the onset of a stage-wide fault: the peer turns bad too, and the stage fires with no suspect', () => {
    const h = history(NOW, 20, 5 * S, (at) => (at > NOW - 10 * S ? { ...oneAhead, at } : baseline(at)));
    const [a] = detect(detectErrorRateSpike, bothBad, h);
    expect(a!.evidence.suspects).toEqual([]);
    expect(a!.evidence.containers).toEqual([]);
  });

  it('a worker that has been the outlier for half the window is the suspect', () => {
    const [a] = detect(detectErrorRateSpike, oneAhead, lasting(oneAhead, 16 * S));
    expect(a!.evidence.suspects).toEqual(['x-2']);
  });

  it('a history too short to tell (the monitor just started): nothing yet', () => {
    const h = history(NOW, 2, 5 * S, (at) => ({ ...oneAhead, at }));
    expect(detect(detectErrorRateSpike, oneAhead, h)).toEqual([]);
  });

  it('an outlier that comes and goes in a stage bad for a whole window: the stage fires, with no suspect', () => {
    const h = history(NOW, 20, 5 * S, (at) =>
      at > NOW - 40 * S ? { ...((at - NOW) % (10 * S) === 0 ? oneAhead : bothBad), at } : baseline(at),
    );
    const [a] = detect(detectErrorRateSpike, oneAhead, h);
    expect(a!.evidence.suspects).toEqual([]);
    expect(a!.summary).not.toContain('x-2');
  });

  it("a suspect's streak broken by one cycle: the detector waits again, but the re-check still finds it the outlier", () => {
    const [a] = detect(detectErrorRateSpike, oneAhead, lasting(oneAhead, 16 * S));
    expect(a!.evidence.suspects).toEqual(['x-2']);
    // The cycle before this one had too few samples to compare: the detector waits, the suspect is still bad.
    const broken = lasting(oneAhead, 16 * S);
    broken[broken.length - 1] = {
      ...broken[broken.length - 1]!,
      snapshot: byWorker([w('x-1', 3, 0), w('x-2', 2, 3)], NOW - 5 * S),
    };
    expect(detect(detectErrorRateSpike, oneAhead, broken)).toEqual([]);
    expect(suspectsStillOutliers(a!, oneAhead, broken, thresholds)).toEqual(['x-2']);
    // Fine again (after its restart): no longer an outlier.
    expect(suspectsStillOutliers(a!, byWorker([w('x-1', 40, 0), w('x-2', 40, 1)]), broken, thresholds)).toEqual([]);
    // A stage-wide anomaly has no suspect to re-check.
    const [wide] = detect(detectErrorRateSpike, bothBad, lasting(bothBad));
    expect(suspectsStillOutliers(wide!, oneAhead, broken, thresholds)).toEqual([]);
  });

  it('a slow worker seen for less than half the window: nothing yet', () => {
    const s = byWorker([w('x-1', 50, 0, 100), w('x-2', 5, 0, 1000)]);
    expect(detect(detectProcessingTimeAnomaly, s, lasting(s, 6 * S))).toEqual([]);
  });
});

const reconciled = (over: Partial<NonNullable<Snapshot['reconcile']>>) =>
  snapshot(NOW, { reconcile: { lost: [], lostCandidates: 0, orphans: [], entriesChecked: 0, ...over } });

describe('lost_documents: queued past the threshold and in no list (decided by the collector)', () => {
  run(detectLostDocuments, [
    {
      name: 'fires per stage of the lost documents',
      snapshot: reconciled({
        lost: [
          { id: 1, stage: 'extract', queuedSince: NOW - 700 * S },
          { id: 2, stage: 'evaluate', queuedSince: NOW - 900 * S },
          { id: 3, stage: 'extract', queuedSince: NOW - 650 * S },
        ],
        lostCandidates: 10,
      }),
      fires: ['extract', 'evaluate'],
    },
    { name: 'quiet: candidates, all in a list', snapshot: reconciled({ lostCandidates: 10 }), fires: [] },
    {
      name: 'quiet: reconciliation failed this cycle (never a guess)',
      snapshot: reconciled({ lost: [{ id: 1, stage: 'extract', queuedSince: 0 }], error: 'NOSCRIPT' }),
      fires: [],
    },
    { name: 'quiet: no reconciliation in the snapshot (old record)', snapshot: snapshot(NOW), fires: [] },
  ]);
  it('carries the ids (up to one requeue) and the stage', () => {
    const lost = Array.from({ length: 1_500 }, (_, i) => ({ id: i + 1, stage: 'extract', queuedSince: NOW - 700 * S }));
    const [a] = detectLostDocuments(reconciled({ lost, lostCandidates: 1_500 }), [], thresholds, NOW);
    expect(a!.evidence.stage).toBe('extract');
    expect(a!.evidence.count).toBe(1_500);
    expect((a!.evidence.documentIds as number[]).length).toBe(LOST_EVIDENCE_CAP);
    expect(a!.severity).toBe('critical');
  });
});

describe('orphaned_entries: completed, dead or missing documents, and duplicates', () => {
  run(detectOrphanedEntries, [
    {
      name: 'fires per queue',
      snapshot: reconciled({
        orphans: [
          { queue: 'extract', id: '7', count: 1, reason: 'completed' },
          { queue: 'extract', id: '8', count: 2, reason: 'duplicate' },
          { queue: 'evaluate', id: '9', count: 1, reason: 'missing' },
        ],
        entriesChecked: 40,
      }),
      fires: ['extract', 'evaluate'],
    },
    { name: 'quiet: nothing odd', snapshot: reconciled({ entriesChecked: 40 }), fires: [] },
  ]);
  it('lists the exact entries with their counts, which the action removes and nothing else', () => {
    const [a] = detectOrphanedEntries(
      reconciled({ orphans: [{ queue: 'extract', id: '8', count: 2, reason: 'duplicate' }], entriesChecked: 3 }),
      [],
      thresholds,
      NOW,
    );
    expect(a!.evidence.entries).toEqual([{ queue: 'extract', id: '8', count: 2, reason: 'duplicate' }]);
    expect(a!.summary).toContain('1 duplicate');
  });
});

describe('poison_document: worker processes died while processing it', () => {
  /** A snapshot where document 42 is processing by w-1, a container running or not, started at `started`. */
  const withDoc = (at: number, running: boolean, started: number, doc = true) =>
    snapshot(at, {
      processing: doc ? [{ id: 42, stage: 'extract', workerId: 'w-1', startedAt: at - 1, updatedAt: at - 1 }] : [],
      processingTotal: doc ? 1 : 0,
      containers: [
        { name: 'w-1', state: running ? 'running' : 'exited', running, restartCount: 0, startedAt: started },
      ],
      liveWorkers: running ? ['w-1'] : [],
    });
  const rec2 = (s: Snapshot): CycleRecord => ({ snapshot: s, candidates: [], active: [] });
  const t3 = { ...thresholds, poisonCrashes: 3 };

  it('three deaths of the worker (three incarnations) on the same document: fires, target the document id', () => {
    const history = [
      rec2(withDoc(NOW - 6 * S, false, 100)),
      rec2(withDoc(NOW - 5 * S, false, 100)), // the same death, seen again: counts once
      rec2(withDoc(NOW - 4 * S, false, 200)),
    ];
    const out = detectPoisonDocument(withDoc(NOW, false, 300), history, t3, NOW);
    expect(out.map((a) => a.target)).toEqual(['42']);
    expect(out[0]!.evidence.crashes).toBe(3);
    expect(out[0]!.evidence.documentIds).toEqual([42]);
  });

  it('a container that died holding a document a worker died on before names it a poison suspect', () => {
    const died = (s: Snapshot) => detectUnhealthyContainer(s, [], thresholds, NOW);
    // First death on it: not yet a suspect.
    expect(died(withDoc(NOW, false, 100))[0]!.evidence.poisonSuspects).toBeUndefined();
    const history = [rec2(withDoc(NOW - 4 * S, false, 100)), rec2(withDoc(NOW - 2 * S, true, 200))];
    const [a] = detectUnhealthyContainer(withDoc(NOW, false, 200), history, thresholds, NOW);
    expect(a!.evidence.poisonSuspects).toEqual([42]);
    // Requeued since its second death (not processing any more): the history still names it.
    const later = [...history, rec2(withDoc(NOW, false, 200))];
    const [b] = detectUnhealthyContainer(withDoc(NOW + S, false, 200, false), later, thresholds, NOW + S);
    expect(b!.evidence.poisonSuspects).toEqual([42]);
    // A later death (a new incarnation) without it: no suspect, so no exemption from the breaker.
    const after = [...later, rec2(withDoc(NOW + 2 * S, true, 300, false))];
    const [c] = detectUnhealthyContainer(withDoc(NOW + 3 * S, false, 300, false), after, thresholds, NOW + 3 * S);
    expect(c!.evidence.poisonSuspects).toBeUndefined();
  });

  it('a restart between two cycles (new start time) while it held the document counts as a death', () => {
    const history = [rec2(withDoc(NOW - 3 * S, true, 100)), rec2(withDoc(NOW - 2 * S, true, 200))];
    const out = detectPoisonDocument(withDoc(NOW, true, 300), history, t3, NOW);
    expect(out).toEqual([]);
    const four = detectPoisonDocument(withDoc(NOW, false, 300), [...history], t3, NOW);
    expect(four[0]?.evidence.crashes).toBe(3);
  });

  it('quiet: one death seen for many cycles is one death', () => {
    const history = Array.from({ length: 10 }, (_, i) => rec2(withDoc(NOW - (10 - i) * S, false, 100)));
    expect(detectPoisonDocument(withDoc(NOW, false, 100), history, t3, NOW)).toEqual([]);
  });

  it('quiet once the document is no longer processing (quarantined)', () => {
    const history = [100, 200, 300].map((st, i) => rec2(withDoc(NOW - (3 - i) * S, false, st)));
    expect(detectPoisonDocument(withDoc(NOW, true, 400, false), history, t3, NOW)).toEqual([]);
  });
});

const health =
  (ok: boolean, extra: Partial<Snapshot> = {}) =>
  (at: number) =>
    snapshot(at, {
      health: [
        ok
          ? { container: 'pipeline-extract-1', url: 'http://127.0.0.1:9101/health', ok, status: 200, latencyMs: 1 }
          : { container: 'pipeline-extract-1', url: 'http://127.0.0.1:9101/health', ok, status: 503, latencyMs: 1 },
      ],
      ...extra,
    });
const rec = (s: Snapshot): CycleRecord => ({ snapshot: s, candidates: [], active: [] });

describe('unhealthy_container (3 failures in a row)', () => {
  run(detectUnhealthyContainer, [
    {
      name: 'fires: third failure in a row',
      snapshot: health(false)(NOW),
      history: [rec(health(true)(NOW - 15 * S)), rec(health(false)(NOW - 10 * S)), rec(health(false)(NOW - 5 * S))],
      fires: ['pipeline-extract-1'],
    },
    {
      name: 'quiet at the boundary: two failures',
      snapshot: health(false)(NOW),
      history: [rec(health(true)(NOW - 10 * S)), rec(health(false)(NOW - 5 * S))],
      fires: [],
    },
    {
      name: 'quiet: a success in between resets the count',
      snapshot: health(false)(NOW),
      history: [rec(health(false)(NOW - 15 * S)), rec(health(true)(NOW - 10 * S)), rec(health(false)(NOW - 5 * S))],
      fires: [],
    },
    {
      name: 'a cycle whose health checks could not run breaks the streak',
      snapshot: health(false)(NOW),
      history: [
        rec(health(false)(NOW - 10 * S)),
        rec(health(false, { sources: { ...snapshot(0).sources, health: { ok: false, error: 'x' } } })(NOW - 5 * S)),
      ],
      fires: [],
    },
    {
      name: 'fires at once: the container is not running',
      snapshot: snapshot(NOW, {
        containers: [{ name: 'pipeline-extract-2', state: 'exited', running: false, restartCount: 1 }],
      }),
      fires: ['pipeline-extract-2'],
    },
    {
      name: 'one anomaly per container, even when both its health and its state are bad',
      snapshot: health(false, {
        containers: [{ name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0 }],
      })(NOW),
      history: [rec(health(false)(NOW - 10 * S)), rec(health(false)(NOW - 5 * S))],
      fires: ['pipeline-extract-1'],
    },
    {
      name: 'fires at once: Docker reports it unhealthy (its HEALTHCHECK), running',
      snapshot: snapshot(NOW, {
        containers: [{ name: 'web-1', state: 'running', running: true, restartCount: 0, health: 'unhealthy' }],
      }),
      fires: ['web-1'],
    },
    {
      name: 'quiet: Docker health starting or healthy',
      snapshot: snapshot(NOW, {
        containers: [
          { name: 'web-1', state: 'running', running: true, restartCount: 0, health: 'starting' },
          { name: 'web-2', state: 'running', running: true, restartCount: 0, health: 'healthy' },
        ],
      }),
      fires: [],
    },
    {
      name: 'quiet: ended cleanly (exit code 0, no OOM kill): finished, or stopped and shut down gracefully',
      snapshot: snapshot(NOW, {
        containers: [
          { name: 'job-1', state: 'exited', running: false, restartCount: 0, exitCode: 0, oomKilled: false },
        ],
      }),
      fires: [],
    },
    {
      name: 'quiet: stopped on purpose (SIGTERM 143, SIGINT 130: docker stop, docker kill -s TERM)',
      snapshot: snapshot(NOW, {
        containers: [
          { name: 'w-1', state: 'exited', running: false, restartCount: 0, exitCode: 143, oomKilled: false },
          { name: 'w-2', state: 'exited', running: false, restartCount: 0, exitCode: 130, oomKilled: false },
        ],
      }),
      fires: [],
    },
    {
      name: 'quiet: stopped on purpose as the event stream told, even with exit code 137 (SIGTERM ignored)',
      snapshot: snapshot(NOW, {
        containers: [
          {
            name: 'w-1',
            state: 'exited',
            running: false,
            restartCount: 0,
            exitCode: 137,
            oomKilled: false,
            stopped: { at: NOW - S, how: 'docker stop' },
          },
        ],
      }),
      fires: [],
    },
    {
      name: 'quiet: a container stopped on purpose is not restarted for its failing health URL either',
      snapshot: health(false, {
        containers: [{ name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0, exitCode: 143 }],
      })(NOW),
      history: [rec(health(false)(NOW - 10 * S)), rec(health(false)(NOW - 5 * S))],
      fires: [],
    },
    {
      name: 'fires: killed by the OOM killer, even with exit code 0',
      snapshot: snapshot(NOW, {
        containers: [{ name: 'job-1', state: 'exited', running: false, restartCount: 0, exitCode: 0, oomKilled: true }],
      }),
      fires: ['job-1'],
    },
  ]);

  it('says how it ended and what the health checks said', () => {
    const [died] = detectUnhealthyContainer(
      snapshot(NOW, {
        containers: [
          { name: 'w-1', state: 'exited', running: false, restartCount: 2, exitCode: 137, oomKilled: false },
        ],
      }),
      [],
      thresholds,
      NOW,
    );
    expect(died!.summary).toBe('w-1: container is exited (died without a stop: exit code 137, signal 9)');
    expect(died!.evidence).toMatchObject({ exitCode: 137, oomKilled: false, restartCount: 2 });
    const healthLog = [
      { exitCode: 1, output: 'ping: timeout', at: NOW - 2 * S },
      { exitCode: 1, output: 'ping: timeout', at: NOW - S },
    ];
    const [unhealthy] = detectUnhealthyContainer(
      snapshot(NOW, {
        containers: [{ name: 'w-2', state: 'running', running: true, restartCount: 0, health: 'unhealthy', healthLog }],
      }),
      [],
      thresholds,
      NOW,
    );
    expect(unhealthy!.summary).toBe('w-2: Docker reports it unhealthy (last check: exit 1, "ping: timeout")');
    expect(unhealthy!.evidence).toMatchObject({ health: 'unhealthy', healthLog });
  });
});

const processing = (docs: { id: number; stage?: string; worker: string | null; ageS: number }[]) =>
  snapshot(NOW, {
    processing: docs.map((d) => ({
      id: d.id,
      stage: d.stage ?? 'extract',
      workerId: d.worker,
      startedAt: NOW - d.ageS * S,
      updatedAt: NOW - d.ageS * S,
    })),
    processingTotal: docs.length,
  });

describe('stuck_documents (threshold 120 s, or owner without heartbeat)', () => {
  run(detectStuckDocuments, [
    {
      name: 'fires: processing for 121 s with a live owner',
      snapshot: processing([{ id: 1, worker: 'extract-1', ageS: 121 }]),
      fires: ['extract'],
    },
    {
      name: 'quiet at the boundary: exactly 120 s',
      snapshot: processing([{ id: 1, worker: 'extract-1', ageS: 120 }]),
      fires: [],
    },
    {
      name: 'fires: owner has no heartbeat, however recent',
      snapshot: processing([{ id: 1, worker: 'dead-7', ageS: 1 }]),
      fires: ['extract'],
    },
    { name: 'fires: no owner at all', snapshot: processing([{ id: 1, worker: null, ageS: 1 }]), fires: ['extract'] },
    {
      name: 'one anomaly per stage',
      snapshot: processing([
        { id: 1, worker: 'dead-7', ageS: 1 },
        { id: 2, worker: 'dead-7', ageS: 1 },
        { id: 3, stage: 'evaluate', worker: 'extract-1', ageS: 500 },
        { id: 4, worker: 'extract-1', ageS: 5 },
      ]),
      fires: ['extract', 'evaluate'],
    },
    { name: 'quiet: healthy processing', snapshot: processing([{ id: 1, worker: 'extract-2', ageS: 3 }]), fires: [] },
  ]);

  it('caps the ids it carries and says so', () => {
    const docs = Array.from({ length: 80 }, (_, i) => ({ id: i + 1, worker: 'dead-1', ageS: 500 }));
    const s = { ...processing(docs), processingTotal: 5000 };
    const [a] = detectStuckDocuments(s, [], thresholds, NOW);
    expect(a!.evidence).toMatchObject({ count: 80, capped: true, deadOwners: ['dead-1'] });
    expect((a!.evidence.documentIds as number[]).length).toBe(50);
    expect(a!.summary).toBe('stuck_documents on extract: 80 documents');
  });
});

describe('stale_locks', () => {
  const locks = (owners: string[]) =>
    snapshot(NOW, {
      staleLocks: owners.map((o, i) => ({ documentId: String(i + 1), owner: o, token: `tok${i}` })),
      staleLockTotal: owners.length,
      locksTotal: owners.length + 5,
    });
  run(detectStaleLocks, [
    {
      name: 'fires: one anomaly per dead owner',
      snapshot: locks(['dead-1', 'dead-1', 'dead-2']),
      fires: ['dead-1', 'dead-2'],
    },
    { name: 'quiet: no stale lock', snapshot: locks([]), fires: [] },
  ]);
});

describe('llm_unavailable', () => {
  run(detectLlmUnavailable, [
    {
      name: 'fires: no answer',
      snapshot: snapshot(NOW, { ollama: { reachable: false, modelPresent: false, error: 'ECONNREFUSED' } }),
      fires: ['ollama'],
    },
    {
      name: 'fires: model missing',
      snapshot: snapshot(NOW, { ollama: { reachable: true, modelPresent: false } }),
      fires: ['ollama'],
    },
    { name: 'quiet: reachable with the model', snapshot: snapshot(NOW), fires: [] },
  ]);
});

describe('monitoring_degraded', () => {
  it('replaces every pipeline anomaly when Redis or Postgres cannot be read', () => {
    const broken = snapshot(NOW, {
      sources: { ...snapshot(0).sources, redis: { ok: false, error: 'connect ECONNREFUSED 127.0.0.1:6379' } },
      // What a failed Redis read looks like: empty queues, no live workers, so everything "looks" stuck.
      liveWorkers: [],
      processing: [
        { id: 1, stage: 'extract', workerId: 'extract-1', startedAt: NOW - 999 * S, updatedAt: NOW - 999 * S },
      ],
      processingTotal: 1,
      containers: [{ name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0 }],
    });
    const out = detectAll(broken, [], thresholds, NOW);
    expect(out.map((a) => `${a.type}:${a.target}`)).toEqual(['monitoring_degraded:redis']);
  });

  it('names both when both are down, and still reports the LLM', () => {
    const broken = snapshot(NOW, {
      sources: {
        ...snapshot(0).sources,
        redis: { ok: false, error: 'down' },
        postgres: { ok: false, error: 'down' },
      },
      ollama: { reachable: false, modelPresent: false },
    });
    expect(
      detectAll(broken, [], thresholds, NOW)
        .map((a) => `${a.type}:${a.target}`)
        .sort(),
    ).toEqual(['llm_unavailable:ollama', 'monitoring_degraded:postgres', 'monitoring_degraded:redis']);
  });

  it('ignores degraded cycles in the history of the pipeline detectors', () => {
    // Three failing health checks, but the middle cycle could not read Redis: not three in a row of usable data.
    const degraded = health(false, { sources: { ...snapshot(0).sources, redis: { ok: false, error: 'x' } } });
    const out = detectAll(
      health(false)(NOW),
      [rec(health(false)(NOW - 10 * S)), rec(degraded(NOW - 5 * S))],
      thresholds,
      NOW,
    );
    expect(out.filter((a) => a.type === 'unhealthy_container')).toEqual([]);
  });
});

/**
 * Noise control, for every detector: a bad snapshot and a good one per type. A candidate must be seen in
 * `fireAfterCycles` consecutive cycles to fire, and an active anomaly must be absent `clearAfterCycles`
 * consecutive cycles to clear.
 */
const scenarios: Record<
  // unhealthy_container has its own rules, below: what Docker reports fires at once.
  Exclude<AnomalyType, 'lost_documents' | 'orphaned_entries' | 'poison_document' | 'unhealthy_container'>,
  { bad: (at: number) => Snapshot; good: (at: number) => Snapshot }
> = {
  // Good: the queue makes progress (without draining), so it is not stalled.
  stalled_queue: { bad: stalled(10, NOW - 3600 * S), good: (at) => stalled(10, at)(at) },
  error_rate_spike: {
    bad: (at) =>
      snapshot(at, { stages: [stage('extract', { windowCompleted: 10, windowFailed: 40 }), stage('evaluate')] }),
    good: (at) => snapshot(at),
  },
  processing_time_anomaly: {
    // The baseline comes from the warm-up cycles (100 ms); bad cycles take 1000 ms.
    bad: (at) => snapshot(at, { stages: [stage('extract', { recentMeanMs: 1000 }), stage('evaluate')] }),
    good: (at) => snapshot(at),
  },
  stuck_documents: {
    bad: (at) =>
      snapshot(at, {
        processing: [
          { id: 9, stage: 'extract', workerId: 'dead-1', startedAt: at - 1000 * S, updatedAt: at - 1000 * S },
        ],
        processingTotal: 1,
      }),
    good: (at) => snapshot(at),
  },
  stale_locks: {
    bad: (at) => snapshot(at, { staleLocks: [{ documentId: '9', owner: 'dead-1', token: 'x' }], staleLockTotal: 1 }),
    good: (at) => snapshot(at),
  },
  llm_unavailable: {
    bad: (at) => snapshot(at, { ollama: { reachable: false, modelPresent: false } }),
    good: (at) => snapshot(at),
  },
  monitoring_degraded: {
    bad: (at) => snapshot(at, { sources: { ...snapshot(0).sources, postgres: { ok: false, error: 'down' } } }),
    good: (at) => snapshot(at),
  },
};

/** Runs cycles 5 s apart, the last one at NOW, after `warmup` good-but-representative cycles; returns per-cycle results. */
function simulate(
  pattern: boolean[],
  sc: { bad: (at: number) => Snapshot; good: (at: number) => Snapshot },
  type: string,
) {
  const step = 5 * S;
  const start = NOW - pattern.length * step;
  // Warm-up: cycles that establish baselines and history coverage, with the anomaly already present in the data
  // where a detector needs history (stalled queue, slowdown) but not counted as candidates.
  const records: CycleRecord[] = history(start, 20, step, (at) =>
    type === 'processing_time_anomaly' ? sc.good(at) : sc.bad(at),
  );
  const results: { active: boolean; fired: boolean; cleared: boolean }[] = [];
  pattern.forEach((isBad, i) => {
    const at = start + (i + 1) * step;
    const snap = isBad ? sc.bad(at) : sc.good(at);
    const r = evaluateCycle(snap, records, thresholds, at);
    const mine = (a: { type: string }) => a.type === type;
    results.push({
      active: r.active.some(mine),
      fired: r.fired.some(mine),
      cleared: r.cleared.some((fp) => fp.startsWith(`${type}:`)),
    });
    records.push({ snapshot: snap, candidates: r.candidates, active: r.active });
  });
  return results;
}

describe.each(Object.entries(scenarios))('noise control: %s', (type, sc) => {
  it('is a candidate in one cycle but fires only on the second consecutive one', () => {
    const r = simulate([true, true, true], sc, type);
    expect(r.map((c) => c.active)).toEqual([false, true, true]);
    expect(r.map((c) => c.fired)).toEqual([false, true, false]);
  });

  it('clears only after three consecutive cycles without it (hysteresis)', () => {
    const r = simulate([true, true, false, false, false, true], sc, type);
    expect(r.map((c) => c.active)).toEqual([false, true, true, true, false, false]);
    expect(r.map((c) => c.cleared)).toEqual([false, false, false, false, true, false]);
  });

  it('never fires while it flaps every other cycle', () => {
    const r = simulate([true, false, true, false, true, false], sc, type);
    expect(r.some((c) => c.active)).toBe(false);
  });

  it('does not clear when it comes back before the clear count', () => {
    const r = simulate([true, true, false, false, true, false, false], sc, type);
    expect(r.map((c) => c.active)).toEqual([false, true, true, true, true, true, true]);
    expect(r.filter((c) => c.fired)).toHaveLength(1);
  });
});

describe('noise control: unhealthy_container', () => {
  const dead = {
    bad: (at: number) =>
      snapshot(at, {
        containers: [{ name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0, exitCode: 137 }],
      }),
    good: (at: number) => snapshot(at),
  };
  const dockerUnhealthy = {
    bad: (at: number) =>
      snapshot(at, {
        containers: [{ name: 'web-1', state: 'running', running: true, restartCount: 0, health: 'unhealthy' as const }],
      }),
    good: (at: number) => snapshot(at),
  };

  it.each([
    ['a dead container', dead],
    ['a Docker-unhealthy container', dockerUnhealthy],
  ])('%s (a fact Docker reports) fires at its first sighting, once', (_what, sc) => {
    const r = simulate([true, true, true], sc, 'unhealthy_container');
    expect(r.map((c) => c.active)).toEqual([true, true, true]);
    expect(r.map((c) => c.fired)).toEqual([true, false, false]);
  });

  it('and clears only after three consecutive cycles without it; back before that, it does not fire again', () => {
    const r = simulate([true, false, false, false, true], dead, 'unhealthy_container');
    expect(r.map((c) => c.active)).toEqual([true, true, true, false, true]);
    expect(r.map((c) => c.cleared)).toEqual([false, false, false, true, false]);
    const back = simulate([true, false, true, false, false], dead, 'unhealthy_container');
    expect(back.map((c) => c.active)).toEqual([true, true, true, true, true]);
    expect(back.filter((c) => c.fired)).toHaveLength(1);
  });

  it('a failing health URL (Docker sees it running) needs its failures, then two consecutive cycles', () => {
    const url = { bad: (at: number) => health(false)(at), good: (at: number) => health(true)(at) };
    const r = simulate([true, true, true], url, 'unhealthy_container');
    expect(r.map((c) => c.active)).toEqual([false, true, true]);
    expect(r.map((c) => c.fired)).toEqual([false, true, false]);
    expect(simulate([true, false, true, false, true], url, 'unhealthy_container').some((c) => c.active)).toBe(false);
  });
});

describe('an outage (blind cycles) does not clear what it cannot see', () => {
  const step = 5 * S;
  const lock = (at: number) =>
    snapshot(at, { staleLocks: [{ documentId: '9', owner: 'dead-1', token: 'x' }], staleLockTotal: 1 });
  const blind = (at: number) =>
    snapshot(at, { sources: { ...snapshot(0).sources, postgres: { ok: false, error: 'down' } } });

  /** Cycles from `kinds` ('lock' present, 'blind' Postgres down, 'gone' absent), 5 s apart. */
  function run(kinds: ('lock' | 'blind' | 'gone')[]) {
    const records: CycleRecord[] = [];
    return kinds.map((k, i) => {
      const at = NOW - (kinds.length - i) * step;
      const snap = k === 'lock' ? lock(at) : k === 'blind' ? blind(at) : snapshot(at);
      const r = evaluateCycle(snap, records, thresholds, at);
      records.push({ snapshot: snap, candidates: r.candidates, active: r.active });
      const mine = (a: { type: string }) => a.type === 'stale_locks';
      return { active: r.active.some(mine), fired: r.fired.some(mine), cleared: r.cleared.length > 0 };
    });
  }

  it('an open anomaly stays open through 6 blind cycles and does not fire again afterwards', () => {
    const r = run(['lock', 'lock', 'blind', 'blind', 'blind', 'blind', 'blind', 'blind', 'lock', 'lock']);
    expect(r.map((c) => c.active)).toEqual([false, true, true, true, true, true, true, true, true, true]);
    expect(r.filter((c) => c.fired)).toHaveLength(1);
  });

  it('after the outage, absence counts again from the first cycle that can see', () => {
    const r = run(['lock', 'lock', 'blind', 'blind', 'blind', 'blind', 'gone', 'gone', 'blind', 'gone']);
    // gone, gone, (blind: neither), gone: the third cycle without it clears it.
    expect(r.map((c) => c.active)).toEqual([false, true, true, true, true, true, true, true, true, false]);
  });
});

describe('fired again after a healing found it gone (monitoring:gone), though it never cleared', () => {
  const step = 2 * S;
  const lock = (at: number) =>
    snapshot(at, { staleLocks: [{ documentId: '9', owner: 'dead-1', token: 'x' }], staleLockTotal: 1 });
  const dead = (at: number) =>
    snapshot(at, {
      containers: [{ name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0, exitCode: 137 }],
    });

  /**
   * Cycles from `kinds` ('bad' present, 'gone' absent), `step` apart; `goneAt` is the index of the cycle at whose time
   * a healing's recheck found it gone (the mark is then spent as the cycle would spend it). Per cycle: fired (first
   * or again), refired, active.
   */
  function run(kinds: ('bad' | 'gone')[], goneAt: number | undefined, bad = lock) {
    const records: CycleRecord[] = [];
    const gone = new Map<string, number>();
    return kinds.map((k, i) => {
      const at = NOW + i * step;
      const snap = k === 'bad' ? bad(at) : snapshot(at);
      const r = evaluateCycle(snap, records, thresholds, at);
      const again = refiredAfterGone(r, records, at, gone, thresholds);
      records.push({ snapshot: snap, candidates: r.candidates, active: r.active });
      for (const a of [...r.fired, ...again]) gone.delete(a.fingerprint);
      for (const fp of gone.keys()) if (!r.active.some((a) => a.fingerprint === fp)) gone.delete(fp);
      // The recheck runs between this cycle and the next, on a snapshot of its own.
      if (i === goneAt) gone.set(r.active[0]?.fingerprint ?? 'stale_locks:dead-1', at + 1);
      return { fired: r.fired.length > 0, refired: again.length > 0, active: r.active.length > 0 };
    });
  }

  it('a fault back before the clear count, after its healing was verified: fires again after two sightings', () => {
    const r = run(['bad', 'bad', 'bad', 'gone', 'bad', 'bad', 'bad', 'bad'], 3);
    expect(r.map((c) => c.active)).toEqual([false, true, true, true, true, true, true, true]);
    expect(r.map((c) => c.fired)).toEqual([false, true, false, false, false, false, false, false]);
    // The sightings at cycles 4 and 5 are after the recheck: cycle 5 fires it again, once.
    expect(r.map((c) => c.refired)).toEqual([false, false, false, false, false, true, false, false]);
  });

  it('seen all along by the cycles, though the recheck found it gone: fires again once seen twice after it', () => {
    const r = run(['bad', 'bad', 'bad', 'bad', 'bad', 'bad'], 2);
    expect(r.map((c) => c.refired)).toEqual([false, false, false, false, true, false]);
  });

  it('without a recheck that found it gone (its healing escalated): a lasting fault fires once', () => {
    const r = run(['bad', 'bad', 'bad', 'gone', 'bad', 'bad', 'bad', 'bad'], undefined);
    expect(r.filter((c) => c.fired || c.refired)).toHaveLength(1);
  });

  it('cleared after the recheck: it fires anew the usual way, not twice', () => {
    const r = run(['bad', 'bad', 'gone', 'gone', 'gone', 'bad', 'bad', 'bad'], 2);
    expect(r.map((c) => c.fired)).toEqual([false, true, false, false, false, false, true, false]);
    expect(r.some((c) => c.refired)).toBe(false);
  });

  it('a sighting before the recheck does not count towards firing again', () => {
    const r = run(['bad', 'bad', 'bad', 'gone', 'bad', 'bad'], 3);
    // Cycle 4 is the first sighting after the mark at cycle 3; a single sighting is not enough.
    expect(r.map((c) => c.refired)).toEqual([false, false, false, false, false, true]);
    const once = run(['bad', 'bad', 'bad', 'bad', 'gone', 'bad'], 3);
    expect(once.some((c) => c.refired)).toBe(false);
  });

  it('a fact Docker reports fires again at its first sighting after the recheck', () => {
    const r = run(['bad', 'bad', 'gone', 'bad', 'bad'], 2, dead);
    expect(r.map((c) => c.fired)).toEqual([true, false, false, false, false]);
    expect(r.map((c) => c.refired)).toEqual([false, false, false, true, false]);
  });
});

describe('lostStill: a lost_documents healing is verified against the documents it was started for', () => {
  const lostAt = (ids: number[], count = ids.length): Anomaly => {
    const lost = [0, ...ids].map((id) => ({ id, stage: 'extract', queuedSince: NOW - 100 * S }));
    const [a] = detectLostDocuments(reconciled({ lost, lostCandidates: count }), [], thresholds, NOW);
    return { ...a!, evidence: { ...a!.evidence, count, documentIds: ids } };
  };

  it('gone when none of the reported documents is lost still, though others are lost since', () => {
    expect(lostStill(lostAt([1, 2, 3]), lostAt([7, 8]))).toBeUndefined();
    expect(lostStill(lostAt([1, 2, 3]), undefined)).toBeUndefined();
  });

  it('still there when one of them is, and the summary says how many', () => {
    const still = lostStill(lostAt([1, 2, 3]), lostAt([3, 7]));
    expect(still?.summary).toBe('extract: 1 of the 3 documents reported lost are in no queue or processing list still');
  });

  it('takes ids as digit strings too; evidence without ids (or with others) counts as still there', () => {
    const asStrings = (a: Anomaly): Anomaly => ({
      ...a,
      evidence: { ...a.evidence, documentIds: (a.evidence.documentIds as number[]).map(String) },
    });
    expect(lostStill(asStrings(lostAt([1, 2])), lostAt([7]))).toBeUndefined();
    expect(lostStill(asStrings(lostAt([1, 2])), lostAt([2, 7]))).toBeDefined();
    expect(lostStill(lostAt([]), lostAt([7]))).toBeDefined();
    const odd = lostAt([1]);
    expect(lostStill({ ...odd, evidence: { ...odd.evidence, documentIds: ['x'] } }, lostAt([7]))).toBeDefined();
  });

  it('still there when either list was cut short: which documents are new cannot be told', () => {
    expect(lostStill(lostAt([1, 2], 1_500), lostAt([7]))).toBeDefined();
    expect(lostStill(lostAt([1, 2]), lostAt([7], 1_500))).toBeDefined();
  });
});

describe('applyHysteresis with fireAfterCycles = 1', () => {
  it('fires at once', () => {
    const a = detectLlmUnavailable(
      snapshot(NOW, { ollama: { reachable: false, modelPresent: false } }),
      [],
      thresholds,
      NOW,
    );
    expect(applyHysteresis(a, [], { ...thresholds, fireAfterCycles: 1 }).fired).toHaveLength(1);
  });
});

describe('recorded fixtures (tests/fixtures/detectors)', () => {
  const dir = path.join(__dirname, '../fixtures/detectors');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  it('has fixtures', () => expect(files.length).toBeGreaterThan(0));
  it.each(files)('%s', (file) => {
    const f = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as {
      now: number;
      thresholds?: Partial<Thresholds>;
      snapshot: Snapshot;
      history: CycleRecord[];
      expect: string[];
    };
    const out = detectAll(f.snapshot, f.history, { ...thresholds, ...f.thresholds }, f.now);
    expect(out.map((a) => `${a.type}:${a.target}`).sort()).toEqual([...f.expect].sort());
  });
});

describe('isHealthyStatus: what a health check accepts', () => {
  it.each([
    [200, true],
    [201, true],
    [204, true],
    [299, true],
    [0, false],
    [199, false],
    [301, false],
    [404, false],
    [500, false],
    [503, false],
    [200.5, false],
    [Number.NaN, false],
  ])('%s -> %s', (status, healthy) => {
    expect(isHealthyStatus(status)).toBe(healthy);
  });
});

describe('silently hung workers: each one, told from an idle one by a backlog its peers work through', () => {
  const WINDOW = thresholds.queueStallSeconds * S;
  const STARTED = NOW - 10 * 60 * S;
  /** Stage extract with workers x-1..x-3 (containers of the same names); `rows` their outcomes in the window. */
  const cycle =
    (
      rows: WorkerWindow[],
      over: { depth?: number; startedAt?: Record<string, number>; processing?: Snapshot['processing'] } = {},
    ) =>
    (at: number) =>
      snapshot(at, {
        stages: [
          stage('extract', { queueDepth: over.depth ?? 40, workers: rows.filter((r) => r.completed + r.failed > 0) }),
          stage('evaluate'),
        ],
        containers: ['x-1', 'x-2', 'x-3'].map((name) => ({
          name,
          state: 'running',
          running: true,
          restartCount: 0,
          stage: 'extract',
          startedAt: over.startedAt?.[name] ?? STARTED,
        })),
        processing: over.processing ?? [],
        processingTotal: over.processing?.length ?? 0,
        health: [],
        outcomes: 'document_events',
        liveWorkers: ['x-1', 'x-2', 'x-3'],
      });
  const oneHung = cycle([w('x-1', 30, 0), w('x-2', 0, 0), w('x-3', 28, 1)]);
  const twoHung = cycle([w('x-1', 30, 0), w('x-2', 0, 0), w('x-3', 0, 0)]);
  const covering = (make: (at: number) => Snapshot) => history(NOW, 14, 5 * S, make);

  run(detectUnhealthyContainer, [
    {
      name: 'fires: x-2 finished nothing for the whole window',
      snapshot: oneHung(NOW),
      history: covering(oneHung),
      fires: ['x-2'],
    },
    {
      name: 'fires for each: x-2 and x-3 both hung while x-1 works',
      snapshot: twoHung(NOW),
      history: covering(twoHung),
      fires: ['x-2', 'x-3'],
    },
    {
      name: 'quiet: the history does not cover the window yet',
      snapshot: oneHung(NOW),
      history: history(NOW, 5, 5 * S, oneHung),
      fires: [],
    },
    {
      name: 'quiet: the queue was empty in one cycle of the window (an idle worker is not hung)',
      snapshot: oneHung(NOW),
      history: [
        ...covering(oneHung).slice(0, 10),
        { snapshot: cycle([w('x-1', 30, 0), w('x-3', 28, 1)], { depth: 0 })(NOW - 15 * S), candidates: [], active: [] },
      ],
      fires: [],
    },
    {
      name: 'quiet: x-2 finished one document within the window',
      snapshot: oneHung(NOW),
      history: [
        ...covering(oneHung).slice(0, 12),
        {
          snapshot: cycle([w('x-1', 30, 0), w('x-2', 1, 0), w('x-3', 28, 1)])(NOW - 5 * S),
          candidates: [],
          active: [],
        },
      ],
      fires: [],
    },
    {
      name: 'quiet: x-2 holds a document (slow, or a stuck document: another detector)',
      snapshot: cycle([w('x-1', 30, 0), w('x-3', 28, 1)], {
        processing: [{ id: 7, stage: 'extract', workerId: 'x-2', startedAt: NOW - 50 * S, updatedAt: NOW - 50 * S }],
      })(NOW),
      history: covering(oneHung),
      fires: [],
    },
    {
      name: 'quiet: the processing list is capped and cannot say what x-2 holds',
      snapshot: cycle([w('x-1', 30, 0), w('x-3', 28, 1)], {
        processing: [{ id: 7, stage: 'extract', workerId: 'x-1', startedAt: NOW - 1 * S, updatedAt: NOW - 1 * S }],
      })(NOW),
      history: covering((at) => ({ ...oneHung(at), processingTotal: 60 })),
      fires: [],
    },
    {
      name: 'quiet: x-2 started within the window (still starting, or just restarted)',
      snapshot: cycle([w('x-1', 30, 0), w('x-3', 28, 1)], { startedAt: { 'x-2': NOW - WINDOW + S } })(NOW),
      history: covering(oneHung),
      fires: [],
    },
    {
      name: 'quiet: worker ids are not container names (no heartbeat under the name): nothing tells it is idle',
      snapshot: { ...oneHung(NOW), liveWorkers: ['w-1', 'w-2', 'w-3'] },
      history: covering(oneHung),
      fires: [],
    },
    {
      name: 'quiet: a paused container (an operator paused it)',
      snapshot: {
        ...oneHung(NOW),
        containers: oneHung(NOW).containers.map((c) => (c.name === 'x-2' ? { ...c, state: 'paused' } : c)),
      },
      history: covering(oneHung),
      fires: [],
    },
    {
      name: 'quiet: outcomes read from documents alone (a completion may carry no worker id)',
      snapshot: { ...oneHung(NOW), outcomes: 'documents' },
      history: covering(oneHung),
      fires: [],
    },
    {
      name: 'quiet: a gap in the history longer than the outcome window (blind or missing cycles)',
      snapshot: oneHung(NOW),
      history: [{ snapshot: oneHung(NOW - 10 * 60 * S), candidates: [], active: [] }],
      fires: [],
    },
    {
      name: 'quiet: no peer finished anything (every worker stuck: the stalled queue says so, once)',
      snapshot: cycle([])(NOW),
      history: covering(cycle([])),
      fires: [],
    },
  ]);

  it('says it is hung behind a working health check, and its plan restarts it while it looks healthy', () => {
    const [a] = detectUnhealthyContainer(oneHung(NOW), covering(oneHung), thresholds, NOW);
    expect(a!.evidence).toMatchObject({ source: 'progress', stage: 'extract', worker: 'x-2', queueDepth: 40 });
    // 60 s of cycles, each with no outcome of it in its own 30 s window.
    expect(a!.summary).toMatch(/x-2: took and finished no document for 90 s while queue:extract held 40/);
    const plan = runbookPlan(a!, 0, { containers: ['x-1', 'x-2', 'x-3'] });
    expect(plan.action).toBe('restart_worker');
    expect(plan.params).toEqual({ container: 'x-2', hung: true });
    expect(healthDecides(plan)).toBe(false);
    // A dead container's plan is decided by its health, as before.
    const [dead] = detectUnhealthyContainer(
      snapshot(NOW, { containers: [{ name: 'x-9', state: 'exited', running: false, restartCount: 0, exitCode: 1 }] }),
      [],
      thresholds,
      NOW,
    );
    expect(healthDecides(runbookPlan(dead!, 0, { containers: ['x-9'] }))).toBe(true);
  });

  it('still hung, from a fresh snapshot: until it shows progress; after a restart, only with a backlog and no progress', () => {
    const [a] = detectUnhealthyContainer(oneHung(NOW), covering(oneHung), thresholds, NOW);
    const later = NOW + 10 * S;
    // Not restarted: no outcome and nothing held, whatever the queue.
    expect(stillHung(oneHung(later), a!)).toBe(true);
    expect(stillHung(cycle([w('x-1', 30, 0)], { depth: 0 })(later), a!)).toBe(true);
    // It finished something, or holds a document: it works.
    expect(stillHung(cycle([w('x-1', 30, 0), w('x-2', 1, 0)])(later), a!)).toBe(false);
    const holding = [{ id: 9, stage: 'extract', workerId: 'x-2', startedAt: later, updatedAt: later }];
    expect(stillHung(cycle([w('x-1', 30, 0)], { processing: holding })(later), a!)).toBe(false);
    // Restarted since: hung again only with a backlog it does not touch.
    const restarted = { startedAt: { 'x-2': NOW + 2 * S } };
    expect(stillHung(cycle([w('x-1', 30, 0)], restarted)(later), a!)).toBe(true);
    expect(stillHung(cycle([w('x-1', 30, 0)], { ...restarted, depth: 0 })(later), a!)).toBe(false);
    expect(stillHung(cycle([w('x-1', 30, 0), w('x-2', 3, 0)], restarted)(later), a!)).toBe(false);
  });

  it('a Docker-unhealthy or health-URL-failing container is reported once, for its health', () => {
    const s = oneHung(NOW);
    s.containers = s.containers.map((c) => (c.name === 'x-2' ? { ...c, health: 'unhealthy' } : c));
    const out = detectUnhealthyContainer(s, covering(oneHung), thresholds, NOW);
    expect(out.map((a) => [a.target, a.evidence.source])).toEqual([['x-2', 'docker']]);
  });
});
