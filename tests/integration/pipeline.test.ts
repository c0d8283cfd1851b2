import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isProcessRunning } from '../../pipeline/registry';
import { startPipelineWorker } from '../../pipeline/worker';
import { generateDocuments } from '../../pipeline/generator';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner } from '../../pipeline/runner';
import { createTestEnv, waitFor, type TestEnv } from '../helpers/env';
import {
  createTestRunner,
  eventsByWorker,
  redisState,
  healthBody,
  stopTestPipeline,
  tcpProxy,
  testDocker,
  waitForDocuments,
  withPort,
} from '../helpers/pipeline';

/** Every document completed exactly once per stage, nothing left in Redis. */
async function expectExactlyOnce(t: TestEnv, ids: number[]): Promise<void> {
  const { rows: docs } = await t.pool.query<{ stage: string; status: string; attempts: number; n: number }>(
    `SELECT stage, status, attempts, count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[])
      GROUP BY 1, 2, 3`,
    [ids],
  );
  // attempts counts processing attempts over the document's life: one per stage.
  expect(docs).toEqual([{ stage: 'evaluate', status: 'completed', attempts: 2, n: ids.length }]);

  const { rows: events } = await t.pool.query<{ stage: string; outcome: string; docs: number; events: number }>(
    `SELECT stage, outcome, count(DISTINCT document_id)::int AS docs, count(*)::int AS events
       FROM document_events WHERE document_id = ANY($1::bigint[]) GROUP BY 1, 2 ORDER BY 1, 2`,
    [ids],
  );
  expect(events).toEqual([
    { stage: 'evaluate', outcome: 'completed', docs: ids.length, events: ids.length },
    { stage: 'extract', outcome: 'completed', docs: ids.length, events: ids.length },
  ]);

  const { rows: bad } = await t.pool.query(
    `SELECT id FROM documents WHERE id = ANY($1::bigint[])
        AND (completed_at IS NULL OR started_at IS NULL OR processing_ms IS NULL OR error IS NOT NULL)`,
    [ids],
  );
  expect(bad).toEqual([]);

  expect(await redisState(t)).toEqual({ queues: { extract: 0, evaluate: 0 }, processing: {}, locks: 0 });
}

describe('reference pipeline', () => {
  let t: TestEnv;
  let runner: PipelineRunner | undefined;
  const docker = testDocker();

  beforeEach(async () => {
    t = await createTestEnv();
  });
  afterEach(async () => {
    await stopTestPipeline(t, runner, docker);
    runner = undefined;
    await t.cleanup();
  });

  it('moves 1,000 documents through both stages with several worker processes, each exactly once per stage', async () => {
    runner = createTestRunner(t);
    const workers = await runner.startMany([
      { stage: 'extract', count: 3 },
      { stage: 'evaluate', count: 3 },
    ]);
    expect(workers.map((w) => w.worker).sort()).toEqual([
      'evaluate-1',
      'evaluate-2',
      'evaluate-3',
      'extract-1',
      'extract-2',
      'extract-3',
    ]);
    expect(new Set(workers.map((w) => w.port)).size).toBe(6);

    const t0 = Date.now();
    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 1_000 });
    expect(ids).toHaveLength(1_000);
    await waitForDocuments(t, ids, { timeoutMs: 90_000 });
    const seconds = (Date.now() - t0) / 1_000;
    console.log(
      `1000 documents through 2 stages with 3+3 worker processes: ${seconds.toFixed(1)} s, ${(1_000 / seconds).toFixed(0)} documents/s`,
    );

    await expectExactlyOnce(t, ids);
    // The work was shared: every worker completed some documents.
    const byWorker = await eventsByWorker(t, { ids });
    for (const w of workers) expect(byWorker[w.worker] ?? 0, w.worker).toBeGreaterThan(0);
  });

  it('a worker killed mid-document takes the document back when it restarts under the same id', async () => {
    const slowRunner = createTestRunner(t, { work: { minMs: 60_000, maxMs: 60_000 } });
    runner = slowRunner;
    const [w] = await slowRunner.startMany([{ stage: 'extract', count: 1 }]);
    const [id] = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 1 });
    await waitFor(
      async () =>
        (await t.pool.query(`SELECT 1 FROM documents WHERE id = $1 AND status = 'processing'`, [id])).rowCount === 1,
      { what: 'the document to be processing' },
    );
    process.kill(w!.pid!, 'SIGKILL');
    await waitFor(() => !isProcessRunning(w!.pid!), { what: 'the worker to die' });
    // As a crash leaves it: processing by the dead worker, in its processing list, its lease still set.
    expect(await t.redis.lrange(t.keys.processing('extract', 'extract-1'), 0, -1)).toEqual([String(id)]);
    expect(await t.redis.get(t.keys.lock(id!))).toMatch(/^extract-1:/);
    await slowRunner.stop();

    runner = createTestRunner(t);
    await runner.start({ stage: 'extract', worker: 'extract-1' });
    await waitFor(
      async () =>
        (await t.pool.query(`SELECT 1 FROM documents WHERE id = $1 AND stage = 'evaluate'`, [id])).rowCount === 1,
      { what: 'the restarted worker to finish the document' },
    );
    const { rows } = await t.pool.query(`SELECT stage, status, attempts, worker_id FROM documents WHERE id = $1`, [id]);
    expect(rows).toEqual([{ stage: 'evaluate', status: 'queued', attempts: 2, worker_id: null }]);
    expect(await eventsByWorker(t, { ids: [id!] })).toEqual({ 'extract-1': 1 });
    expect(await redisState(t)).toEqual({ queues: { extract: 0, evaluate: 1 }, processing: {}, locks: 0 });
  });

  it('answers 503 on /health while Redis or Postgres is unreachable, and recovers without losing documents', async () => {
    const pg = await tcpProxy(Number(new URL(t.databaseUrl).port || 5432));
    const rd = await tcpProxy(Number(new URL(t.redisUrl).port || 6379));
    const w = await startPipelineWorker({
      stage: 'extract',
      worker: 'extract-px',
      port: 0,
      databaseUrl: withPort(t.databaseUrl, pg.port),
      redisUrl: withPort(t.redisUrl, rd.port),
      prefix: t.prefix,
      logLevel: 'silent',
    });
    try {
      const problems = async () => ((await healthBody(w.healthUrl))?.problems as string[] | undefined) ?? ['no answer'];
      expect(await problems()).toEqual([]);

      await pg.cut();
      await waitFor(async () => (await problems()).some((p) => p.startsWith('postgres:')), { what: 'postgres 503' });
      const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 20 });
      // It takes documents, fails to start them, and gives them back untouched.
      await waitFor(() => w.stats().givenBack > 0, { what: 'a document given back' });
      expect(await t.pool.query(`SELECT 1 FROM documents WHERE status = 'processing'`)).toMatchObject({ rowCount: 0 });
      await pg.restore();
      await waitFor(async () => (await problems()).length === 0, { what: 'healthy again' });

      await rd.cut();
      await waitFor(async () => (await problems()).some((p) => p.startsWith('redis:')), { what: 'redis 503' });
      const more = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 20 });
      await rd.restore();
      await waitFor(async () => (await problems()).length === 0, { timeoutMs: 15_000, what: 'healthy again' });

      const all = [...ids, ...more];
      await waitFor(
        async () => {
          const { rows } = await t.pool.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND stage = 'evaluate'`,
            [all],
          );
          return rows[0]!.n === all.length;
        },
        { what: 'all documents through extract' },
      );
      expect(await eventsByWorker(t, { ids: all })).toEqual({ 'extract-px': 40 });
      await waitFor(
        async () => (await redisState(t)).locks === 0 && Object.keys((await redisState(t)).processing).length === 0,
        { what: 'nothing left in flight' },
      );
    } finally {
      await w.stop();
      await pg.cut();
      await rd.cut();
    }
    expect(await t.redis.hget(t.keys.pipelineWorkers(), 'extract-px')).toBeNull();
  });

  it('runs a worker of a stage in a Docker container built from the local image', async () => {
    const image = await ensurePipelineImage(docker);
    expect(image.image).toMatch(/^selfheal-pipeline:[0-9a-f]{16}$/);
    runner = createTestRunner(t, { docker, image: image.image });
    await runner.startMany([
      { stage: 'extract', count: 2 },
      { stage: 'evaluate', count: 1 },
    ]);
    const container = await runner.start({ stage: 'evaluate', kind: 'container' });
    expect(container.worker).toBe(`pipeline-${t.id}-evaluate-1`);
    expect(runner.healthTargets()).toContain(`${container.worker}=${container.healthUrl}`);

    const info = await docker.getContainer(container.worker).inspect();
    expect(info.State.Running).toBe(true);
    expect(info.Config.Image).toBe(image.image);
    expect(info.Config.Labels).toMatchObject({ 'selfheal.pipeline': 'true', 'selfheal.prefix': t.prefix });
    expect(info.HostConfig.NetworkMode).toBe('host');
    expect(info.HostConfig.RestartPolicy?.Name).toBe('no');
    const reg = JSON.parse((await t.redis.hget(t.keys.pipelineWorkers(), container.worker))!);
    expect(reg).toMatchObject({
      worker: container.worker,
      stage: 'evaluate',
      kind: 'container',
      container: container.worker,
    });

    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 300 });
    await waitForDocuments(t, ids);
    await expectExactlyOnce(t, ids);
    // It really ran in the container: the container's worker id wrote evaluate outcomes.
    const byWorker = await eventsByWorker(t, { ids, stage: 'evaluate' });
    expect(byWorker[container.worker] ?? 0).toBeGreaterThan(0);
    expect((byWorker[container.worker] ?? 0) + (byWorker['evaluate-1'] ?? 0)).toBe(300);
  });
});
