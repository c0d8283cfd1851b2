/** Builders of detector inputs for unit tests: a healthy snapshot, and cycle records around it. */
import type { Thresholds } from '../../core/detectors';
import type { CycleRecord, Snapshot, StageMetrics } from '../../core/snapshot';

export const T0 = 1_800_000_000_000;

export const thresholds: Thresholds = {
  queueStallSeconds: 60,
  errorRateThreshold: 0.2,
  errorRateMinSamples: 20,
  errorRateWindowSeconds: 30,
  slowdownFactor: 3,
  slowdownMinSamples: 5,
  stuckDocumentSeconds: 120,
  healthFailuresBeforeUnhealthy: 3,
  fireAfterCycles: 2,
  clearAfterCycles: 3,
};

export function stage(name: string, over: Partial<StageMetrics> = {}): StageMetrics {
  return {
    stage: name,
    queueDepth: 0,
    processingDepth: 0,
    counts: { queued: 0, processing: 0, completed: 100, failed: 0, dead: 0 },
    windowCompleted: 50,
    windowFailed: 0,
    recentMeanMs: 100,
    recentSamples: 50,
    lastProgressAt: T0 - 1_000,
    ...over,
  };
}

export function snapshot(at: number, over: Partial<Snapshot> = {}): Snapshot {
  return {
    at,
    durationMs: 20,
    sources: {
      redis: { ok: true },
      postgres: { ok: true },
      health: { ok: true },
      docker: { ok: true },
      ollama: { ok: true },
    },
    stages: [stage('extract', { lastProgressAt: at - 1_000 }), stage('evaluate', { lastProgressAt: at - 1_000 })],
    processing: [],
    processingTotal: 0,
    staleLocks: [],
    staleLockTotal: 0,
    locksTotal: 0,
    liveWorkers: ['extract-1', 'extract-2', 'evaluate-1'],
    health: [
      { container: 'pipeline-extract-1', url: 'http://127.0.0.1:9101/health', ok: true, status: 200, latencyMs: 2 },
    ],
    containers: [{ name: 'pipeline-extract-1', state: 'running', running: true, restartCount: 0 }],
    ollama: { reachable: true, modelPresent: true },
    ...over,
  };
}

/** Cycle records every `intervalMs` before `now`, oldest first, built by `make(at)`, with no anomalies. */
export function history(now: number, count: number, intervalMs: number, make: (at: number) => Snapshot): CycleRecord[] {
  const out: CycleRecord[] = [];
  for (let i = count; i >= 1; i--) {
    out.push({ snapshot: make(now - i * intervalMs), candidates: [], active: [] });
  }
  return out;
}
