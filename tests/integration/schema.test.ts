/**
 * The two schemas against real Postgres: selfheal's own (db/init.sql, applied by `selfheal migrate`) holds only
 * selfheal's tables; the reference pipeline's (pipeline/schema.ts) is created by the pipeline itself. Both are
 * idempotent and safe to apply concurrently.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../db/migrate';
import { createPool } from '../../db/pool';
import { ensurePipelineSchema } from '../../pipeline/schema';
import { createTestEnv, TEST_DATABASE_URL, uniqueId, withSearchPath, type TestEnv } from '../helpers/env';

async function tables(pool: pg.Pool, schema: string): Promise<string[]> {
  const { rows } = await pool.query<{ tablename: string }>(
    `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`,
    [schema],
  );
  return rows.map((r) => r.tablename);
}

describe('the schemas, one at a time in an empty schema', () => {
  const schema = `test_${uniqueId()}`;
  let admin: pg.Pool;
  let pool: pg.Pool;
  beforeAll(async () => {
    admin = createPool(TEST_DATABASE_URL, { max: 1 });
    await admin.query(`CREATE SCHEMA ${schema}`);
    pool = createPool(withSearchPath(TEST_DATABASE_URL, schema), { max: 5 });
  });
  afterAll(async () => {
    await pool.end();
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.end();
  });

  it("selfheal's migrate creates only selfheal's tables, never the pipeline's", async () => {
    await Promise.all([migrate(pool), migrate(pool), migrate(pool)]);
    expect(await tables(pool, schema)).toEqual(['action_permits', 'healing_log', 'silence_log', 'silences']);
  });

  it("the reference pipeline's setup adds its own tables; both are idempotent, also concurrently", async () => {
    await Promise.all([ensurePipelineSchema(pool), migrate(pool), ensurePipelineSchema(pool)]);
    expect(await tables(pool, schema)).toEqual([
      'action_permits',
      'document_events',
      'documents',
      'healing_log',
      'silence_log',
      'silences',
    ]);
  });
});

describe('db/init.sql and the reference pipeline schema', () => {
  let t: TestEnv;
  beforeAll(async () => {
    t = await createTestEnv();
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('when every table exists, the pipeline setup takes no lock on documents (a worker starts next to busy peers)', async () => {
    // A writer in the middle of a transaction holds ROW EXCLUSIVE on documents; CREATE INDEX would wait for it.
    const writer = await t.pool.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`INSERT INTO documents (stage, status) VALUES ('extract', 'queued')`);
      const setup = createPool(t.databaseUrl, { max: 1 });
      try {
        await setup.query(`SET lock_timeout = '2s'`);
        await ensurePipelineSchema(setup);
      } finally {
        await setup.end();
      }
    } finally {
      await writer.query('ROLLBACK');
      writer.release();
    }
  });

  it('has the documents columns of the contract and the partial index on processing rows', async () => {
    const { rows: cols } = await t.pool.query<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'documents'`,
      [t.schema],
    );
    const types = Object.fromEntries(cols.map((c) => [c.column_name, c.data_type]));
    expect(types).toMatchObject({
      id: 'bigint',
      stage: 'text',
      status: 'text',
      worker_id: 'text',
      attempts: 'integer',
      requeue_count: 'integer',
      error: 'text',
      created_at: 'timestamp with time zone',
      updated_at: 'timestamp with time zone',
      started_at: 'timestamp with time zone',
      completed_at: 'timestamp with time zone',
      processing_ms: 'integer',
    });
    const { rows: idx } = await t.pool.query<{ indexdef: string }>(
      `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'documents_processing_updated_at'`,
      [t.schema],
    );
    expect(idx[0]?.indexdef).toMatch(/\(updated_at\) WHERE \(status = 'processing'::text\)/);
  });

  it('uses the partial index for the stuck-document query', async () => {
    await t.pool.query(
      `INSERT INTO documents (stage, status) SELECT 'extract', 'completed' FROM generate_series(1, 20000)`,
    );
    await t.pool.query(`INSERT INTO documents (stage, status, worker_id) VALUES ('extract', 'processing', 'w1')`);
    await t.pool.query('ANALYZE documents');
    const { rows } = await t.pool.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT id FROM documents WHERE status = 'processing' AND updated_at < now() - interval '10 minutes' ORDER BY updated_at LIMIT 100`,
    );
    expect(rows.map((r) => r['QUERY PLAN']).join('\n')).toContain('documents_processing_updated_at');
  });

  it('refuses UPDATE, DELETE and TRUNCATE of healing_log, and keeps executed idempotency keys unique', async () => {
    const insert = `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, idempotency_key)
                    VALUES ('heal-x', 'r1', $1, 'stuck_documents', 'extract', 'requeue_documents', $2)`;
    await t.pool.query(insert, ['executed', 'k1']);
    await expect(t.pool.query(`UPDATE healing_log SET outcome = 'tampered'`)).rejects.toThrow(/append-only/);
    await expect(t.pool.query(`DELETE FROM healing_log`)).rejects.toThrow(/append-only/);
    await expect(t.pool.query(`TRUNCATE healing_log`)).rejects.toThrow(/append-only/);
    await expect(t.pool.query(insert, ['executed', 'k1'])).rejects.toThrow(/duplicate key/);
    // Other steps may repeat a key (proposed, then executed, then verified all carry it).
    await t.pool.query(insert, ['verified', 'k1']);
    const { rows } = await t.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM healing_log`);
    expect(rows[0]?.n).toBe(2);
  });
});
