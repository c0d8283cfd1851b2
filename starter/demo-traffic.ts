/** The demo's steady traffic: new documents at a fixed rate, since error rates and processing means need them. */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../core/keys';
import { generateDocuments } from '../pipeline/generator';
import { errorMessage } from '../core/errors';

/** Documents per tick and tick length of the steady traffic: 40 documents/s. */
export const TRAFFIC = { perTick: 10, tickMs: 250 };

/** New documents at a steady rate until stopped: error rates and processing means need traffic. */
export function startTraffic(
  pool: pg.Pool,
  redis: Redis,
  keys: Keys,
  onError: (message: string) => void,
  sleep: (ms: number) => Promise<void>,
  signal: AbortSignal,
): { stop(): Promise<void> } {
  let stopped = false;
  let lastError = '';
  const done = (async () => {
    while (!stopped && !signal.aborted) {
      try {
        await generateDocuments({ pool, redis, keys, count: TRAFFIC.perTick });
        lastError = '';
      } catch (err) {
        const message = errorMessage(err);
        if (message !== lastError) onError(message);
        lastError = message;
      }
      await sleep(TRAFFIC.tickMs);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}
