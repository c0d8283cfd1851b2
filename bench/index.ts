/**
 * `npm run bench -- <what>`: measurements, printed as numbers (never asserted in tests).
 *
 *   up        time for `selfheal up` to have everything up (it starts its own Temporal dev server), and the
 *             resident memory of every process it started
 *   pipeline  documents/s through both stages of the reference pipeline, and worker memory
 *             options: --workers N (per stage, default 2), --docs N (default 1000), --kind process|container
 *   heal      the remediation actions next to the bare operation they wrap:
 *             restart: a killed pipeline container back to 200 by `restartWorker` vs dockerode restart + health wait;
 *             requeue: N stuck documents of a dead worker requeued by `requeueDocuments` in chunks of --cap, checked
 *             exactly once, vs the same SQL + LPUSH run directly; locks: N stale locks cleared by `clearStaleLocks`
 *             vs the bare compare-and-delete script
 *             options: --docs N (default 100000), --cap N (default 10000), --locks N (default 10000),
 *             --rounds N (restart rounds, default 3)
 *
 *   monitor   one snapshot (`collectSnapshot`, no health targets) at --docs documents of which --queued are queued (and
 *             waiting in queue:extract), p50/p95 over --cycles runs: without reconciliation, with reconciliation
 *             when nothing is lost (every candidate found near the consuming end), and with --lost documents lost
 *             (the membership script walks every list)
 *             options: --docs N (default 1000000), --queued N (default 100000), --lost N (default 1000),
 *             --cycles N (default 30)
 *
 * Runs against the local Postgres, Redis and Docker (scripts/dev.sh services), in a schema and Redis prefix of
 * its own that it removes afterwards.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import Docker from 'dockerode';
import pino from 'pino';
import { createActionActivities, type ActionInput, type ActionResult } from '../activities/actions';
import { collectSnapshot } from '../activities/metrics';
import type { Plan, PlanParams } from '../core/plan';
import type { ActionType } from '../core/types';
import { generateDocuments } from '../pipeline/generator';
import { ensurePipelineImage } from '../pipeline/image';
import { COMPARE_AND_DELETE } from '../pipeline/lua';
import { freePort } from '../starter/temporal-local';
import { createTestEnv, uniqueId, waitFor, type TestEnv } from '../tests/helpers/env';
import { createTestRunner, httpStatus, stopTestPipeline, waitForDocuments } from '../tests/helpers/pipeline';

const ROOT = path.resolve(__dirname, '..');

/** Resident set size of a process, MiB (from /proc). */
function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

function table(rows: Record<string, string | number | undefined>[]): void {
  console.table(rows);
}

async function benchUp(): Promise<void> {
  const t = await createTestEnv();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-'));
  const env = {
    ...process.env,
    ...t.env,
    TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
    METRICS_PORT: String(await freePort()),
    SELFHEAL_DATA_DIR: dataDir,
    PIPELINE_BASE_PORT: String(await freePort()),
    PIPELINE_CONTAINER_PREFIX: `pipeline-${t.id}`,
    OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
    LOG_LEVEL: 'warn',
  };
  const t0 = Date.now();
  const child = spawn(
    process.execPath,
    [path.join(ROOT, 'bin/selfheal.cjs'), 'up', '--ui-port', String(await freePort())],
    {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    const m = await waitFor(() => /selfheal is up in ([\d.]+) s/.exec(out), {
      timeoutMs: 180_000,
      what: 'selfheal up',
    });
    const wall = (Date.now() - t0) / 1000;
    // Let the workers settle (bundles built, first cycles run) before reading memory.
    await new Promise((r) => setTimeout(r, 10_000));
    const state = JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as {
      components: { name: string; pid?: number }[];
    };
    const docker = new Docker();
    const rows: Record<string, string | number | undefined>[] = [];
    for (const c of state.components) {
      let pid = c.pid;
      let kind = 'process';
      if (pid === undefined && c.name.startsWith('pipeline-') && c.name !== 'pipeline-runner') {
        pid = (
          await docker
            .getContainer(c.name)
            .inspect()
            .catch(() => undefined)
        )?.State.Pid;
        kind = 'container';
      }
      if (pid !== undefined) rows.push({ component: c.name, kind, pid, rss_mib: rssMiB(pid) });
    }
    console.log(
      `selfheal up: ${m[1]} s to up as it reports it, ${wall.toFixed(1)} s wall time including the CLI start`,
    );
    table(rows);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dataDir, { recursive: true, force: true });
    await t.cleanup();
  }
}

async function benchPipeline(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      workers: { type: 'string', default: '2' },
      docs: { type: 'string', default: '1000' },
      kind: { type: 'string', default: 'process' },
    },
  });
  const perStage = Number(values.workers);
  const docs = Number(values.docs);
  const kind = values.kind === 'container' ? 'container' : 'process';
  const t = await createTestEnv();
  const docker = new Docker();
  const image = kind === 'container' ? (await ensurePipelineImage(docker)).image : undefined;
  const runner = createTestRunner(t, { docker, image });
  try {
    const workers = await runner.startMany([
      { stage: 'extract', kind, count: perStage },
      { stage: 'evaluate', kind, count: perStage },
    ]);
    const t0 = Date.now();
    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: docs });
    await waitForDocuments(t, ids, { timeoutMs: 600_000 });
    const seconds = (Date.now() - t0) / 1000;
    console.log(
      `pipeline: ${docs} documents through both stages with ${perStage}+${perStage} ${kind} workers in ${seconds.toFixed(2)} s = ${(docs / seconds).toFixed(0)} documents/s`,
    );
    const rows = [];
    for (const w of workers) {
      const pid = w.pid ?? (w.container ? (await docker.getContainer(w.container).inspect()).State.Pid : undefined);
      rows.push({ worker: w.worker, kind: w.kind, rss_mib: pid ? rssMiB(pid) : undefined });
    }
    table(rows);
  } finally {
    await stopTestPipeline(t, runner, docker);
    await t.cleanup();
  }
}

// ---- heal ---------------------------------------------------------------------------------------------------

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

const ms = (t0: number) => Math.round(performance.now() - t0);

async function benchHealRestart(t: TestEnv, docker: Docker, rounds: number): Promise<void> {
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
    const rows: Record<string, string | number | undefined>[] = [];
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
    console.log('restart: a killed pipeline container until its /health answers 200 (health polled every 200 ms)');
    table(rows);
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

async function benchHealRequeue(t: TestEnv, docs: number, cap: number): Promise<void> {
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
  const rows: Record<string, string | number>[] = [];

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
  console.log(`requeue: ${docs} stuck documents of one dead worker, chunks of ${cap}`);
  table(rows);
}

async function benchHealLocks(t: TestEnv, n: number): Promise<void> {
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
  const rows: Record<string, string | number>[] = [];

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
  t.redis.defineCommand('benchCompareAndDelete', { numberOfKeys: 1, lua: COMPARE_AND_DELETE });
  const cad = t.redis as unknown as { benchCompareAndDelete(k: string, v: string): Promise<number> };
  t0 = performance.now();
  const results = await Promise.all(
    locks.map((l) => cad.benchCompareAndDelete(t.keys.lock(l.documentId), `${l.owner}:${l.token}`)),
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
  console.log(`locks: ${n} stale locks of a worker with no heartbeat`);
  table(rows);
}

async function benchHeal(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      docs: { type: 'string', default: '100000' },
      cap: { type: 'string', default: '10000' },
      locks: { type: 'string', default: '10000' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const t = await createTestEnv();
  const docker = new Docker();
  try {
    await benchHealRestart(t, docker, Number(values.rounds));
    await benchHealRequeue(t, Number(values.docs), Number(values.cap));
    await benchHealLocks(t, Number(values.locks));
  } finally {
    await t.cleanup();
  }
}

// ---- monitor ------------------------------------------------------------------------------------------------

const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};

async function benchMonitor(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      docs: { type: 'string', default: '1000000' },
      queued: { type: 'string', default: '100000' },
      lost: { type: 'string', default: '1000' },
      cycles: { type: 'string', default: '30' },
    },
  });
  const docs = Number(values.docs);
  const queued = Number(values.queued);
  const lost = Number(values.lost);
  const cycles = Number(values.cycles);
  const t = await createTestEnv();
  try {
    const t0 = Date.now();
    // Completed documents first (the bulk), then the queued ones, oldest first; all queued for an hour already.
    await t.pool.query(
      `INSERT INTO documents (stage, status, created_at, updated_at, completed_at)
       SELECT 'evaluate', 'completed', now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours'
         FROM generate_series(1, $1::int)`,
      [docs - queued],
    );
    const { rows } = await t.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status, created_at, updated_at)
       SELECT 'extract', 'queued', now() - interval '1 hour' + make_interval(secs => n / 1000.0),
              now() - interval '1 hour' + make_interval(secs => n / 1000.0)
         FROM generate_series(1, $1::int) AS n ORDER BY n RETURNING id::text AS id`,
      [queued],
    );
    await t.pool.query('ANALYZE documents');
    // LPUSH in id order: the oldest id ends at the tail, where workers take (and the membership walk starts).
    const ids = rows.map((r) => r.id);
    for (let i = 0; i < ids.length; i += 10_000)
      await t.redis.lpush(t.keys.queue('extract'), ...ids.slice(i, i + 10_000));
    console.log(
      `monitor: ${docs} documents, ${queued} queued in queue:extract, set up in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );

    const deps = {
      redis: t.redis,
      pool: t.pool,
      keys: t.keys,
      stages: ['extract', 'evaluate'],
      healthTargets: [],
      ollamaHost: 'http://127.0.0.1:9',
      ollamaModel: 'none',
      windowSeconds: 300,
      lostDocumentSeconds: 600,
    };
    const measure = async (label: string, reconcile: boolean) => {
      const ms: number[] = [];
      let last: Awaited<ReturnType<typeof collectSnapshot>> | undefined;
      for (let i = 0; i < cycles; i++) {
        const s0 = performance.now();
        last = await collectSnapshot({ ...deps, reconcile });
        ms.push(performance.now() - s0);
      }
      const rec = last?.reconcile;
      return {
        snapshot: label,
        p50_ms: Number(percentile(ms, 50).toFixed(1)),
        p95_ms: Number(percentile(ms, 95).toFixed(1)),
        lost_found: rec ? rec.lost.length : '-',
        candidates: rec ? rec.lostCandidates : '-',
        entries_checked: rec ? rec.entriesChecked : '-',
      };
    };
    const out = [
      await measure('without reconciliation', false),
      await measure('with reconciliation, nothing lost', true),
    ];
    // The oldest `lost` queued ids vanish from the queue: the walk must cover every list to prove them lost.
    await t.redis.ltrim(t.keys.queue('extract'), 0, -(lost + 1));
    out.push(await measure(`with reconciliation, ${lost} lost`, true));
    table(out);
  } finally {
    await t.cleanup();
  }
}

async function main(): Promise<void> {
  const [what = 'all', ...rest] = process.argv.slice(2);
  if (what === 'monitor' || what === 'all') await benchMonitor(what === 'monitor' ? rest : []);
  if (what === 'up' || what === 'all') await benchUp();
  if (what === 'pipeline' || what === 'all') await benchPipeline(rest);
  if (what === 'heal' || what === 'all') await benchHeal(what === 'heal' ? rest : []);
  if (!['up', 'pipeline', 'heal', 'monitor', 'all'].includes(what)) {
    console.error(`unknown benchmark "${what}": expected up, pipeline, heal, monitor or all`);
    process.exit(2);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
