/**
 * Per-test isolation against the real services: each test environment gets its own Postgres schema
 * (selected through the connection string's search_path, so child processes inherit it) and its own
 * Redis key prefix. `cleanup()` drops both. The schema holds both selfheal's tables and the reference pipeline's
 * (one database, as with SELFHEAL_DATABASE_URL unset); tests/integration/existing-pipeline.test.ts separates them.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { createKeys, type Keys } from '../../core/keys';
import { migrate } from '../../db/migrate';
import { createPool } from '../../db/pool';
import { isPortFree } from '../../pipeline/runner-support';
import { ensurePipelineSchema } from '../../pipeline/schema';

/** Test database (created by scripts/dev.sh services). Override with TEST_DATABASE_URL. */
export const TEST_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? 'postgres://selfheal:selfheal@127.0.0.1:5432/selfheal_test';
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

export interface TestEnv {
  /** Unique id of this environment, safe in names: `t<hex>`. */
  id: string;
  schema: string;
  /** DATABASE_URL selecting this environment's schema. */
  databaseUrl: string;
  redisUrl: string;
  /** REDIS_KEY_PREFIX of this environment. */
  prefix: string;
  keys: Keys;
  pool: pg.Pool;
  redis: Redis;
  /** Environment variables a selfheal or pipeline process needs to use this environment. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export function uniqueId(prefix = 't'): string {
  return `${prefix}${randomBytes(5).toString('hex')}`;
}

/** `url` with its search_path set to `schema` (child processes given the URL inherit it). */
export function withSearchPath(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
}

/**
 * A base port for a reference pipeline's health servers (PIPELINE_BASE_PORT: each worker takes the next free port up
 * from it). Below the kernel's ephemeral range (32768-60999), so that no port another process gets from the kernel
 * (a bind to port 0, `freePort`) lands on it between the runner's check and the container's bind: a base from
 * `freePort` failed a CI run with EADDRINUSE, base + 1 taken meanwhile. Random in 20000-31999, 8 apart, so that stacks
 * side by side rarely start at the same place (the runner skips a port in use).
 */
export function pipelineBasePort(): number {
  return 20_000 + Math.floor(Math.random() * 1_500) * 8;
}

/**
 * A port (or `count` consecutive ones, the first returned) for a process a test starts, which binds it later: a
 * worker's metrics or health server, a Temporal server, a service the test stops and starts again on the same port
 * (a private Redis or Postgres), or a port that must stay closed for minutes (an LLM that is down). From
 * 12000-19999: below the kernel's ephemeral range, where `freePort` and every outgoing connection of every file
 * running beside it take theirs, and apart from `pipelineBasePort`'s. A port from `freePort` was taken that way
 * before the process bound it (a CI run: the SDK metrics exporter failed with EADDRINUSE). Checked free when picked.
 */
export async function heldPort(count = 1): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 12_000 + Math.floor(Math.random() * (8_000 - count));
    let free = true;
    for (let p = base; p < base + count && free; p++) free = await isPortFree('127.0.0.1', p);
    if (free) return base;
  }
  throw new Error(`no ${count} free consecutive ports in 12000-19999`);
}

export async function createTestEnv(): Promise<TestEnv> {
  const id = uniqueId();
  const schema = `test_${id}`;
  const admin = createPool(TEST_DATABASE_URL, { max: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const databaseUrl = withSearchPath(TEST_DATABASE_URL, schema);
  const pool = createPool(databaseUrl, { max: 10 });
  await migrate(pool);
  await ensurePipelineSchema(pool);
  const prefix = `${id}:`;
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 2 });
  const env = { DATABASE_URL: databaseUrl, REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix };
  return {
    id,
    schema,
    databaseUrl,
    redisUrl: TEST_REDIS_URL,
    prefix,
    keys: createKeys(prefix),
    pool,
    redis,
    env,
    async cleanup() {
      let cursor = '0';
      do {
        const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (found.length > 0) await redis.unlink(...found);
      } while (cursor !== '0');
      redis.disconnect();
      await pool.end();
      const dropper = createPool(TEST_DATABASE_URL, { max: 1 });
      await dropper.query(`DROP SCHEMA ${schema} CASCADE`);
      await dropper.end();
    },
  };
}

/** Polls `check` until it returns a truthy value or the timeout passes (then throws with the last value). */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
