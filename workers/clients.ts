import { Redis } from 'ioredis';

/**
 * A Redis client that fails fast when Redis is down (no offline queue, one retry), so a monitoring cycle reports
 * Redis as degraded instead of hanging; it reconnects by itself when Redis is back.
 */
export function createFailFastRedis(url: string): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 3_000,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
  });
  redis.on('error', () => undefined);
  return redis;
}
