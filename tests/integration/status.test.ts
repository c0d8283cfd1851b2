/**
 * `selfheal status` and `selfheal schedule pause|resume|trigger`, run as a user runs them (child processes):
 * - against a running `selfheal up --no-pipeline` with a real stale lock waiting for approval (auto-fix off): the
 *   screen's Temporal, Schedule, pollers, open healings by phase and open anomalies; pause with a note, trigger while
 *   paused, resume;
 * - against a namespace without workers: a missing Schedule, and a trigger that the Schedule's overlap policy (SKIP)
 *   skips while a cycle runs; and a Temporal that does not answer.
 */
import { spawnSync } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../../core/config';
import { type HealingRow, listHealings } from '../../starter/healings';
import type { ScheduleCommandResult } from '../../starter/schedule-command';
import { ensureMonitorSchedule } from '../../workers/schedule';
import type { StatusReport } from '../../starter/status';
import { healingWorkflowId, MONITOR_SCHEDULE_ID, TaskQueue } from '../../workflows/definitions';
import { createTestEnv, type TestEnv, uniqueId, waitFor, heldPort } from '../helpers/env';
import { CLI, type RunningSelfheal } from '../helpers/selfheal';
import { startStack, type Stack } from '../helpers/stack';
import { allocateNamespace, connectClient, healingStatus } from '../helpers/temporal';

type CliRun = { status: number | null; stdout: string; stderr: string };

function expectOneErrorLine(r: CliRun, pattern: RegExp): void {
  expect(r.status, r.stdout).not.toBe(0);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
}

describe('selfheal status and selfheal schedule, with selfheal up running', () => {
  let stack: Stack;
  let t: TestEnv;
  let ns: string;
  let selfheal: RunningSelfheal;
  let client: Client;
  const owner = uniqueId('dead-');

  function json<T>(args: string[]): T {
    const r = selfheal.cli(args);
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  }

  beforeAll(async () => {
    stack = await startStack({
      // Ollama answers its tags but every chat fails: the runbook plans, and no llm_unavailable anomaly.
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      env: ({ ollama }) => ({ OLLAMA_HOST: ollama.url, AUTO_FIX_ENABLED: 'false' }),
    });
    ({ t, ns, selfheal, client } = stack);
    await t.redis.set(t.keys.lock(String(Math.floor(Math.random() * 1e9))), `${owner}:${uniqueId('tok')}`);
    const id = healingWorkflowId('stale_locks', owner);
    await waitFor(async () => (await healingStatus(client, id))?.phase === 'awaiting_approval', {
      timeoutMs: 60_000,
      what: `${id} awaiting approval`,
    });
  }, 180_000);

  afterAll(() => stack?.stop());

  it('status --json: Temporal, the Schedule, pollers per task queue, open healings by phase, open anomalies', async () => {
    // Visibility (HealPhase) and the next cycle record follow a moment later. Status counts the open healings as
    // `selfheal healings --open` lists them; the two read Temporal's visibility one after the other, and a healing
    // that starts or ends between the reads makes them differ (a CI run beside stress-ng saw 2 against 1): they
    // are read again until a pair agrees.
    let open: HealingRow[] = [];
    const report = await waitFor(
      async () => {
        const r = json<StatusReport>(['status', '--json']);
        if (r.healings.byPhase.awaiting_approval !== 1 || !r.anomalies.available || r.anomalies.open.length === 0) {
          return undefined;
        }
        open = await listHealings(client, { open: true });
        if (r.healings.open === open.length) return r;
        console.log(
          'status and healings --open differ:',
          r.healings,
          open.map((h) => [h.workflowId, h.phase]),
        );
        return undefined;
      },
      { what: 'status with the healing awaiting approval and its anomaly, agreeing with healings --open' },
    );
    expect(report.temporal).toMatchObject({ address: inject('temporalAddress'), namespace: ns, reachable: true });
    expect(report.temporal.serverVersion).toMatch(/^\d+\.\d+/);

    const s = report.schedule;
    expect(s).toMatchObject({ id: MONITOR_SCHEDULE_ID, exists: true, paused: false, overlap: 'SKIP', everyMs: 1000 });
    expect(s.lastRun?.workflowId).toMatch(/^selfheal-monitor-cycle/);
    expect(['RUNNING', 'COMPLETED']).toContain(s.lastRun?.status);
    expect(Date.parse(s.nextRun!)).toBeGreaterThan(Date.parse(s.lastRun!.takenAt));
    expect(s.actionsTaken).toBeGreaterThan(0);

    expect(report.taskQueues.map((q) => q.name)).toEqual(Object.values(TaskQueue));
    for (const q of report.taskQueues) {
      expect(q.ok, q.name).toBe(true);
      expect(q.activityPollers, q.name).toBeGreaterThan(0);
      expect(q.identities.length, q.name).toBeGreaterThan(0);
    }
    expect(report.taskQueues.find((q) => q.name === TaskQueue.monitor)!.workflowPollers).toBeGreaterThan(0);
    expect(report.taskQueues.find((q) => q.name === TaskQueue.healing)!.workflowPollers).toBeGreaterThan(0);

    // The open healings by phase add up to the count, and the list holds the stale lock's healing, waiting.
    expect(Object.values(report.healings.byPhase).reduce((a, b) => a + b, 0)).toBe(report.healings.open);
    expect(open.map((h) => [h.workflowId, h.phase])).toContainEqual([
      healingWorkflowId('stale_locks', owner),
      'awaiting_approval',
    ]);
    expect(report.healings.truncated).toBe(false);

    expect(report.anomalies.available && report.anomalies.open).toContainEqual(
      expect.objectContaining({ type: 'stale_locks', target: owner }),
    );
    expect(report.anomalies.available && Date.parse(report.anomalies.cycleAt!)).toBeGreaterThan(0);

    const text = selfheal.cli(['status']);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toContain(`Temporal   ${inject('temporalAddress')}, namespace ${ns}`);
    expect(text.stdout).toMatch(/Schedule {3}selfheal-monitor: active, every 1 s, overlap SKIP/);
    expect(text.stdout).toMatch(/awaiting_approval 1/);
    expect(text.stdout).toContain(`stale_locks on ${owner}`);
    expect(text.stdout).not.toContain('NO WORKER');
  });

  it('schedule pause --note records who, when and why; status shows it paused', async () => {
    const r = json<ScheduleCommandResult>(['schedule', 'pause', '--note', 'investigating INC-7', '--json']);
    expect(r).toMatchObject({ scheduleId: MONITOR_SCHEDULE_ID, subcommand: 'pause', paused: true, wasPaused: false });
    expect(r.note).toMatch(/^paused by \S+ at \d{4}-\d\d-\d\dT[\d:.]+Z: investigating INC-7$/);
    const d = await client.schedule.getHandle(MONITOR_SCHEDULE_ID).describe();
    expect(d.state.paused).toBe(true);
    expect(d.state.note).toBe(r.note);

    const report = json<StatusReport>(['status', '--json']);
    expect(report.schedule).toMatchObject({ paused: true, note: r.note, nextRun: null });
    expect(selfheal.cli(['status']).stdout).toMatch(/selfheal-monitor: PAUSED.*investigating INC-7/);
  });

  it('schedule trigger runs one cycle now while paused; resume un-pauses with a note', async () => {
    const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    // Paused: the cycle that was running finishes and no other starts.
    const before = await waitFor(
      async () => {
        const d = await handle.describe();
        return d.info.runningActions.length === 0 ? d : undefined;
      },
      { what: 'no cycle running' },
    );
    const r = json<ScheduleCommandResult>(['schedule', 'trigger', '--json']);
    expect(r).toMatchObject({ subcommand: 'trigger', overlap: 'SKIP', paused: true, runningCycles: 0 });
    const after = await waitFor(
      async () => {
        const d = await handle.describe();
        return d.info.numActionsTaken === before.info.numActionsTaken + 1 ? d : undefined;
      },
      { what: 'the triggered cycle' },
    );
    const cycle = after.info.recentActions.at(-1)!.action.workflow;
    await client.workflow.getHandle(cycle.workflowId, cycle.firstExecutionRunId).result();
    expect(after.state.paused).toBe(true);

    const resumed = json<ScheduleCommandResult>(['schedule', 'resume', '--note', 'INC-7 resolved', '--json']);
    expect(resumed).toMatchObject({ subcommand: 'resume', paused: false, wasPaused: true });
    expect(resumed.note).toMatch(/^resumed by \S+ at .*: INC-7 resolved$/);
    const d = await handle.describe();
    expect(d.state.paused).toBe(false);
    expect(d.state.note).toBe(resumed.note);
  });

  it('an unknown schedule command is one error line and a non-zero exit', () => {
    expectOneErrorLine(selfheal.cli(['schedule', 'frob']), /unknown schedule command "frob": expected pause, resume/);
  });
});

describe('selfheal status and selfheal schedule, without workers', () => {
  let t: TestEnv;
  let ns: string;
  let client: Client;
  let close: () => Promise<void>;

  function cli(args: string[], address = inject('temporalAddress')): CliRun {
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      LOG_LEVEL: 'warn',
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: ns,
    };
    const r = spawnSync(process.execPath, [...CLI, ...args], { env, encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  beforeAll(async () => {
    t = await createTestEnv();
    ns = await allocateNamespace();
    ({ client, close } = await connectClient(ns));
  });

  afterAll(async () => {
    for await (const wf of client.workflow.list({ query: "ExecutionStatus = 'Running'" }))
      await client.workflow
        .getHandle(wf.workflowId, wf.runId)
        .terminate('test done')
        .catch(() => undefined);
    await client.schedule
      .getHandle(MONITOR_SCHEDULE_ID)
      .delete()
      .catch(() => undefined);
    await close?.();
    await t?.cleanup();
  });

  it('a missing Schedule: status says so, schedule commands are one error line', () => {
    const report = JSON.parse(cli(['status', '--json']).stdout) as StatusReport;
    expect(report.schedule).toEqual({ id: MONITOR_SCHEDULE_ID, exists: false });
    expect(report.taskQueues.every((q) => !q.ok && q.lastPollAt === null)).toBe(true);
    expect(report.healings).toEqual({ open: 0, byPhase: {}, truncated: false });
    expect(report.anomalies).toEqual({ available: true, cycleAt: null, open: [] });
    const text = cli(['status']);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toContain('selfheal-monitor: missing');
    expect(text.stdout).toContain('selfheal-actions (NO WORKER)');

    for (const sub of ['pause', 'resume', 'trigger'])
      expectOneErrorLine(cli(['schedule', sub]), new RegExp(`no Schedule ${MONITOR_SCHEDULE_ID} in namespace ${ns}`));
  });

  it('trigger respects the overlap policy: with a cycle running (no worker to run it), SKIP starts nothing', async () => {
    const r = parseConfig({ MONITOR_INTERVAL: '3600' });
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    await ensureMonitorSchedule(client, r.config);
    const handle = client.schedule.getHandle(MONITOR_SCHEDULE_ID);
    // Paused so that only the triggers act.
    await handle.pause('test: only triggers');

    const first = cli(['schedule', 'trigger', '--json']);
    expect(first.status, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ overlap: 'SKIP', runningCycles: 0 });
    const running = await waitFor(
      async () => {
        const d = await handle.describe();
        return d.info.runningActions.length === 1 ? d : undefined;
      },
      { what: 'the first triggered cycle running' },
    );
    expect(running.info.numActionsTaken).toBe(1);

    const second = cli(['schedule', 'trigger']);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toMatch(
      /overlap SKIP\): a cycle is running, so this one is skipped; the Schedule stays paused/,
    );
    const skipped = await waitFor(
      async () => {
        const d = await handle.describe();
        return d.info.numActionsSkippedOverlap > running.info.numActionsSkippedOverlap ? d : undefined;
      },
      { what: 'the second trigger skipped' },
    );
    expect(skipped.info.numActionsTaken).toBe(1);
    expect(skipped.info.runningActions).toHaveLength(1);
  });

  it('Temporal that does not answer: one error line and a non-zero exit', async () => {
    const address = `127.0.0.1:${await heldPort()}`;
    expectOneErrorLine(cli(['status'], address), new RegExp(`cannot reach Temporal at ${address}`));
    expectOneErrorLine(cli(['schedule', 'pause'], address), new RegExp(`cannot reach Temporal at ${address}`));
  });
});
