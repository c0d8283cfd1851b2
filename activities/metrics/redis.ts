import type { Redis } from 'ioredis';
import { LOCK_EVIDENCE_CAP } from '../../core/detectors';
import { parseLockValue } from '../../core/keys';
import type { LockInfo } from '../../core/snapshot';
import type { MetricsDeps } from './shared';

/** Stale locks a snapshot carries (all owners): the detector's evidence cap, so no observed lock goes unplanned. */
export const STALE_LOCK_CAP = LOCK_EVIDENCE_CAP;
const SCAN_COUNT = 1000;

/** Every key matching `pattern`, by SCAN (never KEYS, which blocks Redis on a large keyspace). */
export async function scanAll(redis: Redis, pattern: string): Promise<string[]> {
  const found = new Set<string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
    cursor = next;
    for (const k of keys) found.add(k);
  } while (cursor !== '0');
  return [...found];
}

export interface RedisPart {
  processingLists: string[];
  queueDepth: Map<string, number>;
  processingDepth: Map<string, number>;
  liveWorkers: string[];
  staleLocks: LockInfo[];
  staleLockTotal: number;
  locksTotal: number;
}

export async function readRedis(deps: MetricsDeps): Promise<RedisPart> {
  const { redis, keys, stages } = deps;
  const [processingLists, heartbeatKeys, lockKeys] = await Promise.all([
    scanAll(redis, keys.processingPattern()),
    scanAll(redis, keys.heartbeatPattern()),
    scanAll(redis, keys.lockPattern()),
  ]);
  // Every list length in one round trip.
  const pipe = redis.pipeline();
  for (const stage of stages) pipe.llen(keys.queue(stage));
  for (const list of processingLists) pipe.llen(list);
  const lengths = ((await pipe.exec()) ?? []).map(([err, n]) => {
    if (err) throw err;
    return Number(n);
  });
  const queueDepth = new Map(stages.map((s, i) => [s, lengths[i] ?? 0]));
  const processingDepth = new Map(stages.map((s) => [s, 0]));
  const procPrefix = keys.processing('', '').slice(0, -1); // `<prefix>processing:`
  processingLists.forEach((list, i) => {
    const stage = list.slice(procPrefix.length).split(':')[0] ?? '';
    processingDepth.set(stage, (processingDepth.get(stage) ?? 0) + (lengths[stages.length + i] ?? 0));
  });

  const hbPrefix = keys.heartbeat('').slice(0, -':heartbeat'.length); // `<prefix>worker:`
  const liveWorkers = heartbeatKeys.map((k) => k.slice(hbPrefix.length, -':heartbeat'.length)).sort();
  const live = new Set(liveWorkers);

  const staleLocks: LockInfo[] = [];
  let staleLockTotal = 0;
  const lockPrefix = keys.lock('');
  for (let i = 0; i < lockKeys.length; i += SCAN_COUNT) {
    const batch = lockKeys.slice(i, i + SCAN_COUNT);
    const values = await redis.mget(...batch);
    batch.forEach((key, j) => {
      const value = values[j];
      if (value === null || value === undefined) return; // expired between SCAN and MGET
      const parsed = parseLockValue(value);
      const owner = parsed?.worker ?? value;
      if (live.has(owner)) return;
      staleLockTotal++;
      if (staleLocks.length < STALE_LOCK_CAP) {
        staleLocks.push({ documentId: key.slice(lockPrefix.length), owner, token: parsed?.token ?? '' });
      }
    });
  }
  return {
    processingLists,
    queueDepth,
    processingDepth,
    liveWorkers,
    staleLocks,
    staleLockTotal,
    locksTotal: lockKeys.length,
  };
}
