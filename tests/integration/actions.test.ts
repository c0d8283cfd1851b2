import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type Docker from 'dockerode';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createActionActivities,
  type ActionConfig,
  type ActionInput,
  type ActionResult,
} from '../../activities/actions';
import type { Plan, PlanParams } from '../../core/plan';
import type { ActionType } from '../../core/types';
import { StopRecords } from '../../activities/docker-stops';
import { createChaos } from '../../pipeline/chaos';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { PREFIX_LABEL } from '../../pipeline/runner-support';
import { createTestEnv, uniqueId, waitFor, type TestEnv, heldPort } from '../helpers/env';
import {
  createTestRunner,
  httpStatus,
  redisState,
  stopTestPipeline,
  testDocker,
  waitForDocuments,
} from '../helpers/pipeline';

type Actions = ReturnType<typeof createActionActivities>;

/** Failures are asserted, not printed. */
const quietTemporal = new DefaultLogger('ERROR');
const silent = pino({ level: 'silent' });

/** A Docker client whose every Engine API call is recorded as `METHOD /path` (query string dropped). */
function countingDocker(): { docker: Docker; calls: string[] } {
  const docker = testDocker();
  const calls: string[] = [];
  const modem = docker.modem as { dial(opts: { method: string; path: string }, cb: unknown): unknown };
  const dial = modem.dial.bind(modem);
  modem.dial = (opts, cb) => {
    calls.push(`${opts.method} ${opts.path.split('?')[0]}`);
    return dial(opts, cb);
  };
  return { docker, calls };
}

function plan(action: ActionType, params: PlanParams, over: Partial<Plan> = {}): Plan {
  return {
    id: `plan-${uniqueId()}`,
    anomalyType: 'stuck_documents',
    action,
    target: 'extract',
    params,
    reasoning: 'integration test',
    confidence: 0.9,
    source: 'runbook',
    rung: 0,
    ...over,
  };
}

const baseConfig: ActionConfig = {
  maxRequeues: 3,
  requeueCap: 1000,
  restartStopTimeoutSeconds: 5,
  healthTargets: [],
  containerAllowlist: ['pipeline-*'],
  containerDenylist: ['*postgres*', '*redis*', '*temporal*', '*ollama*', 'selfheal-*'],
};

/**
 * Each call is its own activity (own activity id) of one fake workflow run, run in a MockActivityEnvironment so that
 * Context.current() gives the ids written to healing_log.
 */
function caller(actions: Actions, workflowId = `heal-test-${uniqueId()}`) {
  const runId = randomUUID();
  let n = 0;
  return <K extends keyof Actions>(name: K, input: ActionInput): Promise<ActionResult> => {
    const env = new MockActivityEnvironment(
      { activityId: String(++n), workflowExecution: { workflowId, runId } },
      { logger: quietTemporal },
    );
    return env.run(actions[name], input);
  };
}

async function executedRows(t: TestEnv, key: string) {
  const { rows } = await t.pool.query<{ action: string; outcome: string; workflow_id: string; activity_id: string }>(
    `SELECT action, outcome, workflow_id, activity_id FROM healing_log WHERE step = 'executed' AND idempotency_key = $1`,
    [key],
  );
  return rows;
}

describe('restartWorker (real Docker engine)', () => {
  const runnerDocker = testDocker();
  const counted = countingDocker();
  let t: TestEnv;
  let runner: PipelineRunner;
  let worker: RunningWorker;
  let actions: Actions;
  let call: ReturnType<typeof caller>;

  beforeAll(async () => {
    t = await createTestEnv();
    const { image } = await ensurePipelineImage(runnerDocker);
    runner = createTestRunner(t, { docker: runnerDocker, image });
    worker = await runner.start({ stage: 'extract', kind: 'container' });
    actions = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: counted.docker,
      config: {
        ...baseConfig,
        healthTargets: [{ container: worker.container!, url: worker.healthUrl }],
        restartHealthTimeoutMs: 4_000,
      },
      log: silent,
    });
    call = caller(actions);
  });

  afterAll(async () => {
    await stopTestPipeline(t, runner, runnerDocker);
    await t.cleanup();
  });

  afterEach(() => {
    counted.calls.length = 0;
  });

  /** Inspect by name (then by id while waiting for health), restart by the id the name was checked against. */
  const onlyInspectAndRestart = async () => {
    const name = worker.container!;
    const id = (await runnerDocker.getContainer(name).inspect()).Id;
    for (const c of counted.calls) {
      expect([
        `GET /containers/${name}/json`,
        `GET /containers/${id}/json`,
        `POST /containers/${id}/restart`,
      ]).toContain(c);
    }
  };

  it('brings a killed container back to health, with inspect and restart calls only', async () => {
    const name = worker.container!;
    await runnerDocker.getContainer(name).kill();
    await waitFor(async () => !(await runnerDocker.getContainer(name).inspect()).State.Running, {
      what: 'the container to be dead',
    });
    expect(await httpStatus(worker.healthUrl)).toBe(0);

    const key = `restart-${uniqueId()}`;
    const r = await call('restartWorker', { plan: plan('restart_worker', { container: name }), idempotencyKey: key });
    expect(r).toMatchObject({
      action: 'restart_worker',
      outcome: 'done',
      details: { container: name, healthy: true, stateBefore: 'exited' },
    });
    expect(r.details.healthyAfterMs).toEqual(expect.any(Number));
    expect((await runnerDocker.getContainer(name).inspect()).State.Running).toBe(true);
    expect(await httpStatus(worker.healthUrl)).toBe(200);
    const id = (await runnerDocker.getContainer(name).inspect()).Id;
    expect(counted.calls).toContain(`POST /containers/${id}/restart`);
    expect(counted.calls.filter((c) => c.endsWith('/restart'))).toHaveLength(1);
    await onlyInspectAndRestart();
    expect(await executedRows(t, key)).toEqual([
      expect.objectContaining({ action: 'restart_worker', outcome: 'done' }),
    ]);

    // The same execution again (a retry): the recorded result, no Docker call at all.
    counted.calls.length = 0;
    const again = await call('restartWorker', {
      plan: plan('restart_worker', { container: name }),
      idempotencyKey: key,
    });
    expect(again).toMatchObject({ outcome: 'done', details: { replayed: true, container: name } });
    expect(counted.calls).toEqual([]);

    // A new execution while it is healthy: inspected, not restarted.
    const started = (await runnerDocker.getContainer(name).inspect()).State.StartedAt;
    const healthy = await call('restartWorker', {
      plan: plan('restart_worker', { container: name }),
      idempotencyKey: `restart-${uniqueId()}`,
    });
    expect(healthy).toMatchObject({ outcome: 'nothing_to_do', details: { healthStatus: 200 } });
    expect(counted.calls).toEqual([`GET /containers/${name}/json`]);
    expect((await runnerDocker.getContainer(name).inspect()).State.StartedAt).toBe(started);
  });

  it('restarts a hung running container (503): the restart cures the hang', async () => {
    const name = worker.container!;
    await t.redis.hset(t.keys.pipelineFaults(), `hang:${worker.worker}`, '1');
    await waitFor(async () => (await httpStatus(worker.healthUrl)) === 503, { what: '503 from the hung worker' });
    const before = await runnerDocker.getContainer(name).inspect();
    const r = await call('restartWorker', {
      plan: plan('restart_worker', { container: name }, { anomalyType: 'unhealthy_container', target: name }),
      idempotencyKey: `restart-${uniqueId()}`,
    });
    expect(r).toMatchObject({
      outcome: 'done',
      details: { healthy: true, stateBefore: 'running', healthStatusBefore: 503 },
    });
    expect((await runnerDocker.getContainer(name).inspect()).State.StartedAt).not.toBe(before.State.StartedAt);
    expect(await httpStatus(worker.healthUrl)).toBe(200);
    // A hang belongs to the process that hung: the new one cleared it.
    expect(await t.redis.hexists(t.keys.pipelineFaults(), `hang:${worker.worker}`)).toBe(0);
    await onlyInspectAndRestart();
  });

  it('reports partial when health does not come back in time after the restart', async () => {
    const name = worker.container!;
    // The health URL configured for the container answers nothing: the restart happens, health never returns 200.
    const deaf = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: counted.docker,
      config: {
        ...baseConfig,
        healthTargets: [{ container: name, url: `http://127.0.0.1:${await heldPort()}/health` }],
        restartHealthTimeoutMs: 2_000,
      },
      log: silent,
    });
    const before = await runnerDocker.getContainer(name).inspect();
    const r = await caller(deaf)('restartWorker', {
      plan: plan('restart_worker', { container: name }, { anomalyType: 'unhealthy_container', target: name }),
      idempotencyKey: `restart-${uniqueId()}`,
    });
    expect(r).toMatchObject({ outcome: 'partial', details: { healthy: false, stateBefore: 'running' } });
    expect((await runnerDocker.getContainer(name).inspect()).State.StartedAt).not.toBe(before.State.StartedAt);
    await onlyInspectAndRestart();
    await waitFor(async () => (await httpStatus(worker.healthUrl)) === 200, {
      what: 'the real health URL back at 200',
    });
  });

  it('refuses a denied container without any Docker call, and an unlisted one after a read only', async () => {
    for (const container of [`pipeline-redis-${t.id}`, `selfheal-actions`]) {
      const key = `restart-${uniqueId()}`;
      const r = await call('restartWorker', { plan: plan('restart_worker', { container }), idempotencyKey: key });
      expect(r).toMatchObject({ action: 'restart_worker', outcome: 'refused', details: { container } });
      expect(await executedRows(t, key)).toEqual([]);
    }
    expect(counted.calls).toEqual([]);

    // Outside the allow list, a scope label (selfheal.enable=true, autoheal=true) could still put it in scope: its
    // labels are read (inspect), nothing else. This one carries none.
    const other = `other-${t.id}`;
    const { image } = await ensurePipelineImage(runnerDocker);
    const created = await runnerDocker.createContainer({
      name: other,
      Image: image,
      Entrypoint: ['/bin/busybox', 'sh', '-c', 'while :; do busybox sleep 1; done'],
      Labels: { [PREFIX_LABEL]: t.prefix, autoheal: 'false' },
      HostConfig: { NetworkMode: 'none' },
    });
    try {
      await created.start();
      const key = `restart-${uniqueId()}`;
      const r = await call('restartWorker', {
        plan: plan('restart_worker', { container: other }),
        idempotencyKey: key,
      });
      expect(r).toMatchObject({
        action: 'restart_worker',
        outcome: 'refused',
        details: {
          container: other,
          reason: `container ${other} matches no allow-list pattern and carries no scope label`,
        },
      });
      expect(await executedRows(t, key)).toEqual([]);
      expect(counted.calls).toEqual([`GET /containers/${other}/json`]);

      // Docker resolves an id prefix too: a name that is a prefix of another container's id is not that container.
      const idPrefix = created.id.slice(0, 12);
      counted.calls.length = 0;
      const byId = `restart-${uniqueId()}`;
      const viaId = await call('restartWorker', {
        plan: plan('restart_worker', { container: idPrefix }),
        idempotencyKey: byId,
      });
      expect(viaId).toMatchObject({
        outcome: 'refused',
        details: {
          container: idPrefix,
          reason: `${idPrefix} resolves to the container ${other}, not one of that name`,
        },
      });
      expect(await executedRows(t, byId)).toEqual([]);
      expect(counted.calls).toEqual([`GET /containers/${idPrefix}/json`]);
    } finally {
      await created.remove({ force: true });
    }
  });

  it('fails permanently for a container that does not exist, and for a plan of another action', async () => {
    const missing = `pipeline-missing-${t.id}`;
    const err = await call('restartWorker', {
      plan: plan('restart_worker', { container: missing }),
      idempotencyKey: `restart-${uniqueId()}`,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'container_not_found', nonRetryable: true });
    expect(counted.calls).toEqual([`GET /containers/${missing}/json`]);

    const wrong = await call('restartWorker', {
      plan: plan('requeue_documents', { documentIds: [1] }),
      idempotencyKey: `restart-${uniqueId()}`,
    }).catch((e: unknown) => e);
    expect(wrong).toMatchObject({ type: 'invalid_input', nonRetryable: true });
  });

  it("stopped on purpose, its record lost with a flush of Redis: the event watcher's memory still says so, not restarted", async () => {
    const name = worker.container!;
    const stops = new StopRecords(t.redis, t.keys);
    const withMemory = caller(
      createActionActivities({
        pool: t.pool,
        redis: t.redis,
        keys: t.keys,
        docker: counted.docker,
        config: { ...baseConfig, healthTargets: [{ container: worker.container!, url: worker.healthUrl }] },
        log: silent,
        stopRecords: stops,
      }),
    );
    try {
      await runnerDocker.getContainer(name).stop({ t: 2 });
      await stops.stopped(name, { at: Date.now(), how: 'docker stop' });
      await t.redis.unlink(t.keys.dockerStops());
      const r = await withMemory('restartWorker', {
        plan: plan('restart_worker', { container: name }),
        idempotencyKey: `restart-${uniqueId()}`,
      });
      expect(r).toMatchObject({
        outcome: 'nothing_to_do',
        details: { container: name, stoppedOnPurpose: { how: 'docker stop' } },
      });
      expect(counted.calls.filter((c) => c.endsWith('/restart'))).toEqual([]);
      expect((await runnerDocker.getContainer(name).inspect()).State.Running).toBe(false);
      // Written back to Redis, where the other actions workers read it.
      expect(await t.redis.hexists(t.keys.dockerStops(), name)).toBe(1);
    } finally {
      // Running again for what follows (a regression that restarted it left it running: no second start).
      if (!(await runnerDocker.getContainer(name).inspect()).State.Running)
        await runnerDocker.getContainer(name).start();
      await stops.forget(name);
    }
  });
});

describe('requeueDocuments, clearStaleLocks, quarantine, orphans, escalation (real Postgres and Redis)', () => {
  let t: TestEnv;
  let actions: Actions;
  let call: ReturnType<typeof caller>;
  let runner: PipelineRunner | undefined;

  beforeAll(async () => {
    t = await createTestEnv();
    actions = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: testDocker(),
      config: baseConfig,
      log: silent,
    });
    call = caller(actions);
  });

  afterAll(async () => {
    await stopTestPipeline(t, runner);
    await t.cleanup();
  });

  /** `n` documents left `processing` by `owner` an hour ago, their ids in its processing list. */
  async function stuck(n: number, owner: string, { stage = 'extract', requeueCount = 0 } = {}): Promise<number[]> {
    const { rows } = await t.pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, requeue_count, started_at, updated_at)
       SELECT $1, 'processing', $2, 1, $3, now() - interval '1 hour', now() - interval '1 hour'
         FROM generate_series(1, $4::int) ORDER BY 1 RETURNING id`,
      [stage, owner, requeueCount, n],
    );
    const ids = rows.map((r) => r.id);
    await t.redis.lpush(t.keys.processing(stage, owner), ...ids);
    return ids;
  }

  const docs = async (ids: number[]) =>
    (
      await t.pool.query<{
        id: number;
        status: string;
        requeue_count: number;
        worker_id: string | null;
        error: string;
      }>('SELECT id, status, requeue_count, worker_id, error FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id', [
        ids,
      ])
    ).rows;

  it('requeues still-stuck documents exactly once; completed and locked rows are left; MAX_REQUEUES dead-letters', async () => {
    const owner = `dead-${uniqueId()}`;
    const ids = await stuck(8, owner);
    const [done, locked, ...rest] = ids as [number, number, ...number[]];
    const [tired] = await stuck(1, owner, { requeueCount: 3 });
    // Leases: three left by the dead owner, one taken by a live worker on a document that completed meanwhile.
    for (const id of [rest[0]!, rest[1]!, tired!]) await t.redis.set(t.keys.lock(id), `${owner}:tok${id}`);
    await t.redis.set(t.keys.lock(done), `live-1:fresh`);
    // Between detection and action: one document completed, one is being committed by a worker (row locked).
    await t.pool.query(`UPDATE documents SET status = 'completed', completed_at = now() WHERE id = $1`, [done]);
    const blocker = await t.pool.connect();
    await blocker.query('BEGIN');
    await blocker.query('SELECT id FROM documents WHERE id = $1 FOR UPDATE', [locked]);

    const key = `requeue-${uniqueId()}`;
    const input = {
      plan: plan('requeue_documents', { documentIds: [...ids, tired!], stage: 'extract' }),
      idempotencyKey: key,
    };
    let r: ActionResult;
    try {
      r = await call('requeueDocuments', input);
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    expect(r).toMatchObject({
      action: 'requeue_documents',
      outcome: 'done',
      escalate: true,
      details: {
        requeued: rest,
        quarantined: [tired],
        notStuck: 2,
        deferred: 0,
        owners: [owner],
        redis: { leasesDeleted: 3, chunksApplied: 1, chunksAlreadyApplied: 0 },
      },
    });

    const queue = await t.redis.lrange(t.keys.queue('extract'), 0, -1);
    expect([...queue].sort()).toEqual(rest.map(String).sort());
    // The completed and the locked document stay where they were; everything else left the dead list.
    expect((await t.redis.lrange(t.keys.processing('extract', owner), 0, -1)).sort()).toEqual(
      [String(done), String(locked)].sort(),
    );
    expect(await t.redis.get(t.keys.lock(done))).toBe('live-1:fresh');
    for (const id of [rest[0]!, rest[1]!, tired!]) expect(await t.redis.exists(t.keys.lock(id))).toBe(0);
    const rows = await docs([...ids, tired!]);
    for (const row of rows) {
      if (rest.includes(row.id)) expect(row).toMatchObject({ status: 'queued', requeue_count: 1, worker_id: null });
      else if (row.id === tired) {
        expect(row).toMatchObject({ status: 'dead', requeue_count: 3, worker_id: owner });
        expect(row.error).toMatch(/dead-lettered by selfheal after 3 requeues/);
      } else if (row.id === done) expect(row.status).toBe('completed');
      else expect(row).toMatchObject({ status: 'processing', requeue_count: 0, worker_id: owner });
    }
    expect(await executedRows(t, key)).toEqual([
      expect.objectContaining({ outcome: 'done', action: 'requeue_documents' }),
    ]);

    // A retry of the same execution acts zero times.
    const again = await call('requeueDocuments', input);
    expect(again).toMatchObject({ outcome: 'done', escalate: true, details: { replayed: true, requeued: rest } });
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(rest.length);
    expect((await docs(rest)).every((d) => d.requeue_count === 1)).toBe(true);
    expect(await executedRows(t, key)).toHaveLength(1);

    // A new execution over the same ids: the locked one is still stuck and is requeued now; the rest is not.
    const later = await call('requeueDocuments', { ...input, idempotencyKey: `requeue-${uniqueId()}` });
    expect(later).toMatchObject({ outcome: 'done', details: { requeued: [locked], quarantined: [], notStuck: 8 } });
    expect(later.escalate).toBeUndefined();
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(rest.length + 1);

    const nothing = await call('requeueDocuments', { ...input, idempotencyKey: `requeue-${uniqueId()}` });
    expect(nothing).toMatchObject({ outcome: 'nothing_to_do', details: { requeued: [], notStuck: 9 } });
    await t.redis.del(t.keys.queue('extract'));
  });

  it('concurrent executions with one key act once', async () => {
    const ids = await stuck(50, `dead-${uniqueId()}`);
    const input = {
      plan: plan('requeue_documents', { documentIds: ids, stage: 'extract' }),
      idempotencyKey: uniqueId(),
    };
    const results = await Promise.all([call('requeueDocuments', input), call('requeueDocuments', input)]);
    expect(results.map((r) => r.details.requeued)).toEqual([ids, ids]);
    expect(results.filter((r) => r.details.replayed)).toHaveLength(1);
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(50);
    await t.redis.del(t.keys.queue('extract'));
  });

  it('a Redis failure after the commit is finished by the retry, exactly once', async () => {
    const owner = `dead-${uniqueId()}`;
    const ids = await stuck(20, owner);
    const flaky = new Redis(t.redisUrl, { maxRetriesPerRequest: 1 });
    try {
      const withFlaky = createActionActivities({
        pool: t.pool,
        redis: flaky,
        keys: t.keys,
        docker: testDocker(),
        config: baseConfig,
      });
      const scripts = flaky as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
      const real = scripts.selfhealRequeueChunk!;
      scripts.selfhealRequeueChunk = () => Promise.reject(new Error('connection lost'));
      const input = {
        plan: plan('requeue_documents', { documentIds: ids, stage: 'extract' }),
        idempotencyKey: uniqueId(),
      };
      const call2 = caller(withFlaky);
      await expect(call2('requeueDocuments', input)).rejects.toThrow('connection lost');
      // Committed in Postgres, not yet in Redis.
      expect((await docs(ids)).every((d) => d.status === 'queued' && d.requeue_count === 1)).toBe(true);
      expect(await t.redis.llen(t.keys.queue('extract'))).toBe(0);

      scripts.selfhealRequeueChunk = real;
      const retried = await call2('requeueDocuments', input);
      expect(retried).toMatchObject({
        outcome: 'done',
        details: { replayed: true, requeued: ids, redis: { chunksApplied: 1, chunksAlreadyApplied: 0 } },
      });
      const again = await call2('requeueDocuments', input);
      expect(again.details.redis).toMatchObject({ chunksApplied: 0, chunksAlreadyApplied: 1 });
      expect((await t.redis.lrange(t.keys.queue('extract'), 0, -1)).sort()).toEqual(ids.map(String).sort());
      expect(await t.redis.llen(t.keys.processing('extract', owner))).toBe(0);
      expect((await docs(ids)).every((d) => d.requeue_count === 1)).toBe(true);
    } finally {
      flaky.disconnect();
      await t.redis.del(t.keys.queue('extract'));
    }
  });

  it('caps the documents per call: the rest is deferred (partial)', async () => {
    const capped = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: testDocker(),
      config: { ...baseConfig, requeueCap: 5 },
    });
    const ids = await stuck(12, `dead-${uniqueId()}`);
    const r = await caller(capped)('requeueDocuments', {
      plan: plan('requeue_documents', { documentIds: ids, stage: 'extract' }),
      idempotencyKey: uniqueId(),
    });
    expect(r).toMatchObject({ outcome: 'partial', details: { requeued: ids.slice(0, 5), deferred: 7 } });
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(5);
    await t.redis.del(t.keys.queue('extract'));
  });

  it('requeued documents go through a real pipeline exactly once', async () => {
    const chaos = createChaos({ pool: t.pool, redis: t.redis, keys: t.keys });
    const injected = await chaos.stuckDocuments(30);
    const ids = injected.documents as number[];
    runner = createTestRunner(t);
    await runner.startMany([
      { stage: 'extract', count: 2 },
      { stage: 'evaluate', count: 1 },
    ]);
    try {
      const r = await call('requeueDocuments', {
        plan: plan('requeue_documents', { documentIds: ids, stage: 'extract' }),
        idempotencyKey: uniqueId(),
      });
      expect(r).toMatchObject({ outcome: 'done', details: { requeued: ids } });
      await waitForDocuments(t, ids);
      const { rows } = await t.pool.query<{ document_id: number; stage: string; n: number }>(
        `SELECT document_id, stage, count(*)::int AS n FROM document_events
          WHERE document_id = ANY($1::bigint[]) GROUP BY 1, 2`,
        [ids],
      );
      expect(rows).toHaveLength(ids.length * 2);
      expect(rows.every((row) => row.n === 1)).toBe(true);
      expect((await docs(ids)).every((d) => d.requeue_count === 1)).toBe(true);
      const state = await redisState(t);
      expect(state.processing[t.keys.processing('extract', injected.owner as string)]).toBeUndefined();
      await chaos.clear(); // nothing left to undo: the rows are no longer stuck as chaos left them
    } finally {
      await stopTestPipeline(t, runner);
      runner = undefined;
    }
  });

  it('clears stale locks only: a lock whose owner is alive and a re-acquired lock survive', async () => {
    const dead = `dead-${uniqueId()}`;
    const alive = `alive-${uniqueId()}`;
    const [a, b, c, d] = ['101', '102', '103', '104'];
    await t.redis.set(t.keys.lock(a), `${dead}:tokA`);
    await t.redis.set(t.keys.lock(b), `${alive}:tokB`);
    await t.redis.set(t.keys.heartbeat(alive), String(Date.now()), 'PX', 60_000);
    await t.redis.set(t.keys.lock(c), `other-live:tokNew`); // observed as dead's, re-acquired since
    const locks = [
      { documentId: a, owner: dead, token: 'tokA' },
      { documentId: b, owner: alive, token: 'tokB' },
      { documentId: c, owner: dead, token: 'tokC' },
      { documentId: d, owner: dead, token: 'tokD' }, // gone already
    ];
    const key = uniqueId();
    const input = {
      plan: plan('clear_stale_locks', { locks }, { anomalyType: 'stale_locks', target: dead }),
      idempotencyKey: key,
    };
    const r = await call('clearStaleLocks', input);
    expect(r).toEqual({
      action: 'clear_stale_locks',
      outcome: 'done',
      details: { observed: 4, cleared: [a], ownerAlive: [b], changedOrGone: [c, d] },
    });
    expect(await t.redis.exists(t.keys.lock(a))).toBe(0);
    expect(await t.redis.get(t.keys.lock(b))).toBe(`${alive}:tokB`);
    expect(await t.redis.get(t.keys.lock(c))).toBe('other-live:tokNew');

    // The same lock value set again after the action: a retry returns the record and does not touch it.
    await t.redis.set(t.keys.lock(a), `${dead}:tokA`);
    expect(await call('clearStaleLocks', input)).toMatchObject({ outcome: 'done', details: { replayed: true } });
    expect(await t.redis.exists(t.keys.lock(a))).toBe(1);
    await t.redis.del(t.keys.lock(a));
    // A key is bound to its action.
    const misuse = await call('removeOrphanedEntries', {
      plan: plan('remove_orphaned_entries', { entries: [{ queue: 'extract', id: a, count: 1 }] }),
      idempotencyKey: key,
    }).catch((e: unknown) => e);
    expect(misuse).toMatchObject({ type: 'invalid_input', nonRetryable: true });
    const none = await call('clearStaleLocks', { ...input, idempotencyKey: uniqueId() });
    expect(none).toMatchObject({ outcome: 'nothing_to_do', details: { cleared: [] } });
  });

  it('quarantines documents unless completed', async () => {
    const ids = await stuck(3, `dead-${uniqueId()}`);
    await t.pool.query(`UPDATE documents SET status = 'completed' WHERE id = $1`, [ids[0]]);
    const r = await call('quarantineDocument', {
      plan: plan(
        'quarantine_document',
        { documentIds: ids, reason: 'crashes 3 workers' },
        { anomalyType: 'poison_document' },
      ),
      idempotencyKey: uniqueId(),
    });
    expect(r).toMatchObject({ outcome: 'done', details: { quarantined: ids.slice(1), skipped: 1 } });
    const rows = await docs(ids);
    expect(rows.map((x) => x.status)).toEqual(['completed', 'dead', 'dead']);
    expect(rows[1]!.error).toBe('quarantined by selfheal: crashes 3 workers');
  });

  it('removes exactly the observed orphaned entries after re-checking Postgres', async () => {
    const [completed, queued, live] = await stuck(3, `dead-${uniqueId()}`);
    await t.pool.query(`UPDATE documents SET status = 'completed' WHERE id = $1`, [completed]);
    await t.pool.query(`UPDATE documents SET status = 'queued', worker_id = NULL WHERE id = ANY($1::bigint[])`, [
      [queued, live],
    ]);
    const q = t.keys.queue('extract');
    // completed x2, a duplicate of a queued document, the live queued one once, a missing id.
    await t.redis.lpush(q, completed!, queued!, live!, completed!, queued!, '999999999');
    const r = await call('removeOrphanedEntries', {
      plan: plan(
        'remove_orphaned_entries',
        {
          entries: [
            { queue: 'extract', id: String(completed), count: 2 },
            { queue: 'queue:extract', id: String(queued), count: 2 },
            { queue: 'extract', id: String(live), count: 1 },
            { queue: 'extract', id: '999999999', count: 1 },
          ],
        },
        { anomalyType: 'orphaned_entries' },
      ),
      idempotencyKey: uniqueId(),
    });
    expect(r.outcome).toBe('done');
    expect(r.details.removed).toEqual([
      { queue: q, id: String(completed), removed: 2, why: 'completed' },
      { queue: q, id: String(queued), removed: 1, why: 'duplicate' },
      { queue: q, id: '999999999', removed: 1, why: 'missing' },
    ]);
    expect((await t.redis.lrange(q, 0, -1)).sort()).toEqual([String(queued), String(live)].sort());
    await t.redis.del(q);
  });

  it('escalates: a log line and a webhook POST with the plan and the show command (nothing waits for approval)', async () => {
    const bodies: Record<string, unknown>[] = [];
    let requests = 0;
    const server = http.createServer((req, res) => {
      let raw = '';
      req.on('data', (d: Buffer) => (raw += d.toString()));
      req.on('end', () => {
        requests++;
        if (requests === 1) return void res.writeHead(503).end(); // retried
        bodies.push(JSON.parse(raw) as Record<string, unknown>);
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    try {
      const lines: unknown[] = [];
      const log = { warn: (obj: unknown, msg: string) => lines.push({ obj, msg }) } as unknown as pino.Logger;
      const withHook = createActionActivities({
        pool: t.pool,
        redis: t.redis,
        keys: t.keys,
        docker: testDocker(),
        config: { ...baseConfig, escalationWebhookUrl: url },
        log,
      });
      const workflowId = `heal-stuck_documents-extract-${t.id}`;
      const esc = plan('escalate_to_human', { reason: 'requeue did not help' });
      const key = uniqueId();
      const r = await caller(withHook, workflowId)('escalateToHuman', { plan: esc, idempotencyKey: key });
      expect(r).toMatchObject({ outcome: 'done', details: { webhook: 'delivered', status: 200, attempts: 2 } });
      expect(lines).toHaveLength(1);
      expect(bodies).toHaveLength(1);
      expect(bodies[0]).toMatchObject({
        workflowId,
        plan: esc,
        reason: 'requeue did not help',
        event: 'escalation',
        commands: { approve: null, reject: null, show: `selfheal show ${workflowId}` },
      });
      expect(bodies[0]!.text).toContain('requeue did not help');
      // A retry does not post again.
      expect(await caller(withHook, workflowId)('escalateToHuman', { plan: esc, idempotencyKey: key })).toMatchObject({
        details: { replayed: true },
      });
      expect(requests).toBe(2);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }

    // Without a webhook: logged, done. With a webhook that never answers: partial.
    expect(
      await call('escalateToHuman', { plan: plan('escalate_to_human', {}), idempotencyKey: uniqueId() }),
    ).toMatchObject({ outcome: 'done', details: { logged: true, webhook: 'not configured' } });
    const unreachable = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: testDocker(),
      config: { ...baseConfig, escalationWebhookUrl: url, webhookAttempts: 2, webhookTimeoutMs: 500 },
      log: silent,
    });
    expect(
      await caller(unreachable)('escalateToHuman', { plan: plan('escalate_to_human', {}), idempotencyKey: uniqueId() }),
    ).toMatchObject({ outcome: 'partial', details: { webhook: 'failed', attempts: 2 } });
  });
});
