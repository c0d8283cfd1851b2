/** What every detector shares: the thresholds, the detector signature, evidence caps and the anomaly builder. */
import { sanitizeTargetPart } from '../ids';
import type { CycleRecord, Snapshot } from '../snapshot';
import type { Anomaly, AnomalyType, Severity } from '../types';

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

/** The sources a verification of an anomaly of `type` needs read: a container's anomaly needs Docker's view too. */
export function sourcesToVerify(type: string): string[] {
  return type === 'unhealthy_container' ? ['redis', 'postgres', 'docker'] : ['redis', 'postgres'];
}

export type Detector = (snapshot: Snapshot, history: CycleRecord[], t: Thresholds, now: number) => Anomaly[];

/** Capped id lists in evidence keep anomalies (and workflow inputs) small. */
export const EVIDENCE_ID_CAP = 50;
/**
 * Stale locks an anomaly carries as evidence (and one clear_stale_locks clears): as many as a snapshot carries, so that
 * one healing clears every observed lock of a dead owner, not 50 of its 200.
 */
export const LOCK_EVIDENCE_CAP = 200;

export function anomaly(
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

/** `items` grouped by `key`, groups and their items in the order first seen. */
export function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    groups.set(k, [...(groups.get(k) ?? []), item]);
  }
  return groups;
}
