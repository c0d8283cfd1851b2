/**
 * The collector against real Postgres and real HTTP: document counts exact up to COUNT_CAP per stage and status, the
 * planner's estimate above it (never below the cap), so a cycle costs the same with a 100,000-deep backlog as with
 * none; health targets healthy on any 2xx answer.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { COUNT_CAP, collectSnapshot } from '../../activities/metrics';
import type { HealthTarget } from '../../core/config';
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

const snap = (healthTargets: HealthTarget[] = []) =>
  collectSnapshot({
    redis: t.redis,
    pool: t.pool,
    keys: t.keys,
    stages: ['extract', 'evaluate'],
    healthTargets,
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

describe('health targets', () => {
  it('are healthy on any 2xx answer, and unhealthy on anything else or no answer', async () => {
    // One real HTTP server answering /<status> with that status (a 302 without Location is not followed).
    const server = http.createServer((req, res) => {
      res.writeHead(Number(req.url!.slice(1))).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const statuses = [200, 201, 202, 204, 299, 302, 404, 500, 503];
      const targets = statuses.map((status) => ({ container: `pipeline-h${status}`, url: `${base}/${status}` }));
      // Nothing listens on port 9 (discard): no answer at all.
      targets.push({ container: 'pipeline-silent', url: 'http://127.0.0.1:9/health' });
      const { health } = await snap(targets);
      expect(Object.fromEntries(health.map((h) => [h.container, [h.ok, h.status ?? null]]))).toEqual({
        'pipeline-h200': [true, 200],
        'pipeline-h201': [true, 201],
        'pipeline-h202': [true, 202],
        'pipeline-h204': [true, 204],
        'pipeline-h299': [true, 299],
        'pipeline-h302': [false, 302],
        'pipeline-h404': [false, 404],
        'pipeline-h500': [false, 500],
        'pipeline-h503': [false, 503],
        'pipeline-silent': [false, null],
      });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
