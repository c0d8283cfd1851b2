/** Temporal for integration tests: the run's dev server, and a namespace of one's own. */
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { TEST_REDIS_URL } from './env';

/**
 * Takes the next unused namespace of this run's pool (counted in Redis, so test files in different workers never
 * share one). Healing workflow ids and the Schedule id are fixed by the contract; a namespace keeps them apart.
 */
export async function allocateNamespace(): Promise<string> {
  const pool = inject('temporalNamespaces');
  const redis = new Redis(TEST_REDIS_URL);
  try {
    const key = `selfheal-tests:${inject('testRunId')}:namespace`;
    const n = await redis.incr(key);
    await redis.expire(key, 86_400);
    const ns = pool[n - 1];
    if (!ns)
      throw new Error(`the namespace pool (${pool.length}) is exhausted: raise it in tests/helpers/global-setup.ts`);
    return ns;
  } finally {
    redis.disconnect();
  }
}

export async function connectClient(namespace: string): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return { client: new Client({ connection, namespace }), close: () => connection.close() };
}
