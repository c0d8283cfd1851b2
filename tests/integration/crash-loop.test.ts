/**
 * R9, a crash-looping container, against the real pipeline (worker containers), Postgres, Redis, Docker and a
 * Temporal dev server, selfheal running as `selfheal up --no-pipeline` (the LLM is down: plans are the runbook's).
 *
 * The crash is real: SIGKILL of the worker container (the first by `selfheal chaos kill-worker`, the repeats by the
 * Docker engine's kill, which is what that command does). Each crash is timed from selfheal's own state, so the
 * test is deterministic whatever the machine's speed:
 * - a slow loop (the worker dies again after selfheal verified it healthy and the anomaly cleared, as a leak or a
 *   bad input would make it): each crash is a new incident and a new healing run, restarted while the circuit
 *   breaker allows (3 restarts of one target per hour); the fourth run finds the breaker open and escalates;
 * - a fast loop (the worker dies again right after the restart, before verification): the verification fails and
 *   the healing escalates instead of restarting again.
 * Restarts are counted in Docker's own event stream and in `healing_log`; they equal the budget, never more, also
 * after further monitoring cycles.
 */
import { spawn } from 'node:child_process';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRecord } from '../../activities/metrics-stream';
import { parseConfig } from '../../core/config';
import type { RunningWorker } from '../../pipeline/runner';
import { healingPolicy } from '../../workers/schedule';
import { healingWorkflowId, statusQuery } from '../../workflows/definitions';
import { type TestEnv, waitFor } from '../helpers/env';
import { CLI, type RunningSelfheal } from '../helpers/selfheal';
import { startStack, type Stack } from '../helpers/stack';
import { endedRun, runSince } from '../helpers/temporal';
import type { WebhookReceiver } from '../helpers/webhook-receiver';
import { watchDockerEvents } from '../helpers/docker-events';

/** The breaker's restart budget of one target per window, as `selfheal up` hands it to every healing. */
const BREAKER_RESTARTS = (() => {
  const parsed = parseConfig({});
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return healingPolicy(parsed.config).breakerRestarts;
})();

describe('R9 crash-looping container', () => {
  let stack: Stack;
  let t: TestEnv;
  let receiver: WebhookReceiver;
  let workers: RunningWorker[];
  let selfheal: RunningSelfheal;
  let client: Client;
  let docker: Docker;

  beforeAll(async () => {
    stack = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      receiver: true,
      pipeline: {
        work: { minMs: 2, maxMs: 6 },
        // Each victim has a healthy peer in its stage, so the last-healthy-worker rule never speaks.
        workers: [
          { stage: 'extract', kind: 'container', count: 2 },
          { stage: 'evaluate', kind: 'container', count: 2 },
        ],
      },
      env: ({ ollama, runner, receiver }) => ({
        OLLAMA_HOST: ollama.url,
        HEALTH_TARGETS: runner!.healthTargets(),
        AUTO_FIX_ENABLED: 'true',
        // The fast loop kills the container while the healing waits to verify: 5 s leave room for a loaded machine.
        VERIFY_DELAY: '5',
        // Small but not zero: the cooldown is on, and the slow loop's crashes come later than it.
        RESTART_COOLDOWN: '2',
        CONTAINER_ALLOWLIST: 'pipeline-*',
        ESCALATION_WEBHOOK_URL: receiver!.url,
        // MAX_ACTIONS_PER_HOUR stays at its default (5): the 3 restarts the breaker allows fit in it, so the breaker,
        // not the global budget, is what stops the loop.
      }),
    });
    ({ t, workers, selfheal, client, docker } = stack);
    receiver = stack.receiver!;
  }, 300_000);

  afterAll(() => stack?.stop());

  /** The run of the healing of `container` started after `since` (epoch ms), once it has ended. */
  const nextRun = (container: string, since: number) =>
    endedRun(client, healingWorkflowId('unhealthy_container', container), {
      since: since + 1,
      timeoutMs: 120_000,
      intervalMs: 200,
    });

  /** The latest monitoring cycle record has no open anomaly about `container`. */
  async function anomalyCleared(container: string): Promise<boolean> {
    const [entry] = await t.redis.xrevrange(t.keys.metricsStream(), '+', '-', 'COUNT', 1);
    const record = entry ? parseRecord(entry[1]) : undefined;
    return !!record && !record.active.some((a) => a.type === 'unhealthy_container' && a.target === container);
  }

  async function crash(container: string): Promise<void> {
    await docker.getContainer(container).kill({ signal: 'SIGKILL' });
  }

  async function moreCycles(n: number): Promise<void> {
    const from = await t.redis.xlen(t.keys.metricsStream());
    await waitFor(async () => (await t.redis.xlen(t.keys.metricsStream())) >= from + n, {
      timeoutMs: 60_000,
      what: `${n} more monitoring cycles`,
    });
  }

  async function executedRestarts(container: string): Promise<{ run_id: string; key: string }[]> {
    const { rows } = await t.pool.query<{ run_id: string; key: string }>(
      `SELECT run_id, idempotency_key AS key FROM healing_log
        WHERE step = 'executed' AND action = 'restart_worker' AND params->'request'->>'container' = $1 ORDER BY id`,
      [container],
    );
    return rows;
  }

  it(`slow loop: restarted ${BREAKER_RESTARTS} times, then the breaker opens and the healing escalates`, async () => {
    const victim = workers.find((w) => w.stage === 'extract')!;
    const name = victim.container!;
    const id = healingWorkflowId('unhealthy_container', name);
    const watch = await watchDockerEvents(docker, [name]);

    const first = await new Promise<number | null>((resolve) =>
      spawn(process.execPath, [...CLI, 'chaos', 'kill-worker', victim.worker], {
        env: selfheal.env,
        stdio: 'ignore',
      }).once('exit', resolve),
    );
    expect(first, 'chaos kill-worker').toBe(0);
    let since = Date.now() - 1_000;
    const runs: string[] = [];
    for (let i = 1; i <= BREAKER_RESTARTS; i++) {
      const { runId, status } = await nextRun(name, since);
      runs.push(runId);
      const why = JSON.stringify({ run: i, history: status.history, docker: watch.actions() });
      expect(status.phase, why).toBe('healed');
      expect(
        status.actions.map((a) => a.action),
        why,
      ).toEqual(['restart_worker']);
      expect(watch.count('start'), why).toBe(i);
      // The worker lives on until selfheal has closed this incident, then crashes again: a new incident.
      await waitFor(() => anomalyCleared(name), { timeoutMs: 60_000, what: `the anomaly on ${name} to clear` });
      since = Date.now();
      await crash(name);
    }

    // The fourth crash: the breaker is open, the plan (a restart) is refused and escalated.
    const { runId, status } = await nextRun(name, since);
    runs.push(runId);
    const why = JSON.stringify({ history: status.history, docker: watch.actions() });
    expect(status.phase, why).toBe('escalated');
    expect(status.plan?.action, why).toBe('restart_worker');
    expect(
      status.actions.map((a) => a.action),
      why,
    ).toEqual(['escalate_to_human']);
    expect(status.history.at(-1)!.note, why).toMatch(
      new RegExp(`circuit breaker open: ${BREAKER_RESTARTS} restarts of ${name}`),
    );
    const refused = await t.pool.query<{ reasons: string[] }>(
      `SELECT params->'reasons' AS reasons FROM healing_log WHERE run_id = $1 AND step = 'refused'`,
      [runId],
    );
    expect(refused.rows.flatMap((r) => r.reasons).join('\n')).toMatch(/circuit breaker open/);
    const escalated = await t.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM healing_log WHERE run_id = $1 AND step = 'executed' AND action = 'escalate_to_human'`,
      [runId],
    );
    expect(escalated.rows[0]!.n).toBe(1);
    const hook = await waitFor(
      () => receiver.bodies.find((b) => b.event === 'escalation' && b.workflowId === id && b.runId === runId),
      { what: 'the escalation webhook of the fourth run' },
    );
    expect(String(hook.reason)).toMatch(/circuit breaker open/);

    // Nothing restarts it afterwards: the anomaly lasts, no new run starts, the container stays down.
    await moreCycles(8);
    watch.stop();
    expect(watch.count('start'), watch.actions().join(',')).toBe(BREAKER_RESTARTS);
    expect(watch.count('restart'), watch.actions().join(',')).toBe(BREAKER_RESTARTS);
    const restarts = await executedRestarts(name);
    expect(restarts.map((r) => r.run_id)).toEqual(runs.slice(0, BREAKER_RESTARTS));
    expect(new Set(restarts.map((r) => r.key)).size).toBe(BREAKER_RESTARTS);
    expect((await client.workflow.getHandle(id).describe()).runId).toBe(runId);
    expect((await docker.getContainer(name).inspect()).State.Running).toBe(false);
    const permits = await t.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM action_permits WHERE action = 'restart_worker' AND target = $1",
      [name],
    );
    expect(permits.rows[0]!.n).toBe(BREAKER_RESTARTS);
    console.log('R9 slow crash loop:', { runs: runs.length, dockerEvents: watch.actions() });
  }, 420_000);

  it('fast loop: dies again before verification, so the healing escalates after one restart', async () => {
    const victim = workers.find((w) => w.stage === 'evaluate')!;
    const name = victim.container!;
    const id = healingWorkflowId('unhealthy_container', name);
    const watch = await watchDockerEvents(docker, [name]);
    const since = Date.now();
    await crash(name);

    // Crash again as soon as the restart is done and the healing waits to verify it.
    const { runId, handle } = await runSince(client, id, { since: since + 1, timeoutMs: 120_000, intervalMs: 200 });
    await waitFor(async () => (await handle.query(statusQuery)).phase === 'verifying', {
      timeoutMs: 120_000,
      intervalMs: 50,
      what: `${id} to verify`,
    });
    expect(watch.count('start')).toBe(1);
    await crash(name);

    const status = await handle.result();
    const why = JSON.stringify({ history: status.history, docker: watch.actions() });
    expect(status.phase, why).toBe('escalated');
    expect(
      status.actions.map((a) => a.action),
      why,
    ).toEqual(['restart_worker', 'escalate_to_human']);
    expect(status.verification?.healed, why).toBe(false);
    await moreCycles(8);
    watch.stop();
    expect(watch.count('start'), watch.actions().join(',')).toBe(1);
    expect(watch.count('restart'), watch.actions().join(',')).toBe(1);
    expect(await executedRestarts(name)).toHaveLength(1);
    expect((await client.workflow.getHandle(id).describe()).runId).toBe(runId);
    expect((await docker.getContainer(name).inspect()).State.Running).toBe(false);
    console.log('R9 fast crash loop:', { dockerEvents: watch.actions(), history: status.history.map((h) => h.phase) });
  }, 300_000);
});
