import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../db/migrate';
import { createTestEnv, type TestEnv } from '../helpers/env';

describe('db/init.sql', () => {
  let t: TestEnv;
  beforeAll(async () => {
    t = await createTestEnv();
  });
  afterAll(async () => {
    await t.cleanup();
  });

  it('is idempotent: applying it again, also concurrently, changes nothing and fails nothing', async () => {
    await Promise.all([migrate(t.pool), migrate(t.pool), migrate(t.pool)]);
    const { rows } = await t.pool.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`,
      [t.schema],
    );
    expect(rows.map((r) => r.tablename)).toEqual(['action_permits', 'document_events', 'documents', 'healing_log']);
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
