/**
 * R4 and R5: PostgreSQL down for 30 s, Redis down for 30 s, each a real outage of a private server (killed, then
 * started again on the same port with its data) under `selfheal up` with auto-fix on and the reference pipeline
 * running (two extract containers; a backlog of documents waiting in queue:evaluate).
 *
 * What must hold, checked in the stores:
 * - every cycle taken during the outage reports it (Temporal cycle results; for R4 also the Redis metrics stream)
 *   and one `monitoring_degraded` healing is started, nothing else;
 * - zero remediations caused by it: no healing of a pipeline anomaly type, no executed action but the escalation of
 *   the degraded monitoring, no Docker event on the pipeline's containers, the documents and the queue exactly as
 *   before (while the outage hides the queue, the parked backlog looks lost (R5) or orphaned (R4); while it lasts
 *   every worker's /health answers 503);
 * - every audit row: each audit write the healing workflows' histories show as completed is in `healing_log` once,
 *   with the row id the activity returned, and nothing else is there. Two healings are in flight across the
 *   outage, awaiting approval: one is rejected by signal during it, the other's approval timer fires during it;
 * - afterwards the pipeline drains the backlog and new documents: one completed event per document and stage.
 */
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type Docker from 'dockerode';
import { afterEach, describe, expect, it } from 'vitest';
import { createChaos } from '../../pipeline/chaos';
import { generateDocuments } from '../../pipeline/generator';
import { ensurePipelineImage } from '../../pipeline/image';
import { PREFIX_LABEL, type PipelineRunner } from '../../pipeline/runner';
import { parseRecord } from '../../activities/metrics-stream';
import { healingWorkflowId, rejectSignal, statusQuery, WorkflowType } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import type { CycleResult } from '../../workflows/monitoring';
import { watchDockerEvents, type DockerWatch } from '../helpers/docker-events';
import { waitFor, type TestEnv } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { createTestRunner, stopTestPipeline, testDocker, waitForDocuments } from '../helpers/pipeline';
import {
  createPrivateTestEnv,
  startPrivatePostgres,
  startPrivateRedis,
  type PrivateService,
} from '../helpers/private-services';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';

type Store = 'postgres' | 'redis';
type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

const OUTAGE_MS = 30_000;
const APPROVAL_TIMEOUT_S = 20;
/** Healthy cycles to watch after the outage: time for anything it left behind to fire (2 cycles) and be healed. */
const CYCLES_AFTER = 12;
/** Activities that write `healing_log` rows: the audit, and the escalation (its `executed` row). */
const WRITERS = ['appendHealingLog', 'escalateToHuman'];
/** The audit as a local activity (a marker in the history; it returns the ids of the rows it wrote). */
const LOCAL_WRITER = 'appendHealingLogs';

/** Running parts of one scenario; every field is set as it starts, so clean-up stops what exists. */
interface Scenario {
  postgres?: PrivateService;
  redis?: PrivateService;
  t?: TestEnv;
  docker?: Docker;
  runner?: PipelineRunner;
  ollama?: FakeOllama;
  selfheal?: RunningSelfheal;
  client?: Client;
  closeClient?: () => Promise<void>;
  dockerWatch?: DockerWatch;
}

let running: Scenario = {};

afterEach(async () => {
  const s = running;
  running = {};
  s.dockerWatch?.stop();
  // A failed test may have left a server down: bring it back so the pipeline can stop cleanly.
  await s.postgres?.start().catch(() => undefined);
  await s.redis?.start().catch(() => undefined);
  await s.selfheal?.stop();
  await s.closeClient?.();
  if (s.t) await stopTestPipeline(s.t, s.runner, s.docker);
  await s.ollama?.close();
  await s.t?.cleanup();
  await s.postgres?.destroy();
  await s.redis?.destroy();
});

async function healingIds(client: Client): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = '${WorkflowType.healing}'` })) {
    ids.push(wf.workflowId);
  }
  return ids.sort();
}

/** Results of every completed monitoring cycle. */
async function cycleResults(client: Client): Promise<CycleResult[]> {
  const out: CycleResult[] = [];
  const query = `WorkflowType = '${WorkflowType.monitoringCycle}' AND ExecutionStatus = 'Completed'`;
  for await (const wf of client.workflow.list({ query })) {
    out.push((await client.workflow.getHandle(wf.workflowId, wf.runId).result()) as CycleResult);
  }
  return out.sort((a, b) => a.at - b.at);
}

async function phaseOf(client: Client, workflowId: string): Promise<string | undefined> {
  try {
    return (await client.workflow.getHandle(workflowId).query(statusQuery)).phase;
  } catch {
    return undefined;
  }
}

async function historyOf(client: Client, workflowId: string): Promise<HistoryEvent[]> {
  return (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
}

/** The documents and the evaluate backlog as the stores hold them (what a remediation would change). */
async function pipelineState(t: TestEnv) {
  const { rows } = await t.pool.query<{ id: number; stage: string; status: string; attempts: number; rq: number }>(
    `SELECT id, stage, status, attempts, requeue_count AS rq, worker_id FROM documents ORDER BY id`,
  );
  const queue = await t.redis.lrange(t.keys.queue('evaluate'), 0, -1);
  const events = await t.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM document_events');
  return { documents: rows, queue, events: events.rows[0]!.n };
}

/**
 * Audit completeness of one healing run: every `healing_log` writer its history shows completed has its row, once,
 * with the id the activity returned (for the audit: remote activities, and the local activity whose marker holds the
 * ids of the rows it wrote); none failed for good; and the log holds no other row of the run. Returns the steps in
 * order and the highest attempt an audit write took (a local activity's marker holds the attempt that succeeded).
 */
async function checkAudit(
  client: Client,
  t: TestEnv,
  workflowId: string,
): Promise<{ steps: string[]; maxAttempt: number; silenceAttempt: number; writes: number }> {
  const events = await historyOf(client, workflowId);
  const runId = events[0]?.workflowExecutionStartedEventAttributes?.originalExecutionRunId;
  const scheduled = new Map<string, { activityId: string; type: string }>();
  const attempts = new Map<string, number>();
  const completed: { activityId: string; type: string; result: unknown }[] = [];
  const failed: string[] = [];
  const local: { type: string; attempt: number; result: unknown; failed: boolean; backoff: boolean }[] = [];
  for (const e of events) {
    const m = e.markerRecordedEventAttributes;
    if (m?.markerName === 'core_local_activity') {
      const data = JSON.parse(Buffer.from(m.details!.data!.payloads![0]!.data!).toString('utf8')) as {
        activity_type: string;
        attempt: number;
        /** Set on a failed attempt whose retry waits on a timer (not a failure for good). */
        backoff?: unknown;
      };
      const r = m.details?.result?.payloads?.[0];
      local.push({
        type: data.activity_type,
        attempt: data.attempt,
        result: r ? defaultPayloadConverter.fromPayload(r) : undefined,
        failed: !!m.failure && !data.backoff,
        backoff: !!data.backoff,
      });
    }
    const id = e.eventId?.toString() ?? '';
    const s = e.activityTaskScheduledEventAttributes;
    if (s) scheduled.set(id, { activityId: s.activityId!, type: s.activityType!.name! });
    const started = e.activityTaskStartedEventAttributes;
    if (started) attempts.set(started.scheduledEventId!.toString(), started.attempt ?? 1);
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const act = scheduled.get(done.scheduledEventId!.toString())!;
      const payload = done.result?.payloads?.[0];
      completed.push({ ...act, result: payload ? defaultPayloadConverter.fromPayload(payload) : undefined });
    }
    const end =
      e.activityTaskFailedEventAttributes ??
      e.activityTaskTimedOutEventAttributes ??
      e.activityTaskCanceledEventAttributes;
    if (end) failed.push(scheduled.get(end.scheduledEventId!.toString())!.type);
  }
  const writes = completed.filter((c) => WRITERS.includes(c.type));
  const { rows } = await t.pool.query<{ id: number; run_id: string; activity_id: string; step: string }>(
    'SELECT id, run_id, activity_id, step FROM healing_log WHERE workflow_id = $1 ORDER BY id',
    [workflowId],
  );
  expect(
    [...failed, ...local.filter((l) => l.failed).map((l) => l.type)].filter(
      (f) => WRITERS.includes(f) || f === LOCAL_WRITER,
    ),
    `${workflowId}: audit writes given up`,
  ).toEqual([]);
  const localIds = local
    .filter((l) => l.type === LOCAL_WRITER && !l.failed && !l.backoff)
    .flatMap((l) => l.result as number[]);
  for (const id of localIds) {
    expect(
      rows.filter((r) => r.id === id && r.run_id === runId),
      `${workflowId}: row ${id} of a local audit write`,
    ).toHaveLength(1);
  }
  for (const w of writes) {
    const mine = rows.filter((r) => r.run_id === runId && r.activity_id === w.activityId);
    expect(mine, `${workflowId}: rows of ${w.type} activity ${w.activityId}`).toHaveLength(1);
    if (w.type === 'appendHealingLog') expect(mine[0]!.id).toBe(w.result);
    else expect(mine[0]!.step).toBe('executed');
  }
  // Nothing but those: no row from a write the history does not show as done, no duplicate.
  expect(rows.length, `${workflowId}: rows ${JSON.stringify(rows.map((r) => r.step))}`).toBe(
    writes.length + localIds.length,
  );
  const attemptsOf = (type: string) => [
    ...[...scheduled.entries()].filter(([, a]) => a.type === type).map(([id]) => attempts.get(id) ?? 0),
    ...local.filter((l) => l.type === type).map((l) => l.attempt),
  ];
  return {
    steps: rows.map((r) => r.step),
    maxAttempt: Math.max(0, ...attemptsOf('appendHealingLog'), ...attemptsOf(LOCAL_WRITER)),
    silenceAttempt: Math.max(0, ...attemptsOf('activeSilence')),
    writes: writes.length + localIds.length,
  };
}

async function outage(down: Store): Promise<void> {
  const s: Scenario = (running = {});
  s.postgres = await startPrivatePostgres();
  s.redis = await startPrivateRedis();
  const t = (s.t = await createPrivateTestEnv(s.postgres, s.redis));
  const docker = (s.docker = testDocker());
  const { image } = await ensurePipelineImage(docker);
  const runner = (s.runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } }));
  const workers = await runner.startMany([
    { stage: 'extract', kind: 'container', count: 2 },
    { stage: 'evaluate', count: 1 },
  ]);
  const done = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 20 });
  await waitForDocuments(t, done);
  // The backlog: evaluate's worker goes away (cleanly, it is not a health target), and 30 documents wait in
  // queue:evaluate across the outage, where a blind monitor would find them lost (R5) or orphaned (R4).
  await runner.stopWorker(workers.find((w) => w.stage === 'evaluate')!.worker);
  const parked = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 30 });
  await waitFor(async () => (await t.redis.llen(t.keys.queue('evaluate'))) === parked.length, {
    what: 'the backlog in queue:evaluate',
  });

  // The LLM proposes clearing stale locks with low confidence (under MIN_CONFIDENCE: approval needed); any other
  // type gets the runbook's plan, which auto-fix carries out (restarts, requeues, orphan removal).
  s.ollama = await startFakeOllama({
    replies: [
      { kind: 'content', content: '{"action":"clear_stale_locks","reasoning":"the owner is gone","confidence":0.1}' },
    ],
  });
  const ns = await allocateNamespace();
  s.selfheal = await startSelfheal(t, ns, {
    OLLAMA_HOST: s.ollama.url,
    HEALTH_TARGETS: runner.healthTargets(),
    AUTO_FIX_ENABLED: 'true',
    MIN_CONFIDENCE: '0.8',
    CONTAINER_ALLOWLIST: 'pipeline-*',
    RESTART_COOLDOWN: '0',
    MAX_ACTIONS_PER_HOUR: '100',
    VERIFY_DELAY: '3',
    APPROVAL_TIMEOUT: String(APPROVAL_TIMEOUT_S),
    LOST_DOCUMENT_THRESHOLD: '3',
    // The backlog waits on purpose: it is not a stalled queue within this test.
    QUEUE_STALL_THRESHOLD: '600',
  });
  const { client, close } = await connectClient(ns);
  s.client = client;
  s.closeClient = close;
  await waitFor(async () => (await t.redis.xlen(t.keys.metricsStream())) >= 3, { what: 'healthy cycles' });
  expect(await healingIds(client)).toEqual([]);

  // Two healings in flight across the outage, both awaiting approval.
  const chaos = createChaos({ pool: t.pool, redis: t.redis, keys: t.keys });
  const faults = [await chaos.staleLocks(2), await chaos.staleLocks(2)] as unknown as {
    owner: string;
    keys: string[];
  }[];
  const [rejected, timedOut] = faults.map((f) => healingWorkflowId('stale_locks', f.owner)) as [string, string];
  // Awaiting approval, with the approval timer started (after the notice and its audit row).
  for (const id of [rejected, timedOut]) {
    const started = (e: HistoryEvent) => e.timerStartedEventAttributes;
    await waitFor(async () => (await historyOf(client, id).catch(() => [])).some(started), {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: `${id} awaiting approval`,
    });
    expect(await phaseOf(client, id)).toBe('awaiting_approval');
  }
  // The locks expire during the outage, so afterwards no pipeline anomaly is left to heal: anything that starts
  // then is the outage's doing.
  for (const key of faults.flatMap((f) => f.keys)) await t.redis.pexpire(key, OUTAGE_MS - 10_000);

  const before = await pipelineState(t);
  const service = down === 'postgres' ? s.postgres : s.redis;
  // Docker's own record of the environment's containers from the outage to the end.
  const dockerWatch = (s.dockerWatch = await watchDockerEvents(docker, { labels: [`${PREFIX_LABEL}=${t.prefix}`] }));
  const downAt = Date.now();
  await service.stop();

  await client.workflow
    .getHandle(rejected)
    .signal(rejectSignal, { by: 'outage-test', reason: `rejected while ${down} is down` });
  const degradedId = healingWorkflowId('monitoring_degraded', down);
  await waitFor(async () => (await healingIds(client)).includes(degradedId), {
    timeoutMs: 30_000,
    intervalMs: 500,
    what: degradedId,
  });
  await waitFor(async () => (await historyOf(client, timedOut)).some((e) => e.timerFiredEventAttributes), {
    timeoutMs: 60_000,
    intervalMs: 500,
    what: `the approval timer of ${timedOut}`,
  });
  await new Promise((r) => setTimeout(r, Math.max(0, downAt + OUTAGE_MS - Date.now())));
  expect(await healingIds(client), 'healings during the outage').toEqual([degradedId, ...[rejected, timedOut]].sort());
  const upAt = Date.now();
  await service.start();

  // Healthy cycles again, and enough of them for anything the outage left to fire and be acted on.
  await waitFor(
    async () => {
      const entries = await t.redis.xrange(t.keys.metricsStream(), String(upAt), '+');
      return (
        entries
          .map(([, f]) => parseRecord(f))
          .filter((r) => r?.snapshot.sources.postgres.ok && r.snapshot.sources.redis.ok).length >= CYCLES_AFTER
      );
    },
    { timeoutMs: 90_000, intervalMs: 500, what: `${CYCLES_AFTER} healthy cycles after the outage` },
  );
  const results = Object.fromEntries(
    await Promise.all(
      [rejected, timedOut, degradedId].map(
        async (id) => [id, (await client.workflow.getHandle(id).result()) as HealingStatus] as const,
      ),
    ),
  );
  dockerWatch.stop();

  // The cycles reported the outage, and only it.
  const cycles = await cycleResults(client);
  const during = cycles.filter((c) => c.at > downAt + 1_000 && c.at < upAt - 1_000);
  // A Redis outage slows cycles down (each waits out its Redis reads): fewer of them, but never none.
  expect(during.length).toBeGreaterThanOrEqual(5);
  // Anomalies open before the outage linger for ANOMALY_CLEAR_CYCLES (noise control); nothing new opens.
  const openBefore = new Set(cycles.filter((c) => c.at < downAt).at(-1)!.active);
  for (const c of during) {
    expect(c.degraded, JSON.stringify(c)).toContain(down);
    expect(
      c.active.filter((fp) => !fp.startsWith('monitoring_degraded:') && !openBefore.has(fp)),
      JSON.stringify(c),
    ).toEqual([]);
    expect(
      c.started.filter((id) => id !== degradedId),
      JSON.stringify(c),
    ).toEqual([]);
  }
  if (down === 'postgres') {
    // Redis was up: the same cycles are in the metrics stream, with nothing but the degraded monitoring.
    const records = (await t.redis.xrange(t.keys.metricsStream(), String(downAt + 1_000), String(upAt - 1_000)))
      .map(([, f]) => parseRecord(f)!)
      .filter((r) => r.snapshot.at > downAt + 1_000 && r.snapshot.at < upAt - 1_000);
    expect(records.length).toBeGreaterThanOrEqual(5);
    for (const r of records) {
      expect(r.snapshot.sources.postgres.ok).toBe(false);
      expect([...new Set(r.candidates.map((a) => a.type))]).toEqual(['monitoring_degraded']);
    }
  }
  const degraded = results[degradedId]!;
  expect(degraded.anomaly.type).toBe('monitoring_degraded');
  expect(degraded.anomaly.detectedAt).toBeGreaterThan(downAt);
  expect(degraded.anomaly.evidence.error).toMatch(/.+/);
  expect(degraded.phase).toBe('escalated');

  // Zero remediations: no other healing, no executed action but that escalation, Docker saw nothing, the
  // documents and the backlog exactly as they were.
  expect(await healingIds(client), 'healings after the outage').toEqual([degradedId, rejected, timedOut].sort());
  const executed = await t.pool.query<{ workflow_id: string; action: string }>(
    "SELECT workflow_id, action FROM healing_log WHERE step = 'executed' ORDER BY id",
  );
  expect(executed.rows).toEqual([{ workflow_id: degradedId, action: 'escalate_to_human' }]);
  expect(dockerWatch.events.map((e) => `${e.Action} ${e.Actor?.Attributes?.name ?? ''}`)).toEqual([]);
  expect(await pipelineState(t)).toEqual(before);

  // The healings in flight were decided during the outage, as their histories say.
  expect(results[rejected]!.phase).toBe('rejected');
  expect(results[rejected]!.decision).toMatchObject({ decision: 'reject', by: 'outage-test', via: 'signal' });
  expect(results[timedOut]!.phase).toBe('rejected');
  expect(results[timedOut]!.decision).toMatchObject({ decision: 'reject', by: 'policy', via: 'timeout' });
  const fired = (await historyOf(client, timedOut)).find((e) => e.timerFiredEventAttributes)!;
  const firedAt = Number(fired.eventTime!.seconds) * 1000;
  expect(firedAt).toBeGreaterThanOrEqual(Math.floor(downAt / 1000) * 1000);
  expect(firedAt).toBeLessThanOrEqual(upAt);

  // Every audit row, once.
  const audits = {
    rejected: await checkAudit(client, t, rejected),
    timedOut: await checkAudit(client, t, timedOut),
    degraded: await checkAudit(client, t, degradedId),
  };
  expect(audits.rejected.steps.slice(-2)).toEqual(['rejected', 'rejected']);
  expect(audits.timedOut.steps.slice(-2)).toEqual(['rejected', 'rejected']);
  expect(audits.degraded.steps).toEqual(['detected', 'proposed', 'executed', 'escalated']);
  if (down === 'postgres') {
    // The writes really met the outage: they were retried until the database was back.
    expect(audits.rejected.maxAttempt).toBeGreaterThan(1);
    // The approval timeout that fired during the outage first asks whether a silence holds the healing (a read of
    // Postgres, retried until it is back: a timeout under a silence is held, not a rejection); its audit row is
    // written after that answer.
    expect(audits.timedOut.silenceAttempt).toBeGreaterThan(1);
    expect(audits.degraded.maxAttempt).toBeGreaterThan(1);
  }

  // The pipeline resumes: evaluate's worker drains the backlog, new documents go through, each once per stage.
  await runner.startMany([{ stage: 'evaluate', count: 1 }]);
  const fresh = await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: 20 });
  const all = [...done, ...parked, ...fresh];
  await waitForDocuments(t, all, { timeoutMs: 90_000 });
  const events = await t.pool.query<{ stage: string; outcome: string; n: number; docs: number }>(
    `SELECT stage, outcome, count(*)::int AS n, count(DISTINCT document_id)::int AS docs
       FROM document_events GROUP BY stage, outcome ORDER BY stage, outcome`,
  );
  expect(events.rows).toEqual([
    { stage: 'evaluate', outcome: 'completed', n: all.length, docs: all.length },
    { stage: 'extract', outcome: 'completed', n: all.length, docs: all.length },
  ]);
  console.log(`${down} down ${((upAt - downAt) / 1000).toFixed(1)} s:`, {
    cyclesDuringOutage: during.length,
    degradedDetectedAfterS: Number(((degraded.anomaly.detectedAt - downAt) / 1000).toFixed(1)),
    auditWrites: {
      rejected: audits.rejected.writes,
      timedOut: audits.timedOut.writes,
      degraded: audits.degraded.writes,
    },
    maxAuditAttempt: {
      rejected: audits.rejected.maxAttempt,
      timedOut: audits.timedOut.maxAttempt,
      degraded: audits.degraded.maxAttempt,
    },
    documents: all.length,
  });
}

describe('a store down for 30 s: reported, no remediation, every audit row', () => {
  it('R4: PostgreSQL down 30 s', () => outage('postgres'), 420_000);
  it('R5: Redis down 30 s', () => outage('redis'), 420_000);
});
