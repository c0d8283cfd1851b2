/**
 * Healing workflows in the time-skipping environment (the pinned temporal-test-server), with the real activities
 * against Postgres, Redis and the fake Ollama server: the global action budget as durable timers, approval by
 * signal and by the validated update, and the approval timeout (deny by default).
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../core/config';
import type { Anomaly } from '../../core/types';
import { healingPolicy } from '../../workers/schedule';
import { approveSignal, decideUpdate, healingWorkflowId, statusQuery } from '../../workflows/definitions';
import type { HealingInput, HealingStatus } from '../../workflows/healing';
import { healingWorkflow } from '../../workflows/healing';
import { thresholdsFrom } from '../../core/config';
import { staleLock } from '../helpers/anomalies';
import { type TestEnv, waitFor } from '../helpers/env';
import { planReply, type FakeOllama } from '../helpers/fake-ollama';
import { startTimeSkipping } from '../helpers/workers';

function config(t: TestEnv, ollama: FakeOllama, extra: Record<string, string>): Config {
  const r = parseConfig({ ...t.env, OLLAMA_HOST: ollama.url, LLM_TIMEOUT_MS: '2000', VERIFY_DELAY: '30', ...extra });
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.config;
}

describe('healing workflow, time-skipping', () => {
  let t: TestEnv;
  let ollama: FakeOllama;
  let env: TestWorkflowEnvironment;
  let server: Awaited<ReturnType<typeof startTimeSkipping>>;

  beforeAll(async () => {
    server = await startTimeSkipping({
      // The model agrees with the runbook: clear the stale locks.
      replies: [planReply('clear_stale_locks', 'owner is dead')],
      // The policy under test is fixed by each workflow's input (policyOverrides): one set serves every test.
      config: (t, ollama) => config(t, ollama, {}),
    });
    ({ t, ollama, env } = server);
  }, 120_000);

  afterAll(() => server?.stop());

  /** Runs a test body while the shared workers serve it (the policy under test is in the workflow input). */
  function withWorkers<T>(_cfg: Config, body: () => Promise<T>): Promise<T> {
    return body();
  }

  const input = (cfg: Config, anomaly: Anomaly): HealingInput => ({
    anomaly,
    policy: healingPolicy(cfg),
    // The workers' configuration is the default one: the policy under test is fixed for the run.
    policyOverrides: healingPolicy(cfg),
    thresholds: thresholdsFrom(cfg),
    containers: [],
    containerLabels: [],
  });

  it('7 anomalies with MAX_ACTIONS_PER_HOUR=5: 5 act at once, 2 wait on timers; never more than 5 in a rolling hour', async () => {
    const cfg = config(t, ollama, { AUTO_FIX_ENABLED: 'true', MAX_ACTIONS_PER_HOUR: '5', RATE_LIMIT_MAX_WAIT: '7200' });
    const start = await env.currentTimeMs();
    const anomalies = await Promise.all(Array.from({ length: 7 }, () => staleLock(t, { now: start })));
    // Started one after the other (the test server's time-skipping lock does not survive a burst of concurrent
    // starts); they all run at once all the same.
    const handles = [];
    for (const a of anomalies) {
      handles.push(
        await env.client.workflow.start(healingWorkflow, {
          taskQueue: 'selfheal-healing',
          workflowId: healingWorkflowId(a.type, a.target),
          args: [input(cfg, a)],
        }),
      );
    }
    // Results awaited one at a time: each wait lets the test server skip time, and concurrent waits unbalance its
    // time-skipping lock.
    const results: HealingStatus[] = [];
    for (const h of handles) results.push(await h.result());
    expect(results.map((r) => r.phase)).toEqual(Array(7).fill('healed'));
    for (const a of anomalies)
      expect(
        await t.redis.exists(t.keys.lock(String((a.evidence.locks as { documentId: string }[])[0]!.documentId))),
      ).toBe(0);
    const waited = results.filter((r) => r.history.some((h) => h.phase === 'rate_limited'));
    expect(waited).toHaveLength(2);

    const { rows } = await t.pool.query<{ reserved_at_ms: string }>(
      'SELECT reserved_at_ms FROM action_permits ORDER BY reserved_at_ms',
    );
    const times = rows.map((r) => Number(r.reserved_at_ms));
    expect(times).toHaveLength(7);
    for (const at of times) expect(times.filter((x) => x >= at && x < at + 3_600_000).length).toBeLessThanOrEqual(5);
    expect(times[5]! - times[0]!).toBeGreaterThanOrEqual(3_600_000);
    // One executed row per action, whatever the retries.
    const executed = await t.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM healing_log WHERE step = 'executed'",
    );
    expect(executed.rows[0]!.n).toBe(7);
  }, 300_000);

  it('escalate-only: approval by signal acts once; a duplicate approval changes nothing', async () => {
    const cfg = config(t, ollama, { AUTO_FIX_ENABLED: 'false', MAX_ACTIONS_PER_HOUR: '100' });
    const a = await staleLock(t, { now: await env.currentTimeMs() });
    const status = await withWorkers(cfg, async () => {
      const handle = await env.client.workflow.start(healingWorkflow, {
        taskQueue: 'selfheal-healing',
        workflowId: healingWorkflowId(a.type, a.target),
        args: [input(cfg, a)],
      });
      await waitFor(async () => (await handle.query(statusQuery)).phase === 'awaiting_approval', {
        what: 'awaiting approval',
      });
      await handle.signal(approveSignal, { by: 'alice', reason: 'looks right' });
      await handle.signal(approveSignal, { by: 'bob' });
      return handle.result();
    });
    expect(status.phase).toBe('healed');
    expect(status.decision).toMatchObject({ decision: 'approve', by: 'alice', via: 'signal' });
    expect(status.ignored.map((i) => i.what).join('\n')).toMatch(/bob/);
    const { rows } = await t.pool.query<{ step: string; decided_by: string | null }>(
      'SELECT step, decided_by FROM healing_log WHERE workflow_id = $1 ORDER BY id',
      [healingWorkflowId(a.type, a.target)],
    );
    expect(rows.filter((r) => r.step === 'executed')).toHaveLength(1);
    expect(rows.find((r) => r.step === 'approved')?.decided_by).toBe('alice');
  }, 120_000);

  it('the decide update is validated: empty by, unknown decision, another plan; a valid one returns the decision', async () => {
    const cfg = config(t, ollama, { AUTO_FIX_ENABLED: 'false', MAX_ACTIONS_PER_HOUR: '100' });
    const a = await staleLock(t, { now: await env.currentTimeMs() });
    await withWorkers(cfg, async () => {
      const handle = await env.client.workflow.start(healingWorkflow, {
        taskQueue: 'selfheal-healing',
        workflowId: healingWorkflowId(a.type, a.target),
        args: [input(cfg, a)],
      });
      const s = await waitFor(
        async () => {
          const st = await handle.query(statusQuery);
          return st.phase === 'awaiting_approval' ? st : undefined;
        },
        { what: 'awaiting approval' },
      );
      const bad = [
        { decision: 'approve' as const, by: '' },
        { decision: 'maybe' as 'approve', by: 'alice' },
        { decision: 'approve' as const, by: 'alice', planId: 'not-the-plan' },
      ];
      for (const d of bad) {
        await expect(handle.executeUpdate(decideUpdate, { args: [d] })).rejects.toBeInstanceOf(
          WorkflowUpdateFailedError,
        );
      }
      expect(
        await handle.executeUpdate(decideUpdate, {
          args: [{ decision: 'reject', by: 'carol', reason: 'not now', planId: s.plan!.id }],
        }),
      ).toBe('reject');
      const done = await handle.result();
      expect(done.phase).toBe('rejected');
      // A decision after the end changes nothing: the workflow is closed.
      await expect(
        handle.executeUpdate(decideUpdate, { args: [{ decision: 'approve', by: 'alice' }] }),
      ).rejects.toThrow();
    });
    const lock = (a.evidence.locks as { documentId: string }[])[0]!;
    expect(await t.redis.exists(t.keys.lock(lock.documentId))).toBe(1);
  }, 120_000);

  it('no decision within APPROVAL_TIMEOUT rejects (deny by default); nothing is executed', async () => {
    const cfg = config(t, ollama, { AUTO_FIX_ENABLED: 'false', APPROVAL_TIMEOUT: '3600' });
    const a = await staleLock(t, { now: await env.currentTimeMs() });
    const before = await env.currentTimeMs();
    const status = await withWorkers(cfg, () =>
      env.client.workflow.execute(healingWorkflow, {
        taskQueue: 'selfheal-healing',
        workflowId: healingWorkflowId(a.type, a.target),
        args: [input(cfg, a)],
      }),
    );
    expect(status.phase).toBe('rejected');
    expect(status.decision).toMatchObject({ decision: 'reject', by: 'policy', via: 'timeout' });
    expect((await env.currentTimeMs()) - before).toBeGreaterThanOrEqual(3_600_000);
    const { rows } = await t.pool.query<{ step: string }>('SELECT step FROM healing_log WHERE workflow_id = $1', [
      healingWorkflowId(a.type, a.target),
    ]);
    expect(rows.map((r) => r.step)).not.toContain('executed');
    expect(rows.map((r) => r.step)).toContain('rejected');
  }, 120_000);
});
