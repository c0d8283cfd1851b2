import { spawn, type ChildProcess } from 'node:child_process';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChaosError, createChaos, registerLlmProcess, runChaos, type Chaos } from '../../pipeline/chaos';
import { generateDocuments } from '../../pipeline/generator';
import { ensurePipelineImage } from '../../pipeline/image';
import { parseFaults } from '../../pipeline/worker-options';
import { isProcessRunning, processCommandLine, readRegistration } from '../../pipeline/registry';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { createTestEnv, waitFor, type TestEnv } from '../helpers/env';
import {
  createTestRunner,
  eventsByWorker,
  healthBody,
  httpStatus,
  pipelineLogDir,
  redisState,
  stopTestPipeline,
  testDocker,
  waitForDocuments,
} from '../helpers/pipeline';

/**
 * One pipeline (2 extract processes, 1 evaluate process, 1 evaluate container) and every fault in turn, each checked
 * where it really shows: process table, Docker, /health, Postgres rows, Redis keys. The tests run in order and each
 * ends with the pipeline healthy again.
 */
describe('chaos', () => {
  const docker = testDocker();
  let t: TestEnv;
  let runner: PipelineRunner;
  let chaos: Chaos;
  let workers: RunningWorker[];
  let container: RunningWorker;
  let llm: ChildProcess | undefined;

  const generate = (count: number) => generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count });
  const worker = (id: string) => workers.find((w) => w.worker === id)!;

  /** Waits until every worker of the stage reports the fault values in its /health. */
  async function faultsSeen(stage: string, want: Record<string, unknown>): Promise<void> {
    for (const w of workers.filter((x) => x.stage === stage)) {
      await waitFor(
        async () => {
          const faults = (await healthBody(w.healthUrl))?.faults as Record<string, unknown> | undefined;
          return faults && Object.entries(want).every(([k, v]) => faults[k] === v);
        },
        { timeoutMs: 10_000, what: `${w.worker} to see ${JSON.stringify(want)}` },
      );
    }
  }

  beforeAll(async () => {
    t = await createTestEnv();
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image });
    workers = await runner.startMany([
      { stage: 'extract', count: 2 },
      { stage: 'evaluate', count: 1 },
      { stage: 'evaluate', kind: 'container', count: 1 },
    ]);
    container = workers.find((w) => w.kind === 'container')!;
    chaos = createChaos({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker,
      spawnEnv: { ...process.env, ...t.env },
      logDir: pipelineLogDir(t),
      ollamaContainer: `ollama-${t.id}`, // exists nowhere: llm-down must use the registered process
    });
    await waitForDocuments(t, await generate(40));
  });

  afterAll(async () => {
    if (llm?.pid && isProcessRunning(llm.pid)) {
      process.kill(llm.pid, 'SIGCONT');
      llm.kill('SIGKILL');
    }
    await stopTestPipeline(t, runner, docker);
    await t.cleanup();
  });

  it('kill-worker: SIGKILLs a process and kills a container; clear() brings both back', async () => {
    const proc = worker('extract-1');
    const killed = await chaos.killWorker('extract-1');
    expect(killed).toMatchObject({ fault: 'kill-worker', worker: 'extract-1', kind: 'process', pid: proc.pid });
    expect(isProcessRunning(proc.pid!)).toBe(false);
    // The registration stays (a SIGKILL leaves no chance to remove it); the heartbeat expires.
    expect(await readRegistration(t.redis, t.keys, 'extract-1')).toMatchObject({ pid: proc.pid });
    await waitFor(async () => (await t.redis.exists(t.keys.heartbeat('extract-1'))) === 0, {
      what: 'heartbeat of the killed worker to expire',
    });
    expect(await httpStatus(proc.healthUrl)).toBe(0);

    const killedContainer = await chaos.killWorker(container.worker);
    expect(killedContainer).toMatchObject({ kind: 'container', container: container.worker });
    const state = (await docker.getContainer(container.worker).inspect()).State;
    expect(state.Running).toBe(false);
    expect(state.Status).toBe('exited');
    expect(state.ExitCode).toBe(137);

    // The survivors keep the pipeline going.
    const during = await generate(30);
    await waitForDocuments(t, during);
    const byWorker = await eventsByWorker(t, { ids: during });
    expect(byWorker['extract-1']).toBeUndefined();
    expect(byWorker[container.worker]).toBeUndefined();

    const cleared = await chaos.clear();
    expect(cleared.failed).toEqual([]);
    expect(cleared.undone).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ fault: 'kill-worker', worker: 'extract-1', restarted: true, healthy: true }),
        expect.objectContaining({ fault: 'kill-worker', worker: container.worker, restarted: true, healthy: true }),
      ]),
    );
    const reg = await readRegistration(t.redis, t.keys, 'extract-1');
    expect(reg?.pid).not.toBe(proc.pid);
    expect(isProcessRunning(reg!.pid)).toBe(true);
    expect((await docker.getContainer(container.worker).inspect()).State.Running).toBe(true);
    expect(await httpStatus(proc.healthUrl)).toBe(200);
    expect(await httpStatus(container.healthUrl)).toBe(200);

    // Back at work: the restarted workers take documents again.
    await waitFor(
      async () => {
        const ids = await generate(20);
        await waitForDocuments(t, ids);
        const by = await eventsByWorker(t, { ids });
        return (by['extract-1'] ?? 0) > 0 && (by[container.worker] ?? 0) > 0;
      },
      { timeoutMs: 30_000, what: 'restarted workers to take documents' },
    );
  });

  it('hang-worker: the live worker answers 503 and takes no documents while the others go on', async () => {
    const hung = worker('extract-2');
    const pid = (await readRegistration(t.redis, t.keys, 'extract-2'))!.pid;
    expect(await chaos.hangWorker('extract-2')).toMatchObject({ fault: 'hang-worker', worker: 'extract-2' });
    await waitFor(async () => (await httpStatus(hung.healthUrl)) === 503, { what: '503 from the hung worker' });
    expect(await healthBody(hung.healthUrl)).toMatchObject({ state: 'hung', status: 'unhealthy' });
    expect(isProcessRunning(pid)).toBe(true);

    const ids = await generate(40);
    await waitForDocuments(t, ids);
    const by = await eventsByWorker(t, { ids });
    expect(by['extract-2']).toBeUndefined();
    expect(by['extract-1']).toBe(40);

    await chaos.clear();
    await waitFor(async () => (await httpStatus(hung.healthUrl)) === 200, { what: '200 after clear' });
    await waitFor(
      async () => {
        const more = await generate(10);
        await waitForDocuments(t, more);
        return (await eventsByWorker(t, { ids: more }))['extract-2'];
      },
      { what: 'the unhung worker to take documents' },
    );
  });

  it('error-rate: about that fraction of documents really fails, with the error recorded', async () => {
    await chaos.errorRate('extract', 0.5);
    await faultsSeen('extract', { errorRate: 0.5 });
    const ids = await generate(200);
    await waitForDocuments(t, ids, { allowFailed: true });
    const { rows } = await t.pool.query<{ status: string; stage: string; n: number; with_error: number }>(
      `SELECT status, stage, count(*)::int AS n, count(error)::int AS with_error FROM documents
        WHERE id = ANY($1::bigint[]) GROUP BY 1, 2`,
      [ids],
    );
    const failed = rows.find((r) => r.status === 'failed');
    expect(failed?.stage).toBe('extract');
    expect(failed!.with_error).toBe(failed!.n);
    expect(failed!.n / 200).toBeGreaterThan(0.3);
    expect(failed!.n / 200).toBeLessThan(0.7);
    expect(await eventsByWorker(t, { ids, outcome: 'failed' })).toSatisfy(
      (by: Record<string, number>) => Object.values(by).reduce((a, b) => a + b, 0) === failed!.n,
    );
    const { rows: errs } = await t.pool.query<{ error: string }>(
      `SELECT error FROM documents WHERE id = ANY($1::bigint[]) AND status = 'failed' LIMIT 1`,
      [ids],
    );
    expect(errs[0]?.error).toMatch(/simulated processing error/);

    await chaos.clear();
    await faultsSeen('extract', { errorRate: 0 });
    const after = await generate(30);
    await waitForDocuments(t, after);
  });

  it('slow: processing really takes longer (processing_ms)', async () => {
    const mean = async (ids?: number[]) => {
      const { rows } = await t.pool.query<{ avg: number }>(
        `SELECT avg(processing_ms)::float AS avg FROM document_events
          WHERE stage = 'evaluate' AND outcome = 'completed' AND ($1::bigint[] IS NULL OR document_id = ANY($1::bigint[]))`,
        [ids ?? null],
      );
      return rows[0]!.avg;
    };
    const baseline = await mean();
    await chaos.slow('evaluate', 5);
    await faultsSeen('evaluate', { slow: 5 });
    const ids = await generate(30);
    await waitForDocuments(t, ids);
    const slowed = await mean(ids);
    expect(slowed).toBeGreaterThan(3 * baseline);
    const { rows } = await t.pool.query<{ min: number }>(
      `SELECT min(processing_ms)::int AS min FROM documents WHERE id = ANY($1::bigint[])`,
      [ids],
    );
    expect(rows[0]!.min).toBeGreaterThanOrEqual(5 * 5 - 1); // 5 x the 5 ms floor of the simulated work
    await chaos.clear();
    await faultsSeen('evaluate', { slow: 1 });
  });

  it('stale-lock: real lease keys on real documents, owned by a worker with no heartbeat', async () => {
    const result = await chaos.staleLocks(3);
    const owner = result.owner as string;
    const documents = result.documents as number[];
    expect(documents).toHaveLength(3);
    for (const id of documents) {
      const value = await t.redis.get(t.keys.lock(id));
      expect(value).toMatch(new RegExp(`^${owner}:[0-9a-f]+$`));
      expect(await t.redis.pttl(t.keys.lock(id))).toBeGreaterThan(10 * 60_000);
    }
    expect(await t.redis.exists(t.keys.heartbeat(owner))).toBe(0);
    expect(await readRegistration(t.redis, t.keys, owner)).toBeUndefined();
    const { rows } = await t.pool.query<{ status: string }>(
      `SELECT DISTINCT status FROM documents WHERE id = ANY($1::bigint[])`,
      [documents],
    );
    expect(rows.every((r) => ['completed', 'failed'].includes(r.status))).toBe(true);

    await chaos.clear();
    for (const id of documents) expect(await t.redis.exists(t.keys.lock(id))).toBe(0);
  });

  it('stuck-documents: processing rows of a dead worker, ids left in its processing list; clear() requeues them', async () => {
    const result = await chaos.stuckDocuments(3);
    const owner = result.owner as string;
    const ids = result.documents as number[];
    const { rows } = await t.pool.query<{ status: string; worker_id: string; old: boolean }>(
      `SELECT status, worker_id, (started_at < now() - interval '10 minutes'
                                  AND updated_at < now() - interval '10 minutes') AS old
         FROM documents WHERE id = ANY($1::bigint[])`,
      [ids],
    );
    expect(rows).toEqual(Array(3).fill({ status: 'processing', worker_id: owner, old: true }));
    const list = await t.redis.lrange(t.keys.processing('extract', owner), 0, -1);
    expect(list.map(Number).sort()).toEqual([...ids].sort());
    expect(await t.redis.exists(t.keys.heartbeat(owner))).toBe(0);

    const cleared = await chaos.clear();
    expect(cleared.undone).toEqual([expect.objectContaining({ fault: 'stuck-documents', requeued: ids })]);
    await waitForDocuments(t, ids);
    expect(await t.redis.exists(t.keys.processing('extract', owner))).toBe(0);
  });

  it('llm-down: SIGSTOPs the registered local LLM so it stops answering; clear() resumes it', async () => {
    await expect(chaos.llmDown()).rejects.toMatchObject({ type: 'llm_not_found' });

    llm = spawn(
      process.execPath,
      [
        '-e',
        `require('http').createServer((q, s) => s.end('{"models":[]}'))
           .listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const port = await new Promise<number>((resolve) => llm!.stdout!.once('data', (d: Buffer) => resolve(Number(d))));
    const url = `http://127.0.0.1:${port}/api/tags`;
    await registerLlmProcess(t.redis, t.keys, { pid: llm.pid!, url, argv: processCommandLine(llm.pid!) });
    expect(await httpStatus(url)).toBe(200);

    expect(await chaos.llmDown()).toMatchObject({ fault: 'llm-down', via: 'process', pid: llm.pid, state: 'T' });
    expect(await httpStatus(url, 1_000)).toBe(0);

    await chaos.clear();
    expect(await httpStatus(url, 2_000)).toBe(200);
  });

  it('runChaos validates the CLI form', async () => {
    const fails = (fault: string, args: string[]) =>
      runChaos(chaos, fault, args).then(
        () => undefined,
        (e: unknown) => e,
      );
    const cases: [string, string[], string, RegExp][] = [
      ['explode', [], 'unknown_fault', /unknown fault "explode": expected one of kill-worker, .*clear/],
      ['error-rate', ['extract', 'lots'], 'invalid_argument', /fraction: expected a number between 0 and 1/],
      ['error-rate', ['extract', '1.5'], 'invalid_argument', /between 0 and 1, got "1.5"/],
      [
        'error-rate',
        ['nowhere', '0.5'],
        'invalid_argument',
        /unknown stage "nowhere": expected one of extract, evaluate/,
      ],
      ['slow', ['evaluate'], 'invalid_argument', /expected 2 to 3 arguments, got 1/],
      ['slow', ['evaluate', '3', 'ghost'], 'unknown_worker', /unknown worker "ghost"/],
      ['hang-worker', ['extract-1', 'loudly'], 'invalid_argument', /can only be "silent"/],
      ['stale-lock', ['0'], 'invalid_argument', /whole number between 1 and 1000/],
      ['stuck-documents', ['2.5'], 'invalid_argument', /whole number/],
      ['kill-worker', ['ghost'], 'unknown_worker', /unknown worker "ghost": registered workers are .*extract-1/],
      ['hang-worker', ['ghost'], 'unknown_worker', /unknown worker "ghost"/],
      ['clear', ['now'], 'invalid_argument', /expected 0 arguments/],
    ];
    for (const [fault, args, type, message] of cases) {
      const err = await fails(fault, args);
      expect(err, `${fault} ${args.join(' ')}`).toBeInstanceOf(ChaosError);
      expect((err as ChaosError).type).toBe(type);
      expect((err as ChaosError).message).toMatch(message);
    }
    expect(await runChaos(chaos, 'error-rate', ['evaluate', '0.25'])).toMatchObject({
      stage: 'evaluate',
      fraction: 0.25,
    });
    expect(await t.redis.hget(t.keys.pipelineFaults(), 'error-rate:evaluate')).toBe('0.25');
    expect(await runChaos(chaos, 'clear', [])).toMatchObject({
      fault: 'clear',
      faultsCleared: ['error-rate:evaluate'],
    });
  });

  it('after clear() everything is back to normal', async () => {
    expect(await chaos.active()).toEqual({ faults: {}, records: [] });
    for (const w of workers) expect(await httpStatus(w.healthUrl), w.worker).toBe(200);
    // Each worker polls the faults (every 500 ms, later on a loaded machine): documents it takes before it has seen
    // the clear still get the last test's error rate. Its /health says which faults it applies.
    await waitFor(
      async () => {
        for (const w of workers) {
          const body = await healthBody(w.healthUrl);
          if (!isDeepStrictEqual(body?.faults, parseFaults({}, w.stage, w.worker))) return undefined;
        }
        return true;
      },
      { timeoutMs: 30_000, what: 'every worker to apply no fault' },
    );
    const ids = await generate(50);
    await waitForDocuments(t, ids);
    const { rows } = await t.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM document_events WHERE document_id = ANY($1::bigint[]) AND outcome = 'completed'`,
      [ids],
    );
    expect(rows[0]!.n).toBe(100);
    const state = await redisState(t);
    expect(state.queues).toEqual({ extract: 0, evaluate: 0 });
    expect(state.processing).toEqual({});
    // Nothing lost on the way: every document ever made finished (those failed by the error-rate fault included),
    // also any the killed worker had in flight.
    const { rows: open } = await t.pool.query(
      `SELECT id, stage, status, worker_id FROM documents WHERE status NOT IN ('completed', 'failed')`,
    );
    expect(open).toEqual([]);
  });
});
