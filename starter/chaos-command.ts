/** `selfheal chaos <fault> [args...]` against the configured pipeline. */
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import type { Config } from '../core/config';
import { createKeys } from '../core/keys';
import { createPool } from '../db/pool';
import { createChaos, runChaos, type ChaosResult } from '../pipeline/chaos';

export async function runChaosCommand(config: Config, fault: string, args: string[]): Promise<ChaosResult> {
  const pool = createPool(config.DATABASE_URL, { max: 2, application: 'selfheal-chaos' });
  const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 2 });
  try {
    const chaos = createChaos({
      pool,
      redis,
      keys: createKeys(config.REDIS_KEY_PREFIX),
      docker: new Docker(),
      // Workers restarted by `clear` get the connection strings of this configuration.
      spawnEnv: {
        ...process.env,
        DATABASE_URL: config.DATABASE_URL,
        REDIS_URL: config.REDIS_URL,
        REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
      },
    });
    return await runChaos(chaos, fault, args);
  } finally {
    redis.disconnect();
    await pool.end();
  }
}
