/**
 * The shape of a healing's history and the policy it applies, with the real workers' activities (Postgres, Redis,
 * the fake Ollama) on the run's Temporal dev server:
 * - the short steps on the healing worker (audit, safety check, permits, silences, the policy) are local
 *   activities: markers in the history, no activity task of their own; the checks right before the action (no
 *   silence, the permit, the policy's recheck) are one of them (`gateAction`);
 * - the policy is the healing worker's, read when the healing decides and again after it waited: a healing started
 *   with a policy in its input applies the worker's, and one awaiting approval when the worker restarts with another
 *   configuration applies the new one once approved.
 * With RECORD_HISTORIES=1 the two histories are saved for the replay test (tests/unit/replay.test.ts).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, thresholdsFrom, type Config } from '../../core/config';
import type { Anomaly } from '../../core/types';
import { healingPolicy } from '../../workers/schedule';
import { approveSignal, healingWorkflowId, statusQuery, TaskQueue } from '../../workflows/definitions';
import { healingWorkflow, type HealingInput } from '../../workflows/healing';
import { addSilence } from '../../activities/silences';
import { staleLock } from '../helpers/anomalies';
import { createTestEnv, waitFor, type TestEnv } from '../helpers/env';
import { planReply, startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { allocateNamespace } from '../helpers/temporal';
import { startTestWorkers } from '../helpers/workers';

type History = temporal.api.history.v1.IHistory;

/** Events, activity tasks (by type), local activities (by type) and workflow tasks of one history. */
function shape(history: History) {
  const events = history.events ?? [];
  const activities = events
    .map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name)
    .filter((n): n is string => !!n);
  const local = events
    .filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')
    .map((e) => {
      const data = e.markerRecordedEventAttributes!.details!.data!.payloads![0]!.data!;
      return (JSON.parse(Buffer.from(data).toString('utf8')) as { activity_type: string }).activity_type;
    });
  return {
    events: events.length,
    activities,
    local,
    workflowTasks: events.filter((e) => e.workflowTaskCompletedEventAttributes).length,
  };
}

function record(history: History, name: string) {
  if (!process.env.RECORD_HISTORIES) return;
  writeFileSync(path.join(__dirname, '../fixtures/histories', name), historyToJSON(history));
}

describe('a healing: local activities for its short steps, the policy read when it decides', () => {
  let t: TestEnv;
  let ollama: FakeOllama;
  let ns: string;

  beforeAll(async () => {
    t = await createTestEnv();
    ollama = await startFakeOllama({ replies: [planReply('clear_stale_locks', 'the owner is gone')] });
    ns = await allocateNamespace();
  }, 60_000);

  afterAll(async () => {
    await ollama?.close();
    await t?.cleanup();
  });

  function config(extra: Record<string, string>): Config {
    const r = parseConfig({ ...t.env, OLLAMA_HOST: ollama.url, LLM_TIMEOUT_MS: '2000', VERIFY_DELAY: '1', ...extra });
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    return r.config;
  }

  const input = (cfg: Config, anomaly: Anomaly): HealingInput => ({
    anomaly,
    policy: healingPolicy(cfg),
    thresholds: thresholdsFrom(cfg),
    containers: [],
    containerLabels: [],
  });

  const start = (client: Client, cfg: Config, anomaly: Anomaly) =>
    client.workflow.start(healingWorkflow, {
      taskQueue: TaskQueue.healing,
      workflowId: healingWorkflowId(anomaly.type, anomaly.target),
      args: [input(cfg, anomaly)],
    });

  it('a healed stale-lock healing: audit, safety check, permits and silences are markers, not activity tasks', async () => {
    const cfg = config({ AUTO_FIX_ENABLED: 'true', MAX_ACTIONS_PER_HOUR: '100' });
    const workers = await startTestWorkers({ namespace: ns, t, config: cfg });
    try {
      const anomaly = await staleLock(t);
      const handle = await start(workers.client, cfg, anomaly);
      const status = await handle.result();
      expect(status.phase).toBe('healed');
      expect(await t.redis.exists(t.keys.lock((anomaly.evidence.documentIds as string[])[0]!))).toBe(0);
      const history = await handle.fetchHistory();
      const s = shape(history);
      console.log('one healed stale-lock healing:', {
        events: s.events,
        activityTasks: s.activities.length,
        localActivities: s.local.length,
        workflowTasks: s.workflowTasks,
        activities: s.activities.join(','),
        local: s.local.join(','),
      });
      for (const name of ['appendHealingLog', 'appendHealingLogs', 'checkSafety', 'reservePermit', 'finishPermit']) {
        expect(s.activities, name).not.toContain(name);
      }
      // What stays remote: the evidence and the actions (actions worker), the LLM, the verification (monitor worker).
      expect(s.activities).toEqual([
        'gatherEvidence',
        'analyzeAnomaly',
        'clearStaleLocks',
        'collectMetrics',
        'inspectContainers',
        'recheckAnomaly',
      ]);
      // In order: the audit of the detection and of the plan, the policy and its verdict, their audit, then one gate
      // (no silence, the permit, the recheck) where there were five local activities, the permit closed, and the
      // verification's row written with the end's.
      expect(s.local).toEqual([
        'appendHealingLogs',
        'appendHealingLogs',
        'currentPolicy',
        'checkSafety',
        'appendHealingLogs',
        'gateAction',
        'finishPermit',
        'appendHealingLogs',
      ]);
      // Every step is still audited, in order, once.
      const { rows } = await t.pool.query<{ step: string }>(
        'SELECT step FROM healing_log WHERE run_id = $1 ORDER BY id',
        [handle.firstExecutionRunId],
      );
      expect(rows.map((r) => r.step)).toEqual(['detected', 'proposed', 'checked', 'executed', 'verified', 'healed']);
      // The gate reserved the action's permit, and the action closed it.
      const permits = await t.pool.query<{ finished: boolean; outcome: string | null }>(
        'SELECT finished_at_ms IS NOT NULL AS finished, outcome FROM action_permits WHERE workflow_id = $1',
        [handle.workflowId],
      );
      expect(permits.rows).toHaveLength(1);
      expect(permits.rows[0]!.finished).toBe(true);
      expect(permits.rows[0]!.outcome).not.toBe('refused');
      record(history, 'healing-gate-healed.json');
    } finally {
      await workers.stop();
    }
  }, 120_000);

  it('a policy changed while a healing awaits approval is the one applied once it is approved', async () => {
    // The input says auto-fix; the healing worker's configuration says approval: the worker's applies.
    const inInput = config({ AUTO_FIX_ENABLED: 'true', MAX_ACTIONS_PER_HOUR: '100' });
    const before = config({ AUTO_FIX_ENABLED: 'false', MAX_ACTIONS_PER_HOUR: '100' });
    const anomaly = await staleLock(t);
    const id = healingWorkflowId(anomaly.type, anomaly.target);
    let workers = await startTestWorkers({ namespace: ns, t, config: before });
    try {
      await start(workers.client, inInput, anomaly);
      const handle = workers.client.workflow.getHandle(id);
      await waitFor(async () => (await handle.query(statusQuery)).phase === 'awaiting_approval', {
        timeoutMs: 60_000,
        what: 'awaiting approval',
      });
    } finally {
      await workers.stop();
    }
    // The healing worker restarts with a spent budget (MAX_ACTIONS_PER_HOUR=0) while the healing waits.
    workers = await startTestWorkers({
      namespace: ns,
      t,
      config: config({ AUTO_FIX_ENABLED: 'false', MAX_ACTIONS_PER_HOUR: '0' }),
    });
    try {
      const handle = workers.client.workflow.getHandle<typeof healingWorkflow>(id);
      await handle.signal(approveSignal, { by: 'alice', reason: 'go ahead' });
      const status = await handle.result();
      expect(status.decision).toMatchObject({ decision: 'approve', by: 'alice' });
      expect(status.phase).toBe('escalated');
      expect(status.history.at(-1)!.note).toMatch(/the action budget \(0\/h\) stays spent/);
      expect(status.actions.map((a) => a.action)).toEqual(['escalate_to_human']);
      // Nothing was done: the lock is still there, no permit was granted.
      expect(await t.redis.exists(t.keys.lock((anomaly.evidence.documentIds as string[])[0]!))).toBe(1);
      const permits = await t.pool.query('SELECT 1 FROM action_permits WHERE workflow_id = $1', [id]);
      expect(permits.rows).toEqual([]);
      const { rows } = await t.pool.query<{ step: string; outcome: string | null }>(
        'SELECT step, outcome FROM healing_log WHERE workflow_id = $1 ORDER BY id',
        [id],
      );
      expect(rows.map((r) => r.step)).toEqual([
        'detected',
        'proposed',
        'checked',
        'notified',
        'approved',
        'rate_limited',
        'executed',
        'escalated',
      ]);
      const history = await handle.fetchHistory();
      expect(shape(history).activities).not.toContain('appendHealingLog');
      // The gate finds the budget spent; the step-by-step path from there waits or, as here, escalates.
      expect(shape(history).local).toContain('gateAction');
      record(history, 'healing-gate-escalated.json');
    } finally {
      await workers.stop();
    }
  }, 180_000);

  it('the gate stopped by the recheck keeps its permit: a silence then gives it back, the action waits for the silence', async () => {
    const cfg = config({ AUTO_FIX_ENABLED: 'true', MAX_ACTIONS_PER_HOUR: '100' });
    const anomaly = await staleLock(t);
    let silenceId: number | undefined;
    const workers = await startTestWorkers({
      namespace: ns,
      t,
      config: cfg,
      // The run's first gate: the real one (its permit reserved), then as if the policy's recheck had said wait, and
      // a maintenance window of 3 s on the anomaly begins. Later gates are the real one.
      healingOverrides: (real) => ({
        async gateAction(gateInput) {
          const r = await real.gateAction(gateInput);
          if (!r.pass || silenceId !== undefined) return r;
          const now = Date.now();
          const silence = await addSilence(t.pool, {
            anomalyType: anomaly.type,
            targetGlob: anomaly.target,
            // Begun a minute ago: the workflow asks with its task's clock, which may be seconds behind on a busy machine.
            startsAt: now - 60_000,
            endsAt: now + 3000,
            reason: 'maintenance',
            createdBy: 'alice',
          });
          silenceId = silence.id;
          return { pass: false, at: 'policy' };
        },
      }),
    });
    try {
      const handle = await start(workers.client, cfg, anomaly);
      const status = await handle.result();
      expect(silenceId).toBeDefined();
      expect(status.phase).toBe('healed');
      expect(await t.redis.exists(t.keys.lock((anomaly.evidence.documentIds as string[])[0]!))).toBe(0);
      // The gate's permit was given back (never held through the silence); the action ran on a new one after it.
      const permits = await t.pool.query<{ idempotency_key: string; finished: boolean; outcome: string | null }>(
        `SELECT idempotency_key, finished_at_ms IS NOT NULL AS finished, outcome FROM action_permits
          WHERE workflow_id = $1 ORDER BY id`,
        [handle.workflowId],
      );
      expect(permits.rows.map((p) => [p.finished, p.outcome === 'refused'])).toEqual([
        [true, true],
        [true, false],
      ]);
      expect(permits.rows[1]!.idempotency_key).toBe(`${permits.rows[0]!.idempotency_key}:s1`);
      const { rows } = await t.pool.query<{ step: string }>(
        'SELECT step FROM healing_log WHERE run_id = $1 ORDER BY id',
        [handle.firstExecutionRunId],
      );
      expect(rows.map((r) => r.step)).toEqual([
        'detected',
        'proposed',
        'checked',
        'silenced',
        'unsilenced',
        'executed',
        'verified',
        'healed',
      ]);
    } finally {
      await workers.stop();
    }
  }, 120_000);
});
