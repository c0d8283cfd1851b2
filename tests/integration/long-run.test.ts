/**
 * A day of monitoring in the time-skipping environment (the pinned temporal-test-server), with the real activities
 * against Postgres, Redis, Docker and the fake Ollama server. The test server has no Schedules, so the test starts
 * one `monitoringCycleWorkflow` per MONITOR_INTERVAL of workflow time, as the Schedule `selfheal-monitor` would.
 * A stale lock lasts the whole day and auto-fix is off with a 25 h APPROVAL_TIMEOUT, so its healing waits for
 * approval from the first firing to the end: the longest-lived workflow selfheal has. What must hold: no workflow
 * history grows with the number of cycles, each stays far under Temporal's 10,240-event warning, and nothing else
 * stays open.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../core/config';
import { monitoringInput } from '../../workers/schedule';
import { healingWorkflowId, statusQuery, TaskQueue } from '../../workflows/definitions';
import { monitoringCycleWorkflow, type CycleResult } from '../../workflows/monitoring';
import { type TestEnv, uniqueId } from '../helpers/env';
import { planReply } from '../helpers/fake-ollama';
import { startTimeSkipping } from '../helpers/workers';

const INTERVAL_S = 60;
const DAY_MS = 24 * 3_600_000;
/** Temporal's history warning; the hard limit is 51,200. */
const HISTORY_WARNING = 10_240;

describe('24 hours of monitoring cycles, time-skipping', () => {
  let t: TestEnv;
  let env: TestWorkflowEnvironment;
  let cfg: Config;
  let server: Awaited<ReturnType<typeof startTimeSkipping>>;

  beforeAll(async () => {
    server = await startTimeSkipping({
      // The model agrees with the runbook: clear the stale locks (which then waits for approval: auto-fix is off).
      replies: [planReply('clear_stale_locks', 'owner is dead')],
      config: (t, ollama) => {
        const r = parseConfig({
          ...t.env,
          OLLAMA_HOST: ollama.url,
          LLM_TIMEOUT_MS: '2000',
          MONITOR_INTERVAL: String(INTERVAL_S),
          AUTO_FIX_ENABLED: 'false',
          APPROVAL_TIMEOUT: String(25 * 3600),
          LOG_LEVEL: 'warn',
        });
        if (!r.ok) throw new Error(JSON.stringify(r.problems));
        cfg = r.config;
        return cfg;
      },
    });
    ({ t, env } = server);
  }, 120_000);

  afterAll(() => server?.stop());

  it('a lasting anomaly over 1,440 one-minute cycles: one healing, open all day, whose history does not grow with the cycles; every history far under 10,240 events', async () => {
    // A real stale lock: its owner never had a heartbeat. The TTL outlasts the test's real time.
    const owner = uniqueId('dead-');
    await t.redis.set(t.keys.lock('4242'), `${owner}:${uniqueId('tok')}`, 'EX', 3 * 3600);
    const healingId = healingWorkflowId('stale_locks', owner);
    const input = monitoringInput(cfg);

    // A plain client: the test environment's own unlocks time skipping while it waits for a result, and with only
    // the healing's 25 h timer pending the server would jump there in the middle of a cycle. Time moves only in
    // env.sleep, one interval at a time.
    const client = new Client({ connection: env.connection, namespace: env.namespace ?? 'default' });
    const begin = await env.currentTimeMs();
    const realBegin = Date.now();
    const cycles: { id: string; at: number; result: CycleResult }[] = [];
    const healingLength = async () => (await env.client.workflow.getHandle(healingId).fetchHistory()).events!.length;
    let lengthAt12h: number | undefined;
    let cyclesAt12h = 0;
    // One cycle per interval of workflow time, as the Schedule would start them (overlap SKIP: never two at once).
    while ((await env.currentTimeMs()) - begin < DAY_MS) {
      const id = `selfheal-monitor-cycle-${cycles.length}`;
      const result = await client.workflow.execute(monitoringCycleWorkflow, {
        taskQueue: TaskQueue.monitor,
        workflowId: id,
        args: [input],
      });
      cycles.push({ id, at: await env.currentTimeMs(), result });
      if (lengthAt12h === undefined && (await env.currentTimeMs()) - begin >= DAY_MS / 2) {
        lengthAt12h = await healingLength();
        cyclesAt12h = cycles.length;
      }
      await env.sleep(INTERVAL_S * 1000);
    }
    const realMs = Date.now() - realBegin;
    const lengthAt24h = await healingLength();
    const firstFired = cycles.findIndex((c) => c.result.started.length > 0);

    // The anomaly lasted all day: active in every cycle from its firing (ANOMALY_FIRE_CYCLES = 2) to the end.
    expect(cycles.length).toBeGreaterThanOrEqual(DAY_MS / (INTERVAL_S * 1000) - 40);
    expect(firstFired).toBe(cfg.ANOMALY_FIRE_CYCLES - 1);
    for (const c of cycles.slice(firstFired)) expect(c.result.active).toContain(`stale_locks:${owner}`);

    // Still open, still waiting for a human a day later; its history did not grow in the second half of the day.
    const healing = env.client.workflow.getHandle(healingId);
    expect((await healing.describe()).status.name).toBe('RUNNING');
    expect((await healing.query(statusQuery)).phase).toBe('awaiting_approval');
    expect(lengthAt12h).toBeDefined();
    expect(lengthAt24h).toBe(lengthAt12h);
    expect(lengthAt24h).toBeLessThan(HISTORY_WARNING / 100);

    // The way it stays so: one healing, started once and never signalled: it fired once and lasted.
    expect(cycles.flatMap((c) => c.result.started)).toEqual([healingId]);
    expect(cycles.flatMap((c) => c.result.signalled)).toEqual([]);

    // Every cycle's history: complete, and small (a cycle is short by design).
    const cycleLengths: number[] = [];
    for (const c of cycles) {
      const handle = env.client.workflow.getHandle(c.id);
      const history = await handle.fetchHistory();
      cycleLengths.push(history.events!.length);
      expect((await handle.describe()).status.name).toBe('COMPLETED');
    }
    expect(Math.max(...cycleLengths)).toBeLessThan(HISTORY_WARNING / 100);

    // Nothing else is open: no other long-lived workflow.
    // (The test server has no visibility queries; it answers the older list of open executions.)
    const open = await env.connection.workflowService.listOpenWorkflowExecutions({
      namespace: env.namespace ?? 'default',
      maximumPageSize: 1000,
    });
    expect(open.executions.map((e) => e.execution?.workflowId)).toEqual([healingId]);

    // Nothing was done without approval.
    const { rows } = await t.pool.query<{ step: string }>('SELECT step FROM healing_log WHERE workflow_id = $1', [
      healingId,
    ]);
    expect(rows.map((r) => r.step)).not.toContain('executed');
    await healing.terminate('test over');

    console.log('24 h of cycles, time-skipping:', {
      cycles: cycles.length,
      cyclesAt12h,
      realSeconds: Math.round(realMs / 1000),
      healingEvents: { at12h: lengthAt12h, at24h: lengthAt24h },
      cycleEvents: { min: Math.min(...cycleLengths), max: Math.max(...cycleLengths) },
    });
  }, 1_500_000);
});
