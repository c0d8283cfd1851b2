/**
 * The collector against real Postgres and real HTTP: document counts exact up to COUNT_CAP per stage and status, the
 * planner's estimate above it (never below the cap), so a cycle costs the same with a 100,000-deep backlog as with
 * none; health targets healthy on any 2xx answer.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { COUNT_CAP, collectSnapshot, OUTCOME_SOURCE_RECHECK_MS } from '../../activities/metrics';
import type { HealthTarget } from '../../core/config';
import { ensurePipelineSchema } from '../../pipeline/schema';
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

const snap = (healthTargets: HealthTarget[] = [], now?: () => number) =>
  collectSnapshot({
    now,
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

describe('outcomes without document_events (a pipeline with only the contract documents table)', () => {
  /** Rows of `documents` as a pipeline leaves them; times are seconds before now. */
  async function doc(
    stage: string,
    status: string,
    o: { worker?: string | null; ms?: number | null; completedAgo?: number; updatedAgo?: number; startedAgo?: number },
  ) {
    await t.pool.query(
      `INSERT INTO documents (stage, status, worker_id, processing_ms, completed_at, updated_at, started_at)
       VALUES ($1, $2, $3, $4,
               CASE WHEN $5::int IS NULL THEN NULL ELSE now() - make_interval(secs => $5::int) END,
               now() - make_interval(secs => COALESCE($6::int, 0)),
               CASE WHEN $7::int IS NULL THEN NULL ELSE now() - make_interval(secs => $7::int) END)`,
      [
        stage,
        status,
        o.worker ?? null,
        o.ms ?? null,
        o.completedAgo ?? null,
        o.updatedAgo ?? null,
        o.startedAgo ?? null,
      ],
    );
  }

  it('come from documents: completions by completed_at, failures by updated_at, in the window, per stage and worker', async () => {
    await t.pool.query('DROP TABLE document_events');
    for (let i = 0; i < 3; i++) await doc('evaluate', 'completed', { worker: 'w1', ms: 10, completedAgo: 5 });
    for (let i = 0; i < 2; i++) await doc('evaluate', 'completed', { worker: 'w2', ms: 40, completedAgo: 20 });
    // No worker kept, no processing time: counted in the stage, in no worker, and not in the mean.
    await doc('evaluate', 'completed', { worker: null, ms: null, completedAgo: 1 });
    await doc('evaluate', 'failed', { worker: 'w1', updatedAgo: 2 });
    await doc('evaluate', 'failed', { worker: 'w3', updatedAgo: 3 });
    // Outside the 300 s window: not counted.
    await doc('evaluate', 'completed', { worker: 'w1', ms: 9999, completedAgo: 3600 });
    await doc('evaluate', 'failed', { worker: 'w1', updatedAgo: 3600 });
    // Failed long ago but updated now is a failure now; completed_at old but updated now is not a completion now.
    await doc('extract', 'failed', { worker: 'w4', updatedAgo: 0 });
    await doc('extract', 'completed', { worker: 'w4', ms: 5, completedAgo: 3600, updatedAgo: 0 });

    const s = await snap();
    expect(s.sources.postgres).toEqual({ ok: true });
    expect(s.outcomes).toBe('documents');
    const [extract, evaluate] = s.stages;
    expect(evaluate).toMatchObject({ windowCompleted: 6, windowFailed: 2, recentSamples: 5 });
    expect(evaluate!.recentMeanMs).toBeCloseTo((3 * 10 + 2 * 40) / 5, 6);
    expect(evaluate!.workers).toEqual([
      { worker: 'w1', completed: 3, failed: 1, meanMs: 10 },
      { worker: 'w2', completed: 2, failed: 0, meanMs: 40 },
      { worker: 'w3', completed: 0, failed: 1, meanMs: null },
    ]);
    // Progress: the newest completion or failure of the stage (the completion 1 s ago).
    expect(Math.abs(evaluate!.lastProgressAt! - (s.at - 1000))).toBeLessThan(1500);
    expect(extract).toMatchObject({ windowCompleted: 0, windowFailed: 1, recentMeanMs: null, recentSamples: 0 });
  });

  it('switch at once when document_events is dropped, and back at the next probe once it exists again', async () => {
    let clock = Date.now();
    const at = () => clock;
    await doc('evaluate', 'completed', { worker: 'w1', ms: 10, completedAgo: 5 });
    const first = await snap([], at);
    expect(first.outcomes).toBe('document_events');
    // The reference's events table is empty: nothing in the window from it.
    expect(first.stages[1]).toMatchObject({ windowCompleted: 0 });

    await t.pool.query('DROP TABLE document_events');
    const dropped = await snap([], at);
    expect(dropped.sources.postgres).toEqual({ ok: true });
    expect(dropped.outcomes).toBe('documents');
    expect(dropped.stages[1]).toMatchObject({ windowCompleted: 1 });

    // Created again: the cached probe holds until it is due.
    await ensurePipelineSchema(t.pool);
    expect((await snap([], at)).outcomes).toBe('documents');
    clock += OUTCOME_SOURCE_RECHECK_MS;
    expect((await snap([], at)).outcomes).toBe('document_events');
  });
});
