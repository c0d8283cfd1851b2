/** One monitoring cycle: every detector over a snapshot (`detectAll`), then noise control (`applyHysteresis`). */
import { anomaly, type Detector, type Thresholds } from './common';
import { DOCKER_SOURCE, detectLlmUnavailable, detectUnhealthyContainer } from './containers';
import { detectLostDocuments, detectPoisonDocument, detectStaleLocks, detectStuckDocuments } from './documents';
import { detectOrphanedEntries, detectStalledQueue } from './queues';
import { detectErrorRateSpike, detectProcessingTimeAnomaly } from './rates';
import type { CycleRecord, Snapshot } from '../snapshot';
import type { Anomaly } from '../types';

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

/**
 * Whether `a`, a candidate of this cycle, was also one in the cycles before it that a firing needs: ANOMALY_FIRE_CYCLES
 * in a row, counting this one, each of them after `after` (epoch ms). What Docker reports (a dead container, a failing
 * HEALTHCHECK) is a fact, debounced by Docker's own retries: it fires at once, so an event-triggered cycle acts on it
 * without waiting for the next ones.
 */
function seenLongEnough(a: Anomaly, history: CycleRecord[], t: Thresholds, after = Number.NEGATIVE_INFINITY): boolean {
  const needed = a.evidence.source === DOCKER_SOURCE ? 1 : t.fireAfterCycles;
  let streak = 1;
  for (let i = history.length - 1; i >= 0 && streak < needed; i--) {
    const r = history[i]!;
    if (r.snapshot.at <= after || !r.candidates.some((c) => c.fingerprint === a.fingerprint)) break;
    streak++;
  }
  return streak >= needed;
}

export interface HysteresisResult {
  /** Open anomalies after noise control. */
  active: Anomaly[];
  /**
   * The subset of `active` that fired in this cycle: not active in the previous one (and, in what `detectAnomalies`
   * returns, those fired again by `refiredAfterGone`).
   */
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
    if (seenLongEnough(a, history, t)) {
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

/**
 * Anomalies that fire again although they never cleared: a healing's verification after its action found each gone
 * at `gone.get(fingerprint)` (epoch ms, `monitoring:gone`), and the
 * detector has seen it since in this cycle and in the cycles before it that noise control asks of a firing
 * (`fireAfterCycles`, one for Docker's facts), every one after that recheck. Without this, a fault that came back
 * within ANOMALY_CLEAR_CYCLES of being healed never cleared, so never fired again, and no healing was started for it:
 * lost documents stayed lost. An anomaly whose healing escalated was never found gone, so it is still not fired again
 * (no restart loops on a lasting fault).
 */
export function refiredAfterGone(
  result: Pick<HysteresisResult, 'active' | 'fired'> & { candidates: Anomaly[] },
  history: CycleRecord[],
  snapshotAt: number,
  gone: ReadonlyMap<string, number>,
  t: Thresholds,
): Anomaly[] {
  const firing = new Set(result.fired.map((a) => a.fingerprint));
  const seenNow = new Set(result.candidates.map((a) => a.fingerprint));
  return result.active.filter((a) => {
    const goneAt = gone.get(a.fingerprint);
    if (goneAt === undefined || firing.has(a.fingerprint) || !seenNow.has(a.fingerprint) || snapshotAt <= goneAt) {
      return false;
    }
    return seenLongEnough(a, history, t, goneAt);
  });
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
