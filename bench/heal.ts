/**
 * Time to heal per action next to the bare operation it wraps: restart (a killed pipeline container back to 200 by
 * `restartWorker` vs dockerode restart + the same health wait), requeue (N stuck documents by `requeueDocuments` in
 * chunks of the cap, checked exactly once, vs the same SQL + LPUSH run directly) and stale locks (`clearStaleLocks`
 * vs the bare compare-and-delete script).
 */
import { randomUUID } from 'node:crypto';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import Docker from 'dockerode';
import pino from 'pino';
import { createActionActivities, type ActionInput, type ActionResult } from '../activities/actions';
import type { Plan, PlanParams } from '../core/plan';
import type { ActionType } from '../core/types';
import { ensurePipelineImage } from '../pipeline/image';
import { defineScript } from '../core/redis-script';
import { COMPARE_AND_DELETE } from '../pipeline/lua';
import { uniqueId, waitFor, type TestEnv } from '../tests/helpers/env';
import { createTestRunner, httpStatus, stopTestPipeline } from '../tests/helpers/pipeline';
import { ms, type Row } from './common';

type Actions = ReturnType<typeof createActionActivities>;

/** Runs an action as an activity (own activity id, one fake workflow run), as the actions worker would. */
function actionCaller(actions: Actions) {
  const runId = randomUUID();
  const logger = new DefaultLogger('ERROR');
  let n = 0;
  return <K extends keyof Actions>(name: K, input: ActionInput): Promise<ActionResult> =>
    new MockActivityEnvironment(
      { activityId: String(++n), workflowExecution: { workflowId: 'bench-heal', runId } },
      { logger },
    ).run(actions[name], input);
}

function benchPlan(action: ActionType, params: PlanParams): Plan {
  return {
    id: `bench-${uniqueId()}`,
    anomalyType: action === 'clear_stale_locks' ? 'stale_locks' : 'stuck_documents',
    action,
    target: 'extract',
    params,
    reasoning: 'benchmark',
    confidence: 1,
    source: 'runbook',
    rung: 0,
  };
}

export async function benchHealRestart(t: TestEnv, docker: Docker, rounds: number): Promise<Row[]> {
  const { image } = await ensurePipelineImage(docker);
  const runner = createTestRunner(t, { docker, image });
  try {
    const w = await runner.start({ stage: 'extract', kind: 'container' });
    const name = w.container!;
    const container = docker.getContainer(name);
    const actions = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker,
      config: {
        maxRequeues: 3,
        requeueCap: 1000,
        restartStopTimeoutSeconds: 10,
        healthTargets: [{ container: name, url: w.healthUrl }],
        containerAllowlist: ['pipeline-*'],
        containerDenylist: [],
      },
      log: pino({ level: 'silent' }),
    });
    const call = actionCaller(actions);
    const kill = async () => {
      await container.kill();
      await waitFor(async () => !(await container.inspect()).State.Running, { what: 'the container to die' });
    };
    const rows: Row[] = [];
    for (let round = 1; round <= rounds; round++) {
      await kill();
      let t0 = performance.now();
      const r = await call('restartWorker', {
        plan: benchPlan('restart_worker', { container: name }),
        idempotencyKey: uniqueId(),
      });
      const action = ms(t0);
      if (r.outcome !== 'done') throw new Error(`restartWorker: ${JSON.stringify(r)}`);

      await kill();
      t0 = performance.now();
      await container.restart({ t: 10 });
      const restartCall = ms(t0);
      await waitFor(async () => (await httpStatus(w.healthUrl)) === 200, { intervalMs: 200, what: 'health 200' });
      const bare = ms(t0);
      rows.push({
        round,
        restartWorker_ms: action,
        'of which docker restart_ms': r.details.restartMs as number,
        bare_restart_plus_health_ms: bare,
        'of which docker restart_ms (bare)': restartCall,
      });
    }
    return rows;
  } finally {
    await stopTestPipeline(t, runner, docker);
  }
}

/** `n` documents left `processing` by one dead worker an hour ago, their ids in its processing list. */
async function makeStuck(t: TestEnv, n: number, owner: string): Promise<number[]> {
  const { rows } = await t.pool.query<{ id: number }>(
    `INSERT INTO documents (stage, status, worker_id, attempts, started_at, updated_at)
     SELECT 'extract', 'processing', $1, 1, now() - interval '1 hour', now() - interval '1 hour'
       FROM generate_series(1, $2::int) ORDER BY 1 RETURNING id`,
    [owner, n],
  );
  const ids = rows.map((r) => r.id);
  const pipe = t.redis.pipeline();
  for (let i = 0; i < ids.length; i += 5_000)
    pipe.lpush(t.keys.processing('extract', owner), ...ids.slice(i, i + 5_000));
  await pipe.exec();
  return ids;
}

/** Each id exactly once in the queue, requeue_count 1 and `queued` for all. Returns a one-line verdict. */
async function checkExactlyOnce(t: TestEnv, ids: number[]): Promise<string> {
  const queue = await t.redis.lrange(t.keys.queue('extract'), 0, -1);
  const seen = new Map<string, number>();
  for (const id of queue) seen.set(id, (seen.get(id) ?? 0) + 1);
  const missing = ids.filter((id) => seen.get(String(id)) !== 1).length;
  const { rows } = await t.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND status = 'queued' AND requeue_count = 1`,
    [ids],
  );
  const ok = queue.length === ids.length && missing === 0 && rows[0]!.n === ids.length;
  return ok
    ? `exactly once: ${ids.length} ids once each in the queue, ${rows[0]!.n} rows queued with requeue_count = 1`
    : `NOT exactly once: queue ${queue.length}, ids not once ${missing}, rows ok ${rows[0]!.n} of ${ids.length}`;
}

export async function benchHealRequeue(t: TestEnv, docs: number, cap: number): Promise<Row[]> {
  const actions = createActionActivities({
    pool: t.pool,
    redis: t.redis,
    keys: t.keys,
    docker: new Docker(),
    config: {
      maxRequeues: 3,
      requeueCap: cap,
      restartStopTimeoutSeconds: 10,
      healthTargets: [],
      containerAllowlist: [],
      containerDenylist: [],
    },
    log: pino({ level: 'silent' }),
  });
  const call = actionCaller(actions);
  const rows: Row[] = [];

  // The action, in chunks of the cap, one after the other as healing workflows would run them.
  const owner = `bench-dead-${uniqueId()}`;
  let ids = await makeStuck(t, docs, owner);
  let t0 = performance.now();
  for (let i = 0; i < ids.length; i += cap) {
    const r = await call('requeueDocuments', {
      plan: benchPlan('requeue_documents', { documentIds: ids.slice(i, i + cap), stage: 'extract' }),
      idempotencyKey: uniqueId(),
    });
    if (r.outcome !== 'done') throw new Error(`requeueDocuments: ${r.outcome}`);
  }
  let elapsed = ms(t0);
  const left = await t.redis.llen(t.keys.processing('extract', owner));
  rows.push({
    what: `requeueDocuments (${Math.ceil(docs / cap)} calls)`,
    documents: docs,
    ms: elapsed,
    documents_per_s: Math.round((docs / elapsed) * 1000),
    check: `${await checkExactlyOnce(t, ids)}; dead list left ${left}`,
  });
  await t.redis.del(t.keys.queue('extract'));

  // Bare: the same UPDATE per chunk, committed, then pipelined LPUSH (no lease, no processing list, no audit).
  const bareOwner = `bench-dead-${uniqueId()}`;
  ids = await makeStuck(t, docs, bareOwner);
  t0 = performance.now();
  for (let i = 0; i < ids.length; i += cap) {
    const { rows: updated } = await t.pool.query<{ id: number }>(
      `WITH stuck AS (
         SELECT id, worker_id, requeue_count FROM documents
          WHERE id = ANY($1::bigint[]) AND status = 'processing' AND stage = 'extract'
          ORDER BY id FOR UPDATE SKIP LOCKED)
       UPDATE documents d
          SET status = CASE WHEN s.requeue_count + 1 > 3 THEN 'dead' ELSE 'queued' END,
              requeue_count = CASE WHEN s.requeue_count + 1 > 3 THEN d.requeue_count ELSE d.requeue_count + 1 END,
              worker_id = NULL, updated_at = now()
         FROM stuck s WHERE d.id = s.id RETURNING d.id`,
      [ids.slice(i, i + cap)],
    );
    const pushed = updated.map((r) => r.id).sort((a, b) => a - b);
    const pipe = t.redis.pipeline();
    for (let j = 0; j < pushed.length; j += 1_000) pipe.lpush(t.keys.queue('extract'), ...pushed.slice(j, j + 1_000));
    await pipe.exec();
  }
  elapsed = ms(t0);
  rows.push({
    what: 'bare SQL + LPUSH',
    documents: docs,
    ms: elapsed,
    documents_per_s: Math.round((docs / elapsed) * 1000),
    check: await checkExactlyOnce(t, ids),
  });
  await t.redis.del(t.keys.queue('extract'), t.keys.processing('extract', bareOwner));
  return rows;
}

export async function benchHealLocks(t: TestEnv, n: number): Promise<Row[]> {
  const actions = createActionActivities({
    pool: t.pool,
    redis: t.redis,
    keys: t.keys,
    docker: new Docker(),
    config: {
      maxRequeues: 3,
      requeueCap: 1000,
      restartStopTimeoutSeconds: 10,
      healthTargets: [],
      containerAllowlist: [],
      containerDenylist: [],
    },
    log: pino({ level: 'silent' }),
  });
  const call = actionCaller(actions);
  const owner = `bench-dead-${uniqueId()}`;
  const locks = Array.from({ length: n }, (_, i) => ({ documentId: String(i + 1), owner, token: `tok${i}` }));
  const setLocks = async () => {
    const pipe = t.redis.pipeline();
    for (const l of locks) pipe.set(t.keys.lock(l.documentId), `${l.owner}:${l.token}`);
    await pipe.exec();
  };
  const remaining = async () => {
    const pipe = t.redis.pipeline();
    for (const l of locks) pipe.exists(t.keys.lock(l.documentId));
    return ((await pipe.exec()) ?? []).filter(([, v]) => v === 1).length;
  };
  const rows: Row[] = [];

  await setLocks();
  let t0 = performance.now();
  const r = await call('clearStaleLocks', {
    plan: benchPlan('clear_stale_locks', { locks }),
    idempotencyKey: uniqueId(),
  });
  let elapsed = ms(t0);
  rows.push({
    what: 'clearStaleLocks (heartbeat check + compare-and-delete, one call)',
    locks: n,
    ms: elapsed,
    locks_per_s: Math.round((n / elapsed) * 1000),
    cleared: (r.details.cleared as unknown[]).length,
    left: await remaining(),
  });

  await setLocks();
  const compareAndDelete = defineScript(t.redis, 'benchCompareAndDelete', COMPARE_AND_DELETE);
  t0 = performance.now();
  const results = await Promise.all(
    locks.map((l) => compareAndDelete([t.keys.lock(l.documentId)], [`${l.owner}:${l.token}`])),
  );
  elapsed = ms(t0);
  rows.push({
    what: 'bare compare-and-delete script per lock (pipelined, no heartbeat check)',
    locks: n,
    ms: elapsed,
    locks_per_s: Math.round((n / elapsed) * 1000),
    cleared: results.filter((x) => x === 1).length,
    left: await remaining(),
  });
  return rows;
}
