/**
 * Feeds the reference pipeline: inserts documents (stage `extract`, status `queued`) and queues their ids.
 *
 *   tsx pipeline/generator.ts --count 1000
 *
 * with DATABASE_URL, REDIS_URL and REDIS_KEY_PREFIX from the environment. Prints the JSON `{ count, first, last }`.
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { z } from 'zod';
import { configSchema } from '../core/config';
import { createKeys, STAGES, type Keys } from '../core/keys';
import { createPool } from '../db/pool';
import { errorMessage } from '../core/errors';

/** Ids per LPUSH command: large enough to be fast, small enough not to block Redis. */
const PUSH_BATCH = 1_000;

export interface GenerateOptions {
  pool: pg.Pool;
  redis: Redis;
  keys: Keys;
  /** Documents to create, 1..1,000,000. */
  count: number;
  /** JSON payload of each document, or a function of its index (0-based). Default `{ title, pages }`. */
  payload?: Record<string, unknown> | ((index: number) => Record<string, unknown>);
}

/**
 * Inserts `count` documents in one statement, then LPUSHes their ids to `queue:extract` in order (consumers pop
 * from the other end, so the queue is FIFO). Returns the ids, ascending.
 *
 * Postgres commits before Redis sees an id: a worker that popped an id whose row is not yet visible would drop it
 * as a duplicate. If the process dies between the two, the rows are `queued` in no queue, which is what the
 * `lost_documents` detector and requeue action exist for.
 */
export async function generateDocuments(opts: GenerateOptions): Promise<number[]> {
  const { pool, redis, keys, count } = opts;
  if (!Number.isInteger(count) || count < 1 || count > 1_000_000) {
    throw new RangeError(`count: expected a whole number between 1 and 1000000, got ${count}`);
  }
  const stage = STAGES[0];
  const make = typeof opts.payload === 'function' ? opts.payload : undefined;
  const fixed = typeof opts.payload === 'object' ? opts.payload : undefined;
  let ids: number[];
  if (make || fixed) {
    const payloads = Array.from({ length: count }, (_, i) => (make ? make(i) : fixed));
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, payload)
       SELECT $1, 'queued', p.value FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS p(value, n)
       ORDER BY p.n RETURNING id`,
      [stage, JSON.stringify(payloads)],
    );
    ids = rows.map((r) => r.id);
  } else {
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, payload)
       SELECT $1, 'queued', jsonb_build_object('title', 'document ' || n, 'pages', 1 + (n * 7919) % 50)
         FROM generate_series(1, $2::int) AS n ORDER BY n RETURNING id`,
      [stage, count],
    );
    ids = rows.map((r) => r.id);
  }
  ids.sort((a, b) => a - b);
  const pipeline = redis.pipeline();
  for (let i = 0; i < ids.length; i += PUSH_BATCH) pipeline.lpush(keys.queue(stage), ...ids.slice(i, i + PUSH_BATCH));
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err);
  if (failed?.[0]) throw new Error(`queueing documents failed: ${failed[0].message}`);
  return ids;
}

async function main(): Promise<void> {
  let count: number;
  try {
    const { values } = parseArgs({ options: { count: { type: 'string', default: '100' } }, strict: true });
    const parsed = z
      .string()
      .regex(/^\d+$/)
      .transform(Number)
      .pipe(z.number().int().min(1).max(1_000_000))
      .safeParse(values.count);
    if (!parsed.success) throw new Error('--count: expected a whole number between 1 and 1000000');
    count = parsed.data;
  } catch (err) {
    process.stderr.write(`generator: ${errorMessage(err)}\nusage: generator --count N\n`);
    process.exit(2);
  }
  const env = configSchema
    .pick({ DATABASE_URL: true, REDIS_URL: true, REDIS_KEY_PREFIX: true })
    .safeParse(
      Object.fromEntries(
        ['DATABASE_URL', 'REDIS_URL', 'REDIS_KEY_PREFIX'].flatMap((k) =>
          process.env[k]?.trim() ? [[k, process.env[k]]] : [],
        ),
      ),
    );
  if (!env.success) {
    process.stderr.write(
      `generator: ${env.error.issues.map((i) => `${String(i.path[0])}: ${i.message}`).join('; ')}\n`,
    );
    process.exit(2);
  }
  const pool = createPool(env.data.DATABASE_URL, { max: 1, application: 'selfheal-generator' });
  const redis = new Redis(env.data.REDIS_URL, { maxRetriesPerRequest: 2 });
  try {
    const ids = await generateDocuments({ pool, redis, keys: createKeys(env.data.REDIS_KEY_PREFIX), count });
    process.stdout.write(`${JSON.stringify({ count: ids.length, first: ids[0], last: ids[ids.length - 1] })}\n`);
  } finally {
    redis.disconnect();
    await pool.end();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`generator: ${errorMessage(err)}\n`);
    process.exit(1);
  });
}
