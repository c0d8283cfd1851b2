/**
 * detectAnomalies: runs the pure detectors over the snapshot and the history kept in the Redis stream
 * `monitoring:metrics`, appends this cycle's record to it (trimmed by age), and appends every anomaly that fired
 * to `monitoring:alerts` for other consumers. recheckAnomaly re-runs them for a healing; when the verification after
 * an action finds the anomaly gone it says so in `monitoring:gone`, so that a cycle that sees it again fires it again
 * (`refiredAfterGone`).
 */
import type { Redis } from 'ioredis';
import { defineScript } from '../core/redis-script';
import {
  detectAll,
  evaluateCycle,
  lostStill,
  PROGRESS_SOURCE,
  refiredAfterGone,
  sourcesToVerify,
  stillHung,
  suspectsStillOutliers,
  type HysteresisResult,
  type Thresholds,
} from '../core/detectors';
import type { Keys } from '../core/keys';
import type { CycleRecord, Snapshot } from '../core/snapshot';
import type { Anomaly } from '../core/types';
import { latestCycleRecords } from './metrics-stream';

export interface DetectionDeps {
  redis: Redis;
  keys: Keys;
  /** s of history kept in the stream. */
  retentionSeconds: number;
  /** Records read back per cycle (covers the longest threshold at the configured interval). */
  historyLimit: number;
  /** s between cycles (MONITOR_INTERVAL): how recent the records this process remembers must be to stand in. */
  intervalSeconds: number;
}

export interface DetectInput {
  snapshot: Snapshot;
  thresholds: Thresholds;
  /** Wall time of the whole cycle so far, ms (recorded with the snapshot). */
  cycleStartedAt: number;
}

export type DetectResult = HysteresisResult & {
  candidates: Anomaly[];
  historyFrom: 'redis' | 'memory';
  /**
   * The anomalies of `fired` fired again after a recheck found them gone, with the mark that did it. The monitoring
   * cycle spends a mark (`spendGoneMarks`) once it started a healing for it: a start that found the last run still
   * open (it was ending) leaves the mark, so the next cycle fires it again.
   */
  refired?: GoneMark[];
};

/** A mark of `monitoring:gone`: when a healing's recheck found the anomaly of `fingerprint` gone (epoch ms). */
export interface GoneMark {
  fingerprint: string;
  goneAt: number;
}

/** Deletes each field of the hash KEYS[1] named in ARGV[odd] whose value is still ARGV[even]; the count deleted. */
const DELETE_IF_UNCHANGED = `local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n`;

/** Sets each field ARGV[odd] of the hash KEYS[1] to ARGV[even] unless it holds a larger number; the count set. */
const SET_IF_NEWER = `local n = 0
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if cur == nil or cur < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n`;

const ALERTS_MAXLEN = 10_000;

/** When the newest of `records` was taken (epoch ms); -Infinity for none. */
const newestAt = (records: CycleRecord[]): number => records.at(-1)?.snapshot.at ?? Number.NEGATIVE_INFINITY;

export function createDetectionActivities(deps: DetectionDeps) {
  const { redis, keys } = deps;
  // When Redis cannot be read, or the stream lost what this process wrote to it, the last records this process
  // wrote stand in for the stream, so noise control still counts consecutive cycles.
  let memory: CycleRecord[] = [];

  /**
   * The history for a snapshot taken at `at`: the stream's, or what this process remembers when Redis cannot be read
   * or the stream lost the records this process wrote (a flush of the pipeline's Redis, a Redis restart without
   * persistence). Read as it was, the emptied stream made every lasting anomaly fire again as new, a dead container
   * a human had been asked about included, and its new healing restarted it. Another monitor's newer record in the
   * stream is no loss (the stream wins), and a memory older than `clearAfterCycles` + 1 intervals before `at` is not
   * used: what it had active may have cleared since, in cycles another monitor ran or while the Schedule was paused.
   */
  const historyAt = async (
    at: number,
    t: Thresholds,
  ): Promise<{ history: CycleRecord[]; from: 'redis' | 'memory' }> => {
    let history: CycleRecord[];
    try {
      history = await latestCycleRecords(redis, keys, deps.historyLimit);
    } catch {
      return { history: memory, from: 'memory' };
    }
    const fresh = at - newestAt(memory) <= (t.clearAfterCycles + 1) * deps.intervalSeconds * 1000;
    return fresh && newestAt(memory) > newestAt(history)
      ? { history: memory, from: 'memory' }
      : { history, from: 'redis' };
  };
  // The gone marks as this process last read or wrote them, and when (the snapshot time of that cycle or recheck):
  // they stand in for marks a flush took (see readGone).
  let goneMemory = new Map<string, number>();
  let goneMemoryAt = Number.NEGATIVE_INFINITY;

  /** Deletes marks, each only if no recheck wrote a newer one since it was read. */
  const deleteMarks = async (marks: GoneMark[]): Promise<void> => {
    for (const m of marks) if (goneMemory.get(m.fingerprint) === m.goneAt) goneMemory.delete(m.fingerprint);
    if (marks.length === 0) return;
    await defineScript(
      redis,
      'selfhealDeleteGoneMarks',
      DELETE_IF_UNCHANGED,
    )(
      [keys.monitoringGone()],
      marks.flatMap((m) => [m.fingerprint, String(m.goneAt)]),
    );
  };
  /**
   * `monitoring:gone`: when a healing's recheck last found each anomaly gone, for a cycle whose snapshot was taken at
   * `at`. This process keeps a copy of what it last read or wrote. When it is recent (as recent as `historyAt` asks of
   * the records it remembers), it stands in when Redis cannot be read, and when the stream lost this process's
   * records (`lost`: a flush of the pipeline's Redis, which takes the marks too): then the marks Redis lost are
   * written back (each unless a newer one is there), so that a fault back after its remedy still fires again.
   * Otherwise Redis's marks are the truth and the copy follows them: a mark another monitor spent is not brought
   * back, unless that monitor spent it after this one's last read and a flush followed (several monitors only).
   */
  const readGone = async (at: number, t: Thresholds, lost: boolean): Promise<Map<string, number>> => {
    const fresh = at - goneMemoryAt <= (t.clearAfterCycles + 1) * deps.intervalSeconds * 1000;
    const before = new Map(goneMemory);
    let stored: Record<string, string>;
    try {
      stored = await redis.hgetall(keys.monitoringGone());
    } catch {
      return fresh ? new Map(goneMemory) : new Map();
    }
    const marks = new Map(
      Object.entries(stored)
        .map(([fp, markedAt]) => [fp, Number(markedAt)] as const)
        .filter(([, markedAt]) => Number.isFinite(markedAt)),
    );
    const newer = ([fp, markedAt]: [string, number]) => (marks.get(fp) ?? Number.NEGATIVE_INFINITY) < markedAt;
    if (lost && fresh) {
      const restored = [...before].filter(newer);
      for (const [fp, markedAt] of restored) marks.set(fp, markedAt);
      if (restored.length > 0) {
        await defineScript(
          redis,
          'selfhealSetGoneMarksIfNewer',
          SET_IF_NEWER,
        )(
          [keys.monitoringGone()],
          restored.flatMap(([fp, markedAt]) => [fp, String(markedAt)]),
        ).catch(() => 0);
      }
    }
    // A recheck of this process may have written a mark while Redis was read: it is kept.
    const next = new Map(marks);
    for (const [fp, markedAt] of goneMemory)
      if (before.get(fp) !== markedAt && newer([fp, markedAt])) next.set(fp, markedAt);
    goneMemory = next;
    goneMemoryAt = Math.max(goneMemoryAt, at);
    return marks;
  };

  return {
    /**
     * Verification: runs the same detectors over a fresh snapshot and the stored history (no noise control) and tells
     * whether the anomaly is still there. Writes nothing but the `monitoring:gone` mark (`markGone`).
     */
    async recheckAnomaly(input: {
      anomaly: Anomaly;
      snapshot: Snapshot;
      thresholds: Thresholds;
      /** The verification after an executed action: when it finds the anomaly gone, it says so in `monitoring:gone`. */
      markGone?: boolean;
    }): Promise<{
      present: boolean;
      current?: Anomaly;
      degraded: string[];
    }> {
      const { history } = await historyAt(input.snapshot.at, input.thresholds);
      let found = detectAll(input.snapshot, history, input.thresholds, input.snapshot.at).find(
        (a) => a.fingerprint === input.anomaly.fingerprint,
      );
      // Lost documents: the ones reported; those lost since are a new occurrence (fired again by the cycle).
      if (input.anomaly.type === 'lost_documents') found = lostStill(input.anomaly, found);
      // A hung worker is checked for progress: the detector leaves a worker alone for a while after it (re)starts.
      if (!found && input.anomaly.evidence.source === PROGRESS_SOURCE && stillHung(input.snapshot, input.anomaly)) {
        found = {
          ...input.anomaly,
          summary: `${input.anomaly.target}: still takes and finishes no document`,
          detectedAt: input.snapshot.at,
        };
      }
      // A suspect worker is checked on its own: the detector waits again whenever one cycle breaks its streak.
      const outliers = found ? [] : suspectsStillOutliers(input.anomaly, input.snapshot, history, input.thresholds);
      if (outliers.length > 0) {
        found = {
          ...input.anomaly,
          summary: `${input.anomaly.target}: ${outliers.join(', ')} still the outlier`,
          detectedAt: input.snapshot.at,
        };
      }
      const degraded = Object.entries(input.snapshot.sources)
        .filter(([, st]) => !st.ok)
        .map(([name]) => name);
      // Gone after an action, as far as the sources it needs tell: a cycle that sees it again after this fires it
      // again. Only after an action: a fault that went away by itself and is back is flapping, and waits to clear.
      if (input.markGone && !found && !sourcesToVerify(input.anomaly.type).some((s) => degraded.includes(s))) {
        goneMemory.set(input.anomaly.fingerprint, input.snapshot.at);
        goneMemoryAt = Math.max(goneMemoryAt, input.snapshot.at);
        await redis.hset(keys.monitoringGone(), input.anomaly.fingerprint, String(input.snapshot.at)).catch(() => 0);
      }
      return { present: found !== undefined, current: found, degraded };
    },

    async detectAnomalies(input: DetectInput): Promise<DetectResult> {
      const { snapshot, thresholds } = input;
      const { history, from: historyFrom } = await historyAt(snapshot.at, thresholds);
      const evaluated = evaluateCycle(snapshot, history, thresholds, snapshot.at);
      const gone = await readGone(snapshot.at, thresholds, historyFrom === 'memory');
      const again = refiredAfterGone(evaluated, history, snapshot.at, gone, thresholds);
      const result = { ...evaluated, fired: [...evaluated.fired, ...again] };
      const refired = again.map((a) => ({ fingerprint: a.fingerprint, goneAt: gone.get(a.fingerprint)! }));
      // A mark is of no use once its anomaly is not active (it fires anew then) or fired anew in this cycle.
      const active = new Set(result.active.map((a) => a.fingerprint));
      const firstFired = new Set(evaluated.fired.map((a) => a.fingerprint));
      const useless = [...gone]
        .filter(([fp]) => firstFired.has(fp) || !active.has(fp))
        .map(([fingerprint, goneAt]) => ({ fingerprint, goneAt }));
      const record: CycleRecord = {
        snapshot,
        candidates: result.candidates,
        active: result.active,
        cycleMs: Math.max(0, Date.now() - input.cycleStartedAt),
      };
      memory = [...history, record].slice(-deps.historyLimit);
      try {
        const minId = Math.max(0, snapshot.at - deps.retentionSeconds * 1000);
        const pipe = redis.pipeline();
        pipe.xadd(keys.metricsStream(), 'MINID', '~', String(minId), '*', 'record', JSON.stringify(record));
        for (const a of result.fired) {
          pipe.xadd(keys.alertsStream(), 'MAXLEN', '~', String(ALERTS_MAXLEN), '*', 'anomaly', JSON.stringify(a));
        }
        await pipe.exec();
        await deleteMarks(useless);
      } catch {
        // Redis down: the record lives in memory until it is back; the cycle goes on.
      }
      return { ...result, historyFrom, ...(refired.length > 0 ? { refired } : {}) };
    },

    /** The marks of the anomalies a cycle fired again and started a healing for (each unless rewritten since). */
    async spendGoneMarks(marks: GoneMark[]): Promise<void> {
      await deleteMarks(marks);
    },
  };
}
