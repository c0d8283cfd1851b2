/**
 * detectAnomalies: runs the pure detectors over the snapshot and the history kept in the Redis stream
 * `monitoring:metrics`, appends this cycle's record to it (trimmed by age), and appends every anomaly that fired
 * to `monitoring:alerts` for other consumers. recheckAnomaly re-runs them for a healing; when it finds the anomaly
 * gone it says so in `monitoring:gone`, so that a cycle that sees it again fires it again (`refiredAfterGone`).
 */
import type { Redis } from 'ioredis';
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
}

export interface DetectInput {
  snapshot: Snapshot;
  thresholds: Thresholds;
  /** Wall time of the whole cycle so far, ms (recorded with the snapshot). */
  cycleStartedAt: number;
}

export type DetectResult = HysteresisResult & { candidates: Anomaly[]; historyFrom: 'redis' | 'memory' };

const ALERTS_MAXLEN = 10_000;

export function createDetectionActivities(deps: DetectionDeps) {
  const { redis, keys } = deps;
  // When Redis cannot be read, the last records this process wrote stand in for the stream, so noise control
  // still counts consecutive degraded cycles.
  let memory: CycleRecord[] = [];

  const readHistory = () => latestCycleRecords(redis, keys, deps.historyLimit);
  /** `monitoring:gone`: when a healing's recheck last found each anomaly gone (none when Redis cannot be read). */
  const readGone = async (): Promise<Map<string, number>> => {
    const marks = await redis.hgetall(keys.monitoringGone()).catch((): Record<string, string> => ({}));
    return new Map(
      Object.entries(marks)
        .map(([fp, at]) => [fp, Number(at)] as const)
        .filter(([, at]) => Number.isFinite(at)),
    );
  };

  return {
    /**
     * Verification: runs the same detectors over a fresh snapshot and the stored history (no noise control, nothing
     * written) and tells whether the anomaly is still there.
     */
    async recheckAnomaly(input: { anomaly: Anomaly; snapshot: Snapshot; thresholds: Thresholds }): Promise<{
      present: boolean;
      current?: Anomaly;
      degraded: string[];
    }> {
      let history: CycleRecord[];
      try {
        history = await readHistory();
      } catch {
        history = memory;
      }
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
      // Gone, as far as the sources it needs tell: a cycle that sees it again after this fires it again.
      if (!found && !sourcesToVerify(input.anomaly.type).some((s) => degraded.includes(s))) {
        await redis.hset(keys.monitoringGone(), input.anomaly.fingerprint, String(input.snapshot.at)).catch(() => 0);
      }
      return { present: found !== undefined, current: found, degraded };
    },

    async detectAnomalies(input: DetectInput): Promise<DetectResult> {
      const { snapshot, thresholds } = input;
      let history: CycleRecord[];
      let historyFrom: DetectResult['historyFrom'] = 'redis';
      try {
        history = await readHistory();
      } catch {
        history = memory;
        historyFrom = 'memory';
      }
      const evaluated = evaluateCycle(snapshot, history, thresholds, snapshot.at);
      const gone = await readGone();
      const refired = refiredAfterGone(evaluated, history, snapshot.at, gone, thresholds);
      const result = { ...evaluated, fired: [...evaluated.fired, ...refired] };
      // A mark is spent once its anomaly fires (again) and of no use once it is not active (it fires anew then).
      const active = new Set(result.active.map((a) => a.fingerprint));
      const firing = new Set(result.fired.map((a) => a.fingerprint));
      const spent = [...gone.keys()].filter((fp) => firing.has(fp) || !active.has(fp));
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
        if (spent.length > 0) pipe.hdel(keys.monitoringGone(), ...spent);
        await pipe.exec();
      } catch {
        // Redis down: the record lives in memory until it is back; the cycle goes on.
      }
      return { ...result, historyFrom };
    },
  };
}
