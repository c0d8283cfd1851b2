/**
 * Documents and locks when the pipeline and a healing meet, end to end: the reference pipeline's workers as real
 * processes, selfheal's workers in this process against Postgres, Redis and the run's Temporal dev server, each
 * healing started with the anomaly the real collector and detector report (the LLM is down: runbook plans).
 * - R8: a poison document (its worker dies every time) is requeued at most MAX_REQUEUES times, then dead-lettered
 *   with its row intact, and the healing escalates.
 * - R11: live workers finish documents while a requeue of those same documents runs: a finished document is not
 *   requeued, and every document is processed exactly once per stage.
 * - R12: a stale lock re-acquired by a live worker between the observation and the clear survives the clear.
 * What must hold is read from Postgres (documents, document_events, healing_log), Redis and the workflow results.
 */
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig, thresholdsFrom, type Config } from '../../core/config';
import { detectAll, type Thresholds } from '../../core/detectors';
import type { Anomaly } from '../../core/types';
import { generateDocuments } from '../../pipeline/generator';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { healingPolicy } from '../../workers/schedule';
import { monitorActivities } from '../../workers/activities';
import { approveSignal, healingWorkflowId, statusQuery, TaskQueue } from '../../workflows/definitions';
import { healingWorkflow, type HealingPolicy, type HealingStatus } from '../../workflows/healing';
import { createTestEnv, type TestEnv, uniqueId, waitFor, heldPort } from '../helpers/env';
import { createTestRunner, healthBody, scanAll, stopTestPipeline } from '../helpers/pipeline';
import { allocateNamespace } from '../helpers/temporal';
import { createTestWorkers, workflowBundle } from '../helpers/workers';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface LogRow {
  step: string;
  action: string | null;
  target: string;
  outcome: string | null;
  params: Record<string, unknown>;
  created_at: Date;
}

/** One namespace for the file (the run's pool is shared by every test file); each describe serves it in turn. */
let namespace: Promise<string> | undefined;

/**
 * A test environment with selfheal's three workers running in this process for it, and how to start a healing of
 * an anomaly with a given policy and wait for its result and audit rows.
 */
async function startHarness(env: Record<string, string>) {
  const t = await createTestEnv();
  // Nothing listens there: every analysis falls back to the runbook at once.
  const ollamaPort = await heldPort();
  const parsed = parseConfig({
    ...t.env,
    OLLAMA_HOST: `http://127.0.0.1:${ollamaPort}`,
    LLM_TIMEOUT_MS: '1000',
    LOG_LEVEL: 'warn',
    ...env,
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const config: Config = parsed.config;
  const ns = await (namespace ??= allocateNamespace());
  await workflowBundle();
  const native = await NativeConnection.connect({ address: inject('temporalAddress') });
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const client = new Client({ connection, namespace: ns });
  const workers = await createTestWorkers({ connection: native, namespace: ns, t, config });
  let stopWorkers: () => void = () => undefined;
  const workersDone = workers.run(() => new Promise<void>((resolve) => (stopWorkers = resolve)));
  const monitor = monitorActivities(config, { pool: t.pool, redis: t.redis });

  const policy = (over: Partial<HealingPolicy>): HealingPolicy => ({
    ...healingPolicy(config),
    autoFix: true,
    verifyDelaySeconds: 1,
    maxActionsPerHour: 10_000,
    ...over,
  });

  return {
    t,
    config,
    client,
    /** The anomaly the real collector and detector report now, if any. */
    async detect(thresholds: Thresholds, type: string, target: string): Promise<Anomaly | undefined> {
      const snapshot = await monitor.collectMetrics();
      return detectAll(snapshot, [], thresholds, snapshot.at).find((a) => a.type === type && a.target === target);
    },
    async start(anomaly: Anomaly, thresholds: Thresholds, over: Partial<HealingPolicy> = {}) {
      return client.workflow.start(healingWorkflow, {
        workflowId: healingWorkflowId(anomaly.type, anomaly.target),
        taskQueue: TaskQueue.healing,
        // The policy under test is fixed for the run (the worker's configuration is the default one).
        args: [
          {
            anomaly,
            policy: policy(over),
            policyOverrides: policy(over),
            thresholds,
            containers: [],
            containerLabels: [],
          },
        ],
      });
    },
    async auditOf(runId: string): Promise<LogRow[]> {
      const { rows } = await t.pool.query<LogRow>(
        'SELECT step, action, target, outcome, params, created_at FROM healing_log WHERE run_id = $1 ORDER BY id',
        [runId],
      );
      return rows;
    },
    async stop() {
      stopWorkers();
      await workersDone;
      await connection.close();
      await native.close();
      await t.cleanup();
    },
  };
}
type Harness = Awaited<ReturnType<typeof startHarness>>;

async function heal(h: Harness, anomaly: Anomaly, thresholds: Thresholds, over: Partial<HealingPolicy> = {}) {
  const handle = await h.start(anomaly, thresholds, over);
  const status = await handle.result();
  return { status, log: await h.auditOf(handle.firstExecutionRunId) };
}

/** Ids in any queue or processing list of the environment, with their multiplicity. */
async function listed(t: TestEnv): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const lists = [t.keys.queue('extract'), t.keys.queue('evaluate'), ...(await scanAll(t, t.keys.processingPattern()))];
  for (const key of lists) {
    for (const id of await t.redis.lrange(key, 0, -1)) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('R8: a poison document', () => {
  const MAX_REQUEUES = 2;
  let h: Harness;
  let runner: PipelineRunner;

  beforeAll(async () => {
    h = await startHarness({ MAX_REQUEUES: String(MAX_REQUEUES) });
    // A short heartbeat: the death of the worker that took the poison shows within a second.
    runner = createTestRunner(h.t, { work: { minMs: 5, maxMs: 15 }, tuning: { heartbeatMs: 200, blockTimeoutS: 0.2 } });
    // One worker more than the document can kill.
    await runner.startMany([{ stage: 'extract', count: MAX_REQUEUES + 2 }]);
  }, 180_000);

  afterAll(async () => {
    if (h) await stopTestPipeline(h.t, runner);
    await h?.stop();
  });

  it(`is requeued at most MAX_REQUEUES (${MAX_REQUEUES}) times, then dead with its row intact, and escalated`, async () => {
    const { t } = h;
    const thresholds = thresholdsFrom(h.config);
    const [poison] = await generateDocuments({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      count: 1,
      payload: { title: 'poison document', chaos: 'poison', pages: 3 },
    });
    const before = (
      await t.pool.query<{ payload: unknown; created_at: Date; stage: string }>(
        'SELECT payload, created_at, stage FROM documents WHERE id = $1',
        [poison],
      )
    ).rows[0]!;

    const healings: { status: HealingStatus; log: LogRow[] }[] = [];
    const victims: string[] = [];
    for (let round = 1; round <= MAX_REQUEUES + 1; round++) {
      // A worker took it and died: the row is processing by a worker whose heartbeat is gone.
      const owner = await waitFor(
        async () => {
          const { rows } = await t.pool.query<{ status: string; worker_id: string | null }>(
            'SELECT status, worker_id FROM documents WHERE id = $1',
            [poison],
          );
          const row = rows[0]!;
          if (row.status !== 'processing' || !row.worker_id || victims.includes(row.worker_id)) return undefined;
          return (await t.redis.exists(t.keys.heartbeat(row.worker_id))) === 0 ? row.worker_id : undefined;
        },
        { timeoutMs: 60_000, what: `round ${round}: a worker dead on the poison document` },
      );
      victims.push(owner);
      const anomaly = await waitFor(() => h.detect(thresholds, 'stuck_documents', 'extract'), {
        what: 'stuck_documents on extract',
      });
      expect(anomaly.evidence).toMatchObject({ documentIds: [poison], deadOwners: [owner] });
      healings.push(await heal(h, anomaly, thresholds, { minConfidence: 0.8 }));
    }

    // Every round requeued it through the runbook's plan; the last one found the limit reached and dead-lettered it.
    const requeues = healings.map(({ log }) => {
      const rows = log.filter((r) => r.step === 'executed' && r.action === 'requeue_documents');
      expect(rows).toHaveLength(1);
      return rows[0]!.params.result as { requeued: number[]; quarantined: number[] };
    });
    expect(requeues.map((r) => [r.requeued, r.quarantined])).toEqual([
      ...Array.from({ length: MAX_REQUEUES }, () => [[poison], []]),
      [[], [poison]],
    ]);
    const { rows } = await t.pool.query<{
      status: string;
      stage: string;
      requeue_count: number;
      attempts: number;
      error: string;
      payload: unknown;
      created_at: Date;
    }>('SELECT status, stage, requeue_count, attempts, error, payload, created_at FROM documents WHERE id = $1', [
      poison,
    ]);
    expect(rows[0]).toMatchObject({
      status: 'dead',
      stage: before.stage,
      requeue_count: MAX_REQUEUES,
      attempts: MAX_REQUEUES + 1,
      payload: before.payload,
      created_at: before.created_at,
    });
    expect(rows[0]!.error).toMatch(new RegExp(`^dead-lettered by selfheal after ${MAX_REQUEUES} requeues`));
    // It never produced an outcome, and nothing of it is left in Redis.
    expect((await t.pool.query('SELECT 1 FROM document_events WHERE document_id = $1', [poison])).rowCount).toBe(0);
    expect((await listed(t)).get(String(poison))).toBeUndefined();
    expect(await t.redis.exists(t.keys.lock(poison!))).toBe(0);

    // The last healing told a human why.
    const last = healings[healings.length - 1]!;
    expect(last.status.phase, JSON.stringify(last.status.history)).toBe('escalated');
    expect(last.log.find((r) => r.step === 'executed' && r.action === 'escalate_to_human')).toBeDefined();
    expect(last.log.find((r) => r.step === 'escalated')?.outcome).toMatch(/requeue_documents: .*quarantined/);

    // Exactly MAX_REQUEUES + 1 workers died on it; the one left still processes other documents and never takes it.
    expect(new Set(victims).size).toBe(MAX_REQUEUES + 1);
    const fresh = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 5 });
    await waitFor(
      async () =>
        (
          await t.pool.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM document_events WHERE document_id = ANY($1::bigint[]) AND outcome = 'completed'",
            [fresh],
          )
        ).rows[0]!.n === fresh.length,
      { timeoutMs: 60_000, what: 'fresh documents processed by the surviving worker' },
    );
    expect(
      (await t.pool.query<{ attempts: number }>('SELECT attempts FROM documents WHERE id = $1', [poison])).rows[0]!
        .attempts,
    ).toBe(MAX_REQUEUES + 1);
    console.log('R8 poison document:', { poison, victims, requeues });
  }, 300_000);
});

describe('R11: a requeue races workers that complete the same documents', () => {
  const DOCS = 90;
  /** Requeue rounds at least, and at most; in between, rounds go on until each side of the race won a few times. */
  const MIN_ROUNDS = 6;
  const MAX_ROUNDS = 30;
  const WINS = 3;
  let h: Harness;
  let runner: PipelineRunner;
  let workers: RunningWorker[];

  beforeAll(async () => {
    // A requeue may hit the same document in several rounds: it must never be dead-lettered here.
    h = await startHarness({ MAX_REQUEUES: '100' });
    // Work of 1 to 4 s against a stuck threshold of 1 s: the documents being processed look stuck while their live
    // workers are about to finish them, some before the requeue gets to them (about a second later), some after.
    runner = createTestRunner(h.t, { work: { minMs: 1_000, maxMs: 4_000 }, tuning: { blockTimeoutS: 0.2 } });
    workers = await runner.startMany([{ stage: 'extract', count: 6 }]);
  }, 180_000);

  afterAll(async () => {
    if (h) await stopTestPipeline(h.t, runner);
    await h?.stop();
  });

  it('a document completed while the requeue runs is not requeued; each is processed exactly once per stage', async () => {
    const { t } = h;
    const thresholds: Thresholds = { ...thresholdsFrom(h.config), stuckDocumentSeconds: 1 };
    const ids = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: DOCS });

    const rounds: { observedAt: number; observed: number[]; requeued: number[]; committedAt: Date; endedAt: number }[] =
      [];
    const won = () => {
      const requeued = rounds.reduce((n, r) => n + r.requeued.length, 0);
      const observed = rounds.reduce((n, r) => n + r.observed.length, 0);
      return { worker: observed - requeued, requeue: requeued };
    };
    const inExtract = async () =>
      (
        await t.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND stage = 'extract'",
          [ids],
        )
      ).rows[0]!.n;
    while (
      rounds.length < MIN_ROUNDS ||
      (rounds.length < MAX_ROUNDS && (won().worker < WINS || won().requeue < WINS))
    ) {
      const anomaly = await h.detect(thresholds, 'stuck_documents', 'extract');
      if (!anomaly) {
        if ((await inExtract()) === 0) break;
        await sleep(100);
        continue;
      }
      // Every owner is alive: these documents only look stuck.
      expect(anomaly.evidence.deadOwners).toEqual([]);
      const { log } = await heal(h, anomaly, thresholds, { minConfidence: 0, verifyDelaySeconds: 0 });
      const executed = log.find((r) => r.step === 'executed' && r.action === 'requeue_documents')!;
      const result = executed.params.result as { requeued: number[] };
      rounds.push({
        observedAt: anomaly.detectedAt,
        observed: anomaly.evidence.documentIds as number[],
        requeued: result.requeued.map(Number),
        committedAt: executed.created_at,
        endedAt: Date.now(),
      });
    }

    // Every document leaves extract: completed there once, handed to evaluate once.
    await waitFor(
      async () =>
        (
          await t.pool.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND stage = 'evaluate'",
            [ids],
          )
        ).rows[0]!.n === DOCS,
      { timeoutMs: 180_000, intervalMs: 500, what: `${DOCS} documents through extract` },
    );
    const events = await t.pool.query<{ document_id: string; n: number; at: Date }>(
      `SELECT document_id::text, count(*)::int AS n, max(at) AS at FROM document_events
        WHERE document_id = ANY($1::bigint[]) AND stage = 'extract' AND outcome = 'completed' GROUP BY document_id`,
      [ids],
    );
    expect(events.rows).toHaveLength(DOCS);
    expect(events.rows.filter((r) => r.n !== 1)).toEqual([]);
    const completedAt = new Map(events.rows.map((r) => [Number(r.document_id), r.at.getTime()]));
    const evaluate = await t.redis.lrange(t.keys.queue('evaluate'), 0, -1);
    expect(evaluate.map(Number).sort((a, b) => a - b)).toEqual(ids);
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(0);
    expect((await listed(t)).size).toBe(DOCS);

    // Requeued only while still processing: a requeued document completed after that requeue committed (its
    // earlier worker's result was discarded), never before. Postgres counts each requeue.
    const requeuedTimes = new Map<number, number>();
    for (const r of rounds) {
      for (const id of r.requeued) {
        expect(completedAt.get(id)!).toBeGreaterThan(r.committedAt.getTime());
        requeuedTimes.set(id, (requeuedTimes.get(id) ?? 0) + 1);
      }
    }
    const counts = await t.pool.query<{ id: string; requeue_count: number; attempts: number }>(
      'SELECT id::text, requeue_count, attempts FROM documents WHERE id = ANY($1::bigint[])',
      [ids],
    );
    for (const c of counts.rows) expect(c.requeue_count).toBe(requeuedTimes.get(Number(c.id)) ?? 0);
    // One attempt per time a document was queued in extract: taken once at first, once more after each requeue.
    const requeues = rounds.reduce((n, r) => n + r.requeued.length, 0);
    expect(counts.rows.reduce((n, c) => n + c.attempts, 0)).toBe(DOCS + requeues);
    // No worker ever popped an entry it had to drop (a completed document pushed back, or a lease left behind).
    const skipped = await Promise.all(workers.map(async (w) => (await healthBody(w.healthUrl))?.skipped));
    expect(skipped).toEqual(workers.map(() => 0));

    // The race did happen, both ways: documents observed stuck and completed by their worker before the requeue
    // reached them (left alone), and documents requeued from under a live worker (worked on again, done once).
    const workerWon = rounds.flatMap((r) =>
      r.observed.filter((id) => !r.requeued.includes(id)).map((id) => ({ id, endedAt: r.endedAt })),
    );
    for (const { id, endedAt } of workerWon) expect(completedAt.get(id)!).toBeLessThanOrEqual(endedAt);
    const requeueWon = [...requeuedTimes.keys()];
    console.log('R11 requeue vs completing workers:', {
      rounds: rounds.map((r) => ({
        observed: r.observed.length,
        requeued: r.requeued.length,
        observedToCommitMs: r.committedAt.getTime() - r.observedAt,
      })),
      completedBeforeTheRequeue: workerWon.length,
      requeuedFromLiveWorkers: requeueWon.length,
      attempts: DOCS + requeues,
    });
    expect(workerWon.length).toBeGreaterThan(0);
    expect(requeueWon.length).toBeGreaterThan(0);
  }, 400_000);
});

describe('R12: a stale lock re-acquired by a live worker just before the clear', () => {
  let h: Harness;
  let runner: PipelineRunner;
  let live: RunningWorker;

  beforeAll(async () => {
    h = await startHarness({});
    // Slow work: the live worker still holds its new lease when the clear runs.
    runner = createTestRunner(h.t, {
      work: { minMs: 20_000, maxMs: 20_000 },
      tuning: { faultPollMs: 100, blockTimeoutS: 0.2 },
    });
    live = await runner.start({ stage: 'extract' });
  }, 180_000);

  afterAll(async () => {
    if (h) await stopTestPipeline(h.t, runner);
    await h?.stop();
  });

  it('the new lease survives, its document is processed once, and only the stale locks are cleared', async () => {
    const { t } = h;
    const thresholds = thresholdsFrom(h.config);
    // The live worker holds off while the stale lease on its next document still exists.
    await t.redis.hset(t.keys.pipelineFaults(), `hang:${live.worker}`, 'silent');
    await waitFor(async () => (await healthBody(live.healthUrl))?.state === 'hung', { what: 'the worker to hold' });
    const [doc] = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 1 });
    const done = await t.pool.query<{ id: string }>(
      "INSERT INTO documents (stage, status) SELECT 'evaluate', 'completed' FROM generate_series(1, 3) RETURNING id::text AS id",
    );
    const others = done.rows.map((r) => r.id);
    const dead = uniqueId('dead-');
    // The lease on the queued document runs out soon (its owner died mid-lease); the others stay.
    await t.redis.set(t.keys.lock(doc!), `${dead}:tok-doc`, 'PX', 6_000);
    for (const [i, id] of others.entries()) await t.redis.set(t.keys.lock(id), `${dead}:tok-${i}`);

    // Observation: all four locks of the dead owner, with their tokens. The healing waits for approval.
    const anomaly = await waitFor(() => h.detect(thresholds, 'stale_locks', dead), { what: 'stale_locks' });
    expect((anomaly.evidence.locks as unknown[]).length).toBe(4);
    const handle = await h.start(anomaly, thresholds, { autoFix: false, approvalTimeoutSeconds: 600 });
    const waiting = await waitFor(
      async () => {
        const st = await handle.query(statusQuery);
        return st.phase === 'awaiting_approval' ? st : undefined;
      },
      { what: 'awaiting approval' },
    );
    expect(waiting.plan!.params.locks!.map((l) => l.documentId).sort()).toEqual([String(doc), ...others].sort());

    // Between the observation and the clear: the stale lease expires and the live worker takes the document.
    await waitFor(async () => (await t.redis.exists(t.keys.lock(doc!))) === 0, { what: 'the stale lease to expire' });
    await t.redis.hdel(t.keys.pipelineFaults(), `hang:${live.worker}`);
    const lease = await waitFor(
      async () => {
        const v = await t.redis.get(t.keys.lock(doc!));
        return v?.startsWith(`${live.worker}:`) ? v : undefined;
      },
      { what: 'the live worker to lease the document' },
    );

    await handle.signal(approveSignal, { by: 'alice', planId: waiting.plan!.id });
    const acted = await waitFor(
      async () => {
        const st = await handle.query(statusQuery);
        return st.actions.length > 0 ? st : undefined;
      },
      { what: 'the clear' },
    );
    // Right after the clear, while the live worker is still on the document: its lease is the one it took.
    expect(await t.redis.get(t.keys.lock(doc!))).toBe(lease);
    expect((await healthBody(live.healthUrl))?.current).toBe(String(doc));
    expect(acted.actions[0]).toMatchObject({ action: 'clear_stale_locks', outcome: 'done' });
    const details = acted.actions[0]!.details as { cleared: string[]; changedOrGone: string[] };
    expect([...details.cleared].sort()).toEqual([...others].sort());
    expect(details.changedOrGone).toEqual([String(doc)]);
    for (const id of others) expect(await t.redis.exists(t.keys.lock(id))).toBe(0);
    const status = await handle.result();
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');

    // The document is finished by the live worker, once, and its lease released by that worker. The worker commits
    // the row first and then, in one Redis script, releases the lease and queues the document for the next stage:
    // both are waited for (a fresh-clone run read the lease between the two).
    await waitFor(
      async () =>
        (await t.pool.query('SELECT 1 FROM documents WHERE id = $1 AND stage = $2', [doc, 'evaluate'])).rowCount ===
          1 && (await t.redis.exists(t.keys.lock(doc!))) === 0,
      { timeoutMs: 60_000, what: 'the document through extract and its lease released' },
    );
    const events = await t.pool.query<{ worker_id: string; outcome: string }>(
      'SELECT worker_id, outcome FROM document_events WHERE document_id = $1',
      [doc],
    );
    expect(events.rows).toEqual([{ worker_id: live.worker, outcome: 'completed' }]);
    expect((await t.pool.query('SELECT attempts, requeue_count FROM documents WHERE id = $1', [doc])).rows[0]).toEqual({
      attempts: 1,
      requeue_count: 0,
    });
    expect(await t.redis.exists(t.keys.lock(doc!))).toBe(0);
    expect(await t.redis.lrange(t.keys.queue('evaluate'), 0, -1)).toEqual([String(doc)]);
  }, 180_000);
});
