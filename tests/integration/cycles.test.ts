/**
 * What many monitoring cycles do to one anomaly, against Postgres, Redis, Docker and a Temporal dev server, with
 * selfheal running as `selfheal up --no-pipeline` (the Schedule, 1 s cycles) and the fake Ollama server answering
 * 500 (every plan is the runbook's):
 * - R7: an anomaly that lasts for dozens of cycles, then clears and comes back while its healing still waits for
 *   approval, has one healing workflow, and the action runs once, after approval;
 * - R10: a container that flaps (killed, back, killed again...) with RESTART_COOLDOWN scaled down is a crash loop:
 *   its restarts back off, the n-th gap at least RESTART_COOLDOWN x 2^(n-1), in healing_log, in the permits and in
 *   Docker's event stream; the firings inside a window wait on durable timers (audited), none is refused.
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CycleRecord } from '../../core/snapshot';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { healingWorkflowId, statusQuery } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { createTestEnv, type TestEnv, uniqueId, waitFor } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { watchDockerEvents, type DockerWatch } from '../helpers/docker-events';
import { createTestRunner, stopTestPipeline, testDocker } from '../helpers/pipeline';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient, recordHistories } from '../helpers/temporal';
import { cycleRecords } from '../helpers/stream';

/** Cycle records from the stream `monitoring:metrics`, oldest first (one per cycle). */
function records(t: TestEnv, sinceMs = 0): Promise<CycleRecord[]> {
  return cycleRecords(t.redis, t.keys, sinceMs);
}

const isActive = (r: CycleRecord | undefined, fingerprint: string) =>
  r?.active.some((a) => a.fingerprint === fingerprint) ?? false;

/** Every run of a workflow id, from Temporal visibility. */
async function runsOf(client: Client, workflowId: string): Promise<{ runId: string; status: string }[]> {
  const runs: { runId: string; status: string }[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    runs.push({ runId: wf.runId, status: wf.status.name });
  }
  return runs;
}

async function historyLength(client: Client, workflowId: string): Promise<number> {
  return (await client.workflow.getHandle(workflowId).fetchHistory()).events!.length;
}

interface Setup {
  t: TestEnv;
  ollama: FakeOllama;
  selfheal: RunningSelfheal;
  client: Client;
  closeClient: () => Promise<void>;
}

async function setup(extraEnv: Record<string, string>, env?: TestEnv): Promise<Setup> {
  const t = env ?? (await createTestEnv());
  const ns = await allocateNamespace();
  const ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
  const selfheal = await startSelfheal(t, ns, { OLLAMA_HOST: ollama.url, ...extraEnv });
  const { client, close } = await connectClient(ns);
  return { t, ollama, selfheal, client, closeClient: close };
}

async function teardown(s: Setup | undefined): Promise<void> {
  if (!s) return;
  await recordHistories(s.client);
  await s.selfheal.stop();
  await s.closeClient();
  await s.ollama.close();
  await s.t.cleanup();
}

describe('R7: the same anomaly over many cycles', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup({ AUTO_FIX_ENABLED: 'false', APPROVAL_TIMEOUT: '3600' });
  }, 180_000);
  afterAll(() => teardown(s));

  it('lasting for 30 cycles, then clearing and coming back while its healing waits: one healing workflow, one action after approval', async () => {
    const { t, client } = s;
    // A real stale lock: a finished document leased by a worker that never had a heartbeat.
    const owner = uniqueId('dead-');
    const { rows } = await t.pool.query<{ id: string }>(
      "INSERT INTO documents (stage, status) VALUES ('evaluate', 'completed') RETURNING id::text AS id",
    );
    const lockKey = t.keys.lock(rows[0]!.id);
    const lockValue = `${owner}:${uniqueId('tok')}`;
    await t.redis.set(lockKey, lockValue);
    const fingerprint = `stale_locks:${owner}`;
    const id = healingWorkflowId('stale_locks', owner);
    const handle = client.workflow.getHandle(id);
    const status = async () => await handle.query(statusQuery);

    const waiting = await waitFor(
      async () => {
        const st = await status().catch(() => undefined);
        return st?.phase === 'awaiting_approval' ? st : undefined;
      },
      { timeoutMs: 60_000, what: 'the healing to wait for approval' },
    );
    // Settled: the approval notice is out and audited, and the approval timeout's timer is the last event.
    const lengthWaiting = await waitFor(
      async () => {
        const notified = await t.pool.query("SELECT 1 FROM healing_log WHERE workflow_id = $1 AND step = 'notified'", [
          id,
        ]);
        const events = (await handle.fetchHistory()).events!;
        const last = events[events.length - 1];
        return notified.rowCount === 1 && last?.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_TIMER_STARTED
          ? events.length
          : undefined;
      },
      { timeoutMs: 30_000, what: 'the approval notice' },
    );
    const waitingSince = Date.now();

    // 30 more cycles with the anomaly active.
    const lasting = await waitFor(
      async () => {
        const rs = (await records(t, waitingSince)).filter((r) => isActive(r, fingerprint));
        return rs.length >= 30 ? rs : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 500, what: '30 cycles with the anomaly active' },
    );
    expect(lasting.length).toBeGreaterThanOrEqual(30);
    // Lasting cycles tell the healing nothing: its history is what it was when it began to wait.
    expect(await historyLength(client, id)).toBe(lengthWaiting);
    expect((await status()).seen).toBe(1);

    // It clears (the lock goes away for ANOMALY_CLEAR_CYCLES cycles), then comes back: it fires again while the
    // healing still waits. That firing is signalled to the open run; it starts no second healing.
    await t.redis.del(lockKey);
    const clearedAt = Date.now();
    await waitFor(
      async () => {
        const rs = await records(t, clearedAt);
        return rs.length > 0 && !isActive(rs[rs.length - 1], fingerprint);
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'the anomaly to clear' },
    );
    await t.redis.set(lockKey, lockValue);
    await waitFor(async () => (await status()).seen === 2, { timeoutMs: 60_000, what: 'the second firing' });
    expect((await status()).phase).toBe('awaiting_approval');
    expect((await status()).plan?.id).toBe(waiting.plan!.id);

    // Approve (the CLI is a separate process; the workers run in `selfheal up`): the action runs once.
    const approve = s.selfheal.cli(['approve', id, '--by', 'alice', '--reason', 'owner is gone']);
    expect(approve.status, approve.stderr).toBe(0);
    const done = (await handle.result()) as HealingStatus;
    expect(done.phase).toBe('healed');
    expect(await t.redis.exists(lockKey)).toBe(0);

    // More cycles after the healing: the anomaly is gone, nothing new starts.
    const healedAt = Date.now();
    await waitFor(async () => (await records(t, healedAt)).length >= 5, {
      timeoutMs: 60_000,
      what: '5 cycles after healing',
    });
    const runs = await waitFor(
      async () => {
        const r = await runsOf(client, id);
        return r.length > 0 && r.every((x) => x.status === 'COMPLETED') ? r : undefined;
      },
      { timeoutMs: 30_000, what: 'visibility of the healing' },
    );
    expect(runs).toHaveLength(1);
    const audit = await t.pool.query<{ step: string; n: number }>(
      'SELECT step, count(*)::int AS n FROM healing_log WHERE target = $1 GROUP BY step',
      [owner],
    );
    const steps = Object.fromEntries(audit.rows.map((r) => [r.step, r.n]));
    expect(steps.detected).toBe(1);
    expect(steps.executed).toBe(1);
    console.log('R7:', {
      lastingCycles: lasting.length,
      healingEvents: { waiting: lengthWaiting, end: await historyLength(client, id) },
    });
  }, 420_000);
});

describe('R10: a health check flapping around its threshold', () => {
  const COOLDOWN_S = 20;
  const docker: Docker = testDocker();
  let t: TestEnv;
  let s: Setup;
  let runner: PipelineRunner;
  let victim: RunningWorker;
  let watch: DockerWatch | undefined;

  beforeAll(async () => {
    t = await createTestEnv();
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } });
    victim = (await runner.startMany([{ stage: 'extract', kind: 'container', count: 1 }]))[0]!;
    s = await setup(
      {
        HEALTH_TARGETS: runner.healthTargets(),
        AUTO_FIX_ENABLED: 'true',
        RESTART_COOLDOWN: String(COOLDOWN_S),
        VERIFY_DELAY: '2',
        MAX_ACTIONS_PER_HOUR: '100',
        CONTAINER_ALLOWLIST: 'pipeline-*',
      },
      t,
    );
  }, 180_000);

  afterAll(async () => {
    watch?.stop();
    if (t) await stopTestPipeline(t, runner, docker);
    if (s) await teardown(s);
    else await t?.cleanup();
  });

  /** The run of `workflowId` started at or after `since` (epoch ms), once it has closed. */
  async function closedRunSince(workflowId: string, since: number): Promise<HealingStatus> {
    const handle = await waitFor(
      () =>
        s.client.workflow
          .getHandle(workflowId)
          .describe()
          .then(
            (d) => (d.startTime.getTime() >= since ? s.client.workflow.getHandle(workflowId, d.runId) : undefined),
            () => undefined,
          ),
      { timeoutMs: 90_000, what: `a run of ${workflowId}` },
    );
    return (await handle.result()) as HealingStatus;
  }

  it(`a crash loop backs off: restarts at least RESTART_COOLDOWN (${COOLDOWN_S} s) apart, doubling; the firings in between wait on durable timers (audited), none is refused`, async () => {
    const name = victim.container!;
    const id = healingWorkflowId('unhealthy_container', name);
    const fingerprint = `unhealthy_container:${name}`;
    const container = docker.getContainer(name);
    const begin = Date.now();
    const phases: string[] = [];
    watch = await watchDockerEvents(docker, [name]);

    // Flap: kill the container (the anomaly fires), let its healing run to the end, bring the container back if the
    // healing did not, wait until the anomaly clears, and again, until three restarts (the breaker's budget) ran.
    // A flap takes far less than the doubled backoff, so at least the third firing waits.
    const executedCount = async () =>
      (
        await t.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM healing_log WHERE target = $1 AND action = 'restart_worker' AND step = 'executed'`,
          [name],
        )
      ).rows[0]!.n;
    for (let firing = 0; firing < 6 && (await executedCount()) < 3; firing++) {
      const killedAt = Date.now();
      const kill = s.selfheal.cli(['chaos', 'kill-worker', victim.worker]);
      expect(kill.status, kill.stderr).toBe(0);
      const done = await closedRunSince(id, killedAt);
      phases.push(done.phase);
      if (!(await container.inspect()).State.Running) await container.start();
      const backAt = Date.now();
      await waitFor(
        async () => {
          const rs = await records(t, backAt);
          return rs.length > 0 && !isActive(rs[rs.length - 1], fingerprint);
        },
        { timeoutMs: 60_000, intervalMs: 250, what: 'the anomaly to clear' },
      );
    }
    const end = Date.now();

    // Restart permits (the policy's own record, workflow time): the n-th gap at least RESTART_COOLDOWN x 2^(n-1).
    const permits = await t.pool.query<{ reserved_at_ms: string }>(
      `SELECT reserved_at_ms FROM action_permits WHERE action = 'restart_worker' AND target = $1 ORDER BY reserved_at_ms`,
      [name],
    );
    const permitTimes = permits.rows.map((r) => Number(r.reserved_at_ms));
    const executed = await t.pool.query<{ at: string }>(
      `SELECT (extract(epoch FROM created_at) * 1000)::bigint::text AS at FROM healing_log
        WHERE target = $1 AND action = 'restart_worker' AND step = 'executed' ORDER BY id`,
      [name],
    );
    const executedTimes = executed.rows.map((r) => Number(r.at));
    expect(executedTimes, `the firings' healings ended: ${phases.join(', ')}`).toHaveLength(3);
    expect(permitTimes).toHaveLength(executedTimes.length);
    const gaps = permitTimes.slice(1).map((p, i) => p - permitTimes[i]!);
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(COOLDOWN_S * 1000 * 2 ** i));

    // Docker's own record: one restart per executed row, each between its permit and its audit row.
    watch.stop();
    const restarts = watch.of(name, 'restart').map((e) => Number(e.timeNano) / 1e6);
    expect(restarts).toHaveLength(executedTimes.length);
    restarts.forEach((at, i) => {
      expect(at).toBeGreaterThanOrEqual(permitTimes[i]!);
      expect(at).toBeLessThanOrEqual(executedTimes[i]! + 1_000);
    });

    // The firings inside a backoff window waited (audited once per run, with the backoff), then restarted.
    const waits = await t.pool.query<{ workflow_id: string; run_id: string; reasons: string[] }>(
      `SELECT workflow_id, run_id, params->'reasons' AS reasons FROM healing_log
        WHERE target = $1 AND action = 'restart_worker' AND step = 'rate_limited' ORDER BY id`,
      [name],
    );
    expect(waits.rows.length).toBeGreaterThanOrEqual(1);
    for (const r of waits.rows) {
      expect(r.reasons.join('; ')).toMatch(
        new RegExp(
          `crash loop: [12] restarts? of ${name} in the last 60 min, the last \\d+ s ago; backing off (${COOLDOWN_S}|${2 * COOLDOWN_S}) s`,
        ),
      );
      const steps = await t.pool.query<{ step: string; action: string | null }>(
        'SELECT step, action FROM healing_log WHERE workflow_id = $1 AND run_id = $2 ORDER BY id',
        [r.workflow_id, r.run_id],
      );
      expect(steps.rows.map((x) => `${x.step}:${x.action ?? ''}`)).toContain('executed:restart_worker');
    }
    const { rows: refused } = await t.pool.query(
      `SELECT 1 FROM healing_log WHERE target = $1 AND action = 'restart_worker' AND step = 'refused'`,
      [name],
    );
    expect(refused).toEqual([]);
    expect(phases).toEqual(['healed', 'healed', 'healed']);
    console.log('R10:', {
      firings: phases,
      seconds: Math.round((end - begin) / 1000),
      restartGapsS: gaps.map((g) => Math.round(g / 1000)),
      waits: waits.rows.length,
    });
  }, 600_000);
});
