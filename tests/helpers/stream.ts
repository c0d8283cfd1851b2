import type { Redis } from 'ioredis';
import { parseRecord } from '../../activities/metrics-stream';
import type { Keys } from '../../core/keys';
import type { CycleRecord } from '../../core/snapshot';

/** Cycle records of the stream `monitoring:metrics` written since `sinceMs` (epoch ms), oldest first. */
export async function cycleRecords(redis: Redis, keys: Keys, sinceMs = 0): Promise<CycleRecord[]> {
  const entries = await redis.xrange(keys.metricsStream(), String(sinceMs), '+');
  return entries.map(([, f]) => parseRecord(f)).filter((r): r is CycleRecord => r !== undefined);
}
