/**
 * The collector's document counts against real Postgres: exact up to COUNT_CAP per stage and status, the planner's
 * estimate above it (never below the cap), so a cycle costs the same with a 100,000-deep backlog as with none.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { COUNT_CAP, collectSnapshot } from '../../activities/metrics';
import { createTestEnv, type TestEnv } from '../helpers/env';

let t: TestEnv;
beforeEach(async () => {
  t = await createTestEnv();
});
afterEach(async () => {
  await t.cleanup();
});

async function insert(n: number, stage: string, status: string): Promise<void> {
  await t.pool.query(`INSERT INTO documents (stage, status) SELECT $1, $2 FROM generate_series(1, $3::int)`, [
    stage,
    status,
    n,
  ]);
}

const snap = () =>
  collectSnapshot({
    redis: t.redis,
    pool: t.pool,
    keys: t.keys,
    stages: ['extract', 'evaluate'],
    healthTargets: [],
    ollamaHost: 'http://127.0.0.1:9',
    ollamaModel: 'none',
    windowSeconds: 300,
    lostDocumentSeconds: 600,
    reconcile: false,
  });

describe('document counts', () => {
  it('are exact up to the cap, per stage and status', async () => {
    await insert(COUNT_CAP, 'extract', 'queued');
    await insert(7, 'extract', 'processing');
    await insert(3, 'evaluate', 'failed');
    await insert(2, 'evaluate', 'dead');
    const s = await snap();
    const [extract, evaluate] = s.stages;
    expect(extract!.counts).toMatchObject({ queued: COUNT_CAP, processing: 7, failed: 0, dead: 0 });
    expect(evaluate!.counts).toMatchObject({ queued: 0, processing: 0, failed: 3, dead: 2 });
    expect(s.processingTotal).toBe(7);
  });

  it("above the cap are the planner's estimate, never reported below the cap", async () => {
    await insert(3 * COUNT_CAP, 'extract', 'queued');
    await insert(5, 'evaluate', 'queued');
    await t.pool.query('ANALYZE documents');
    const [extract, evaluate] = (await snap()).stages;
    // ANALYZE samples: the estimate is close to the truth, and it is not the capped count.
    expect(extract!.counts.queued).toBeGreaterThan(COUNT_CAP);
    expect(Math.abs(extract!.counts.queued - 3 * COUNT_CAP)).toBeLessThan(0.1 * 3 * COUNT_CAP);
    expect(evaluate!.counts.queued).toBe(5);

    // A stale estimate (no ANALYZE since the rows came) is still reported above the cap.
    await insert(3 * COUNT_CAP, 'evaluate', 'failed');
    expect((await snap()).stages[1]!.counts.failed).toBeGreaterThan(COUNT_CAP);
  });
});
