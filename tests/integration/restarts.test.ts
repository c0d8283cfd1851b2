/**
 * Restarts of the machinery itself (issue 6, reliability cases R2 and R3), against the real pipeline, Postgres,
 * Redis, Docker and Temporal. Ollama is down for good (a closed port): every plan is the runbook's, and
 * `llm_unavailable` fires once and stays, a steady anomaly like the others (a fake that answers slowly on a loaded
 * machine makes it flap, and each new occurrence rightly gets a new healing run).
 * - R3: the Temporal dev server (its state in a SQLite file, as `selfheal up` runs it) is killed while healings
 *   wait for approval, and started again on the same port with the same file. The healings are still there and
 *   still waiting, the Schedule still fires, the selfheal workers that were running all along serve again, and an
 *   approval afterwards acts exactly once.
 * - R2: every selfheal worker (the whole `selfheal up`) is stopped for several monitoring intervals while Temporal
 *   and the Schedule go on; faults made meanwhile are healed once selfheal is back: one healing workflow per anomaly
 *   fingerprint, and no action done twice.
 * Every check reads Postgres, Redis, Docker's event stream or Temporal (histories, visibility, the Schedule).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { waitForPollers } from '../../workers/temporal-connection';
import { healingWorkflowId, MONITOR_SCHEDULE_ID, statusQuery, TaskQueue } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { createTestEnv, heldPort, type TestEnv, waitFor } from '../helpers/env';
import { startOwnTemporal, type OwnTemporal } from '../helpers/own-temporal';
import { createTestRunner, stopTestPipeline, testDocker, waitForDocuments } from '../helpers/pipeline';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';
import { watchDockerEvents } from '../helpers/docker-events';

const LLM_ID = healingWorkflowId('llm_unavailable', 'ollama');

/** Pids of the processes `selfheal up` started (its run file), to tell whether they lived through an outage. */
function upComponents(selfheal: RunningSelfheal): { name: string; pid: number }[] {
  const file = path.join(selfheal.env.SELFHEAL_DATA_DIR!, 'up.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { components: { name: string; pid: number }[] }).components;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function phaseOf(client: Client, id: string): Promise<string | undefined> {
  const st = await client.workflow
    .getHandle(id)
    .query(statusQuery)
    .catch(() => undefined);
  return st?.phase;
}

/** Event id, type and time of every event: what must be unchanged by a server restart. */
function eventDigest(events: temporal.api.history.v1.IHistoryEvent[]): string[] {
  return events.map((e) => `${String(e.eventId)}:${String(e.eventType)}:${String(e.eventTime?.seconds)}`);
}

async function healthStatus(url: string): Promise<number> {
  try {
    return (await fetch(`${url}/health`, { signal: AbortSignal.timeout(5_000) })).status;
  } catch {
    return 0;
  }
}

describe('R3: the Temporal dev server restarts while healings wait for approval', () => {
  const docker = testDocker();
  const NS = 'selfheal-r3';
  let t: TestEnv;
  let server: OwnTemporal;
  let ollamaUrl: string;
  let receiver: WebhookReceiver;
  let runner: PipelineRunner;
  let workers: RunningWorker[];
  let selfheal: RunningSelfheal;
  let connection: Connection;
  let client: Client;
  let victim: RunningWorker;
  let watch: Awaited<ReturnType<typeof watchDockerEvents>>;
  let stuckIds: number[];
  let components: { name: string; pid: number }[];
  const restartId = () => healingWorkflowId('unhealthy_container', victim.container!);
  const requeueId = healingWorkflowId('stuck_documents', 'extract');
  const measured: Record<string, unknown> = {};

  beforeAll(async () => {
    t = await createTestEnv();
    server = await startOwnTemporal(NS);
    ollamaUrl = `http://127.0.0.1:${await heldPort()}`;
    receiver = await startWebhookReceiver();
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } });
    workers = await runner.startMany([
      { stage: 'extract', kind: 'container', count: 2 },
      { stage: 'evaluate', count: 1 },
    ]);
    selfheal = await startSelfheal(t, NS, {
      TEMPORAL_ADDRESS: server.address,
      OLLAMA_HOST: ollamaUrl,
      HEALTH_TARGETS: runner.healthTargets(),
      // Escalate-only: every action waits for a human, for as long as this test needs.
      AUTO_FIX_ENABLED: 'false',
      APPROVAL_TIMEOUT: '3600',
      VERIFY_DELAY: '3',
      RESTART_COOLDOWN: '0',
      MAX_ACTIONS_PER_HOUR: '100',
      CONTAINER_ALLOWLIST: 'pipeline-*',
      ESCALATION_WEBHOOK_URL: receiver.url,
    });
    components = upComponents(selfheal);
    connection = await Connection.connect({ address: server.address });
    client = new Client({ connection, namespace: NS });
  }, 240_000);

  afterAll(async () => {
    watch?.stop();
    await selfheal?.stop();
    await connection?.close();
    await server?.destroy();
    await stopTestPipeline(t, runner, docker);
    await receiver?.close();
    await t?.cleanup();
    console.log('R3 measured:', measured);
  });

  /** The server is down until the selfheal HTTP server reports Temporal unreachable and `extraMs` more passed. */
  async function outage(signal: 'SIGKILL' | 'SIGTERM', extraMs: number): Promise<{ downAt: number; upAt: number }> {
    const downAt = Date.now();
    await server.stop(signal);
    await waitFor(async () => (await healthStatus(selfheal.metricsUrl)) === 503, {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'selfheal /health to report Temporal down',
    });
    // Several monitoring intervals (1 s) without a server: polls, timers and the Schedule all miss their turns.
    await new Promise((r) => setTimeout(r, extraMs));
    await server.start();
    const upAt = Date.now();
    await waitFor(async () => (await healthStatus(selfheal.metricsUrl)) === 200, {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'selfheal /health to see Temporal again',
    });
    return { downAt, upAt };
  }

  /** The same selfheal processes as before the outage, alive and polling every task queue of the new server. */
  async function workersServeAgain(): Promise<void> {
    for (const c of components) expect(alive(c.pid), `${c.name} (pid ${c.pid}) survived the outage`).toBe(true);
    expect(upComponents(selfheal).map((c) => c.pid)).toEqual(components.map((c) => c.pid));
    await waitForPollers(
      connection,
      NS,
      [
        { name: TaskQueue.monitor, type: 'workflow' },
        { name: TaskQueue.monitor, type: 'activity' },
        { name: TaskQueue.healing, type: 'workflow' },
        { name: TaskQueue.healing, type: 'activity' },
        { name: TaskQueue.actions, type: 'activity' },
      ],
      120_000,
    );
  }

  /** The Schedule exists and has started a monitoring cycle after `since`, which the monitor worker completed. */
  async function scheduleFiresAfter(since: number): Promise<void> {
    const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    const cycle = await waitFor(
      async () => {
        const d = await handle.describe();
        return d.info.recentActions.find((a) => a.takenAt.getTime() > since)?.action;
      },
      { timeoutMs: 120_000, intervalMs: 500, what: 'a Schedule action after the restart' },
    );
    const wf = client.workflow.getHandle(cycle.workflow.workflowId, cycle.workflow.firstExecutionRunId);
    await wf.result();
  }

  async function openAwaitingApproval(): Promise<string[]> {
    const ids: string[] = [];
    for await (const wf of client.workflow.list({
      query: "WorkflowType = 'healingWorkflow' AND ExecutionStatus = 'Running' AND HealPhase = 'awaiting_approval'",
    }))
      ids.push(wf.workflowId);
    return ids.sort();
  }

  async function executedRows(id: string) {
    const { rows } = await t.pool.query<{ action: string; idempotency_key: string; outcome: string }>(
      "SELECT action, idempotency_key, outcome FROM healing_log WHERE workflow_id = $1 AND step = 'executed'",
      [id],
    );
    return rows;
  }

  const notices = (id: string) =>
    receiver.bodies.filter((b) => b.workflowId === id && b.event === 'approval_requested').length;

  it('killed (SIGKILL): both healings are still awaiting approval; an approval restarts the container once', async () => {
    victim = workers.find((w) => w.stage === 'extract' && w.kind === 'container')!;
    watch = await watchDockerEvents(docker, [victim.container!]);
    const kill = selfheal.cli(['chaos', 'kill-worker', victim.worker]);
    expect(kill.status, kill.stderr).toBe(0);
    const stuck = selfheal.cli(['chaos', 'stuck-documents', '3', 'extract', '--json']);
    expect(stuck.status, stuck.stderr).toBe(0);
    stuckIds = (JSON.parse(stuck.stdout) as { documents: number[] }).documents;

    for (const id of [restartId(), requeueId]) {
      await waitFor(async () => (await phaseOf(client, id)) === 'awaiting_approval', {
        timeoutMs: 120_000,
        what: `${id} awaiting approval`,
      });
      await waitFor(() => notices(id) === 1, { what: `the approval notice of ${id}` });
    }
    const before = new Map<string, string[]>();
    for (const id of [restartId(), requeueId]) {
      before.set(id, eventDigest((await client.workflow.getHandle(id).fetchHistory()).events ?? []));
    }
    const startsBefore = watch.count('start');

    const { downAt, upAt } = await outage('SIGKILL', 10_000);
    measured.sigkillOutageMs = upAt - downAt;
    await workersServeAgain();

    // Still there, still waiting: in the status query (answered by a worker), in visibility by search attribute,
    // and with the history from before the kill intact and nothing run in between.
    for (const id of [restartId(), requeueId]) {
      expect(await phaseOf(client, id)).toBe('awaiting_approval');
      const after = eventDigest((await client.workflow.getHandle(id).fetchHistory()).events ?? []);
      expect(after.slice(0, before.get(id)!.length)).toEqual(before.get(id));
      measured[`${id} events before the kill`] = before.get(id)!.length;
    }
    expect(await openAwaitingApproval()).toEqual([restartId(), requeueId].sort());
    await scheduleFiresAfter(upAt);

    const approve = selfheal.cli(['approve', restartId(), '--by', 'ops', '--reason', 'after the server restart']);
    expect(approve.status, approve.stderr).toBe(0);
    const result = (await client.workflow.getHandle(restartId()).result()) as HealingStatus;
    expect(result.phase, JSON.stringify(result.history)).toBe('healed');
    expect(result.decision).toMatchObject({ decision: 'approve', by: 'ops' });

    const executed = await executedRows(restartId());
    expect(executed.map((r) => r.action)).toEqual(['restart_worker']);
    await waitFor(async () => (await docker.getContainer(victim.container!).inspect()).State.Running);
    // The kill left the container stopped; the one start after it is the approved restart.
    expect(watch.count('start') - startsBefore, JSON.stringify(watch.events.map((e) => e.Action))).toBe(1);
    expect(notices(restartId())).toBe(1);
    // The other healing is untouched: nothing executed, still waiting.
    expect(await executedRows(requeueId)).toEqual([]);
    expect(await phaseOf(client, requeueId)).toBe('awaiting_approval');
  }, 420_000);

  it('stopped (SIGTERM) as well: the healing that waited through both restarts requeues each document once', async () => {
    const history = eventDigest((await client.workflow.getHandle(requeueId).fetchHistory()).events ?? []);
    const { downAt, upAt } = await outage('SIGTERM', 3_000);
    measured.sigtermOutageMs = upAt - downAt;
    await workersServeAgain();
    expect(await phaseOf(client, requeueId)).toBe('awaiting_approval');
    const after = eventDigest((await client.workflow.getHandle(requeueId).fetchHistory()).events ?? []);
    expect(after.slice(0, history.length)).toEqual(history);
    expect(await openAwaitingApproval()).toEqual([requeueId]);
    await scheduleFiresAfter(upAt);

    const approve = selfheal.cli(['approve', requeueId, '--by', 'ops']);
    expect(approve.status, approve.stderr).toBe(0);
    const result = (await client.workflow.getHandle(requeueId).result()) as HealingStatus;
    expect(result.phase, JSON.stringify(result.history)).toBe('healed');
    expect((await executedRows(requeueId)).map((r) => r.action)).toEqual(['requeue_documents']);
    expect(notices(requeueId)).toBe(1);

    // Each stuck document requeued exactly once, then processed once per stage.
    const { rows } = await t.pool.query<{ id: string; requeue_count: number }>(
      'SELECT id::text AS id, requeue_count FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id',
      [stuckIds],
    );
    expect(rows.map((r) => r.requeue_count)).toEqual(stuckIds.map(() => 1));
    await waitFor(
      async () => {
        const r = await t.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND status = 'completed'",
          [stuckIds],
        );
        return r.rows[0]!.n === stuckIds.length;
      },
      { timeoutMs: 60_000, what: 'the requeued documents to complete' },
    );
    const events = await t.pool.query<{ document_id: string; stage: string; n: number }>(
      `SELECT document_id::text, stage, count(*)::int AS n FROM document_events
        WHERE document_id = ANY($1::bigint[]) AND outcome = 'completed' GROUP BY 1, 2`,
      [stuckIds],
    );
    expect(events.rows).toHaveLength(stuckIds.length * 2);
    for (const r of events.rows) expect(r.n, `${r.document_id} ${r.stage}`).toBe(1);

    // Nothing lost, nothing run twice: every healing this namespace ever ran, one run each, all closed as expected
    // (Ollama's outage escalates on its own: nothing to approve). The list is Temporal's visibility store, which
    // follows a run's close a moment later (under load a run that had returned its result still listed RUNNING).
    const expected = [restartId(), requeueId, LLM_ID].sort().map((id) => ({ id, status: 'COMPLETED' }));
    const listed = async () => {
      const all: { id: string; status: string }[] = [];
      for await (const wf of client.workflow.list({ query: "WorkflowType = 'healingWorkflow'" }))
        all.push({ id: wf.workflowId, status: wf.status.name });
      return all.sort((a, b) => a.id.localeCompare(b.id));
    };
    let all = await listed();
    await waitFor(async () => isDeepStrictEqual((all = await listed()), expected), {
      timeoutMs: 15_000,
      what: 'the visibility store to list the three healings closed',
    }).catch(() => undefined);
    expect(all).toEqual(expected);
    expect(((await client.workflow.getHandle(LLM_ID).result()) as HealingStatus).phase).toBe('escalated');
    // And over the whole test the container was started once: by the approved restart, never again.
    expect(watch.count('start'), JSON.stringify(watch.events.map((e) => e.Action))).toBe(1);
  }, 420_000);
});

describe('R2: every selfheal worker is down for several cycles while the Schedule goes on', () => {
  const docker = testDocker();
  let t: TestEnv;
  let ns: string;
  let ollamaUrl: string;
  let runner: PipelineRunner;
  let workers: RunningWorker[];
  let client: Client;
  let closeClient: () => Promise<void>;
  const running: RunningSelfheal[] = [];
  let env: Record<string, string>;
  const measured: Record<string, unknown> = {};

  beforeAll(async () => {
    t = await createTestEnv();
    ns = await allocateNamespace();
    ollamaUrl = `http://127.0.0.1:${await heldPort()}`;
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } });
    workers = await runner.startMany([
      { stage: 'extract', kind: 'container', count: 2 },
      { stage: 'evaluate', count: 1 },
    ]);
    env = {
      OLLAMA_HOST: ollamaUrl,
      HEALTH_TARGETS: runner.healthTargets(),
      AUTO_FIX_ENABLED: 'true',
      MIN_CONFIDENCE: '0.6',
      // Long enough that the first healing is still open (verifying) when everything is killed.
      VERIFY_DELAY: '5',
      RESTART_COOLDOWN: '0',
      MAX_ACTIONS_PER_HOUR: '100',
      CONTAINER_ALLOWLIST: 'pipeline-*',
    };
    ({ client, close: closeClient } = await connectClient(ns));
  }, 240_000);

  afterAll(async () => {
    for (const s of running) await s.stop();
    await client?.schedule
      .getHandle(MONITOR_SCHEDULE_ID)
      .delete()
      .catch(() => undefined);
    await closeClient?.();
    await stopTestPipeline(t, runner, docker);
    await t?.cleanup();
    console.log('R2 measured:', measured);
  });

  /** SIGKILL of `selfheal up` and of every process it started: nothing drains, nothing says goodbye. */
  function killAll(selfheal: RunningSelfheal): void {
    const file = path.join(selfheal.env.SELFHEAL_DATA_DIR!, 'up.json');
    const run = JSON.parse(readFileSync(file, 'utf8')) as { pid: number; components: { pid: number }[] };
    for (const pid of [run.pid, ...run.components.map((c) => c.pid)]) process.kill(pid, 'SIGKILL');
  }

  async function runsOf(id: string): Promise<{ runId: string; status: string }[]> {
    const runs: { runId: string; status: string }[] = [];
    for await (const wf of client.workflow.list({ query: `WorkflowId = '${id}'` }))
      runs.push({ runId: wf.runId, status: wf.status.name });
    return runs;
  }

  async function closedResult(id: string): Promise<HealingStatus> {
    await waitFor(async () => (await runsOf(id)).some((r) => r.status !== 'RUNNING'), {
      timeoutMs: 240_000,
      intervalMs: 500,
      what: `${id} to close`,
    });
    return (await client.workflow.getHandle(id).result()) as HealingStatus;
  }

  it('one healing workflow per anomaly fingerprint and no action done twice', async () => {
    const first = await startSelfheal(t, ns, env);
    running.push(first);
    const [, victim] = workers.filter((w) => w.stage === 'extract' && w.kind === 'container') as [
      RunningWorker,
      RunningWorker,
    ];
    const peer = workers.find((w) => w.kind === 'container' && w !== victim)!;
    const watchVictim = await watchDockerEvents(docker, [victim.container!]);
    const watchPeer = await watchDockerEvents(docker, [peer.container!]);

    // A fault healed while selfheal is up, killed right after its action ran (the healing still open).
    const a = first.cli(['chaos', 'stuck-documents', '3', 'extract', '--json']);
    expect(a.status, a.stderr).toBe(0);
    const aIds = (JSON.parse(a.stdout) as { documents: number[] }).documents;
    const aId = healingWorkflowId('stuck_documents', 'extract');
    await waitFor(
      async () => {
        const r = await t.pool.query("SELECT 1 FROM healing_log WHERE workflow_id = $1 AND step = 'executed'", [aId]);
        return r.rowCount === 1;
      },
      { timeoutMs: 120_000, intervalMs: 50, what: `${aId} to execute its action` },
    );
    killAll(first);
    const downAt = Date.now();
    expect((await runsOf(aId)).map((r) => r.status)).toEqual(['RUNNING']);
    measured.openPhaseAtKill = (await client.workflow.getHandle(aId).describe()).searchAttributes.HealPhase;

    // Faults made while nobody watches.
    const kill = first.cli(['chaos', 'kill-worker', victim.worker]);
    expect(kill.status, kill.stderr).toBe(0);
    const b = first.cli(['chaos', 'stuck-documents', '3', 'evaluate', '--json']);
    expect(b.status, b.stderr).toBe(0);
    const bIds = (JSON.parse(b.stdout) as { documents: number[] }).documents;

    // Several cycles pass: the Schedule goes on firing, and with the cycle it started unserved, skips (overlap).
    const schedule = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    const skippedAtKill = (await schedule.describe()).info.numActionsSkippedOverlap;
    await waitFor(async () => (await schedule.describe()).info.numActionsSkippedOverlap >= skippedAtKill + 5, {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: 'five Schedule firings skipped while selfheal is down',
    });

    const second = await startSelfheal(t, ns, env);
    running.push(second);
    const upAgainAt = Date.now();
    measured.downS = (upAgainAt - downAt) / 1000;

    const xId = healingWorkflowId('unhealthy_container', victim.container!);
    const bId = healingWorkflowId('stuck_documents', 'evaluate');
    const results = new Map<string, HealingStatus>();
    for (const id of [aId, xId, bId]) results.set(id, await closedResult(id));
    for (const [id, r] of results) expect(r.phase, `${id}: ${JSON.stringify(r.history)}`).toBe('healed');
    measured.healedAfterRestartS = (Date.now() - upAgainAt) / 1000;

    // Later cycles see the pipeline healthy: nothing fires again. Wait for five cycles that completed.
    const takenAfterHeal = (await schedule.describe()).info.numActionsTaken;
    await waitFor(async () => (await schedule.describe()).info.numActionsTaken >= takenAfterHeal + 6, {
      timeoutMs: 120_000,
      intervalMs: 500,
      what: 'five more monitoring cycles',
    });

    // One workflow run per fingerprint, of every anomaly that fired: the three faults and Ollama's outage.
    const fired = new Map<string, number>();
    for (const [, fields] of await t.redis.xrange(t.keys.alertsStream(), '-', '+')) {
      const anomaly = JSON.parse(fields[1]!) as { fingerprint: string };
      fired.set(anomaly.fingerprint, (fired.get(anomaly.fingerprint) ?? 0) + 1);
    }
    measured.firings = Object.fromEntries(fired);
    expect([...fired.keys()].sort()).toEqual(
      [
        'llm_unavailable:ollama',
        'stuck_documents:extract',
        'stuck_documents:evaluate',
        `unhealthy_container:${victim.container}`,
      ].sort(),
    );
    const byId = new Map<string, number>();
    for await (const wf of client.workflow.list({ query: "WorkflowType = 'healingWorkflow'" }))
      byId.set(wf.workflowId, (byId.get(wf.workflowId) ?? 0) + 1);
    expect(Object.fromEntries(byId)).toEqual({ [aId]: 1, [xId]: 1, [bId]: 1, [LLM_ID]: 1 });

    // One executed action per healing, each idempotency key once; in the histories, each action scheduled once.
    const { rows } = await t.pool.query<{ workflow_id: string; action: string; idempotency_key: string }>(
      "SELECT workflow_id, action, idempotency_key FROM healing_log WHERE step = 'executed' ORDER BY workflow_id",
    );
    expect(rows.map((r) => [r.workflow_id, r.action]).sort()).toEqual(
      [
        [aId, 'requeue_documents'],
        [bId, 'requeue_documents'],
        [xId, 'restart_worker'],
        [LLM_ID, 'escalate_to_human'],
      ].sort(),
    );
    expect(new Set(rows.map((r) => r.idempotency_key)).size).toBe(rows.length);
    for (const [id, activity] of [
      [aId, 'requeueDocuments'],
      [bId, 'requeueDocuments'],
      [xId, 'restartWorker'],
    ] as const) {
      const history = await client.workflow.getHandle(id).fetchHistory();
      const scheduled = history.events!.filter(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activity,
      );
      expect(scheduled, `${id} ${activity}`).toHaveLength(1);
      const started = history.events!.find(
        (e) => e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() === scheduled[0]!.eventId?.toString(),
      );
      // Attempt 2 or more: the kill caught the action's activity before Temporal heard of its result (timing).
      measured[`${id} ${activity} attempt`] = started?.activityTaskStartedEventAttributes?.attempt;
    }

    // Docker: the killed container started once (the restart), its peer never.
    await waitFor(async () => (await docker.getContainer(victim.container!).inspect()).State.Running);
    watchVictim.stop();
    watchPeer.stop();
    measured.victimEvents = watchVictim.events.map((e) => e.Action);
    expect(watchVictim.count('start'), JSON.stringify(measured.victimEvents)).toBe(1);
    expect(watchPeer.count('start')).toBe(0);

    // Each stuck document requeued once and then processed once per remaining stage.
    const docs = await t.pool.query<{ id: string; requeue_count: number }>(
      'SELECT id::text AS id, requeue_count FROM documents WHERE id = ANY($1::bigint[])',
      [[...aIds, ...bIds]],
    );
    expect(docs.rows.map((r) => r.requeue_count)).toEqual([...aIds, ...bIds].map(() => 1));
    await waitForDocuments(t, [...aIds, ...bIds], { timeoutMs: 120_000 });
    const events = await t.pool.query<{ document_id: string; stage: string; n: number }>(
      `SELECT document_id::text, stage, count(*)::int AS n FROM document_events
        WHERE document_id = ANY($1::bigint[]) AND outcome = 'completed' GROUP BY 1, 2`,
      [[...aIds, ...bIds]],
    );
    // Stuck in extract: extract and evaluate; stuck in evaluate: evaluate only.
    expect(events.rows).toHaveLength(aIds.length * 2 + bIds.length);
    for (const r of events.rows) expect(r.n, `${r.document_id} ${r.stage}`).toBe(1);
  }, 600_000);
});
