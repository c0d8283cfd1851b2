/**
 * The `monitoring:metrics` stream, read one way: each entry holds one cycle's record (field `record`, JSON) written
 * by `detectAnomalies`. Readers: detection (the history for noise control), safety (the latest cycle's containers),
 * the metrics server (new cycles since the last scrape) and `selfheal status` (the latest cycle).
 */
import type { Redis } from 'ioredis';
import type { Keys } from '../core/keys';
import type { CycleRecord } from '../core/snapshot';

/** The record of one stream entry's fields, or undefined when it has none or it is not JSON. */
export function parseRecord(fields: string[]): CycleRecord | undefined {
  const i = fields.indexOf('record');
  if (i < 0 || fields[i + 1] === undefined) return undefined;
  try {
    return JSON.parse(fields[i + 1]!) as CycleRecord;
  } catch {
    return undefined;
  }
}

/** The latest `count` records, oldest first (unreadable entries skipped). */
export async function latestCycleRecords(redis: Redis, keys: Keys, count: number): Promise<CycleRecord[]> {
  const entries = await redis.xrevrange(keys.metricsStream(), '+', '-', 'COUNT', count);
  return entries
    .map(([, fields]) => parseRecord(fields))
    .filter((r): r is CycleRecord => r !== undefined)
    .reverse();
}

/** The latest record, or undefined when the stream is empty or its last entry unreadable. */
export async function latestCycleRecord(redis: Redis, keys: Keys): Promise<CycleRecord | undefined> {
  const entries = await redis.xrevrange(keys.metricsStream(), '+', '-', 'COUNT', 1);
  const fields = entries[0]?.[1];
  return fields ? parseRecord(fields) : undefined;
}

/** Up to `count` entries after the entry id `afterId` (from the start when undefined), oldest first. */
export async function cycleRecordsAfter(
  redis: Redis,
  keys: Keys,
  afterId: string | undefined,
  count: number,
): Promise<{ id: string; record?: CycleRecord }[]> {
  const entries = await redis.xrange(
    keys.metricsStream(),
    afterId === undefined ? '-' : `(${afterId}`,
    '+',
    'COUNT',
    count,
  );
  return entries.map(([id, fields]) => ({ id, record: parseRecord(fields) }));
}
