/**
 * Docker-native health against the real Docker engine, with containers that declare a HEALTHCHECK (busybox, from the
 * pipeline image): autoheal's own three scenarios (unhealthy + label → restarted; healthy + label → never restarted;
 * unhealthy, no label, outside the allow list → escalated, never touched), the stop-timeout label passed to the
 * restart, a stopped container left alone beside a killed one restarted, and an allow-listed container outside the
 * pipeline (no stage) whose HEALTH_TARGETS URL fails, restarted and healthy again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerActivities, policyRestartsSince, recordPolicyRestarts } from '../../activities/docker';
import { createSafetyActivities } from '../../activities/safety';
import { PREFIX_LABEL } from '../../pipeline/runner-support';
import { healingWorkflowId, type HealingStatus } from '../../workflows/definitions';
import { makeUnhealthy, removeTestContainers, runTestContainer, SLEEPER, STOPPABLE } from '../helpers/containers';
import { watchDockerEvents } from '../helpers/docker-events';
import { waitFor, heldPort } from '../helpers/env';
import { startStack, type Stack } from '../helpers/stack';
import { endedRun } from '../helpers/temporal';

describe('Docker-native health', () => {
  let s: Stack;
  let events: Awaited<ReturnType<typeof watchDockerEvents>>;
  let webPort: number;
  const name = (role: string) => `dh-${s.t.id}-${role}`;
  const web = () => `dhallow-${s.t.id}-web`;
  const inspect = (n: string) => s.docker.getContainer(n).inspect();
  const unhealthy = makeUnhealthy;
  /** What happened to a container's state (health checks and `docker exec` left out). */
  const lifecycle = (n: string) => events.actions(n).filter((a) => !/^(exec_|health_status)/.test(a ?? ''));
  const ended = async (id: string): Promise<HealingStatus> =>
    (await endedRun(s.client, id, { timeoutMs: 60_000 })).status;

  async function executed(id: string) {
    const { rows } = await s.t.pool.query<{ action: string; outcome: string; params: Record<string, unknown> }>(
      `SELECT action, outcome, params FROM healing_log WHERE workflow_id = $1 AND step = 'executed' ORDER BY id`,
      [id],
    );
    return rows;
  }

  beforeAll(async () => {
    webPort = await heldPort();
    s = await startStack({
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      receiver: true,
      async beforeSelfheal({ docker, t }) {
        const named = (role: string) => `dh-${t.id}-${role}`;
        const server = [
          "const fs = require('fs');",
          "fs.writeFileSync('/tmp/healthy', '');",
          "require('http').createServer((q, s) => { s.statusCode = fs.existsSync('/tmp/healthy') ? 200 : 500; s.end(); })",
          `.listen(${webPort}, '127.0.0.1');`,
          "process.on('SIGTERM', () => process.exit(0));",
        ].join('\n');
        const labelled = { autoheal: 'true', 'autoheal.stop.timeout': '2' };
        await Promise.all([
          runTestContainer(docker, t, named('labelled'), SLEEPER, { labels: labelled, healthcheck: true }),
          runTestContainer(docker, t, named('healthy'), SLEEPER, {
            labels: { 'selfheal.enable': 'true' },
            healthcheck: true,
          }),
          runTestContainer(docker, t, named('nolabel'), SLEEPER, { healthcheck: true }),
          runTestContainer(docker, t, named('stopped'), STOPPABLE, { labels: { 'selfheal.enable': 'true' } }),
          runTestContainer(docker, t, named('killed'), STOPPABLE, { labels: { 'selfheal.enable': 'true' } }),
          runTestContainer(docker, t, `dhallow-${t.id}-web`, ['/usr/bin/node', '-e', server], { host: true }),
        ]);
        await waitFor(
          async () => {
            const states = await Promise.all(
              ['labelled', 'healthy', 'nolabel'].map((r) => docker.getContainer(named(r)).inspect()),
            );
            return states.every((st) => st.State.Health?.Status === 'healthy');
          },
          { timeoutMs: 30_000, what: 'the HEALTHCHECKs to pass' },
        );
        events = await watchDockerEvents(
          docker,
          ['labelled', 'healthy', 'nolabel', 'stopped', 'killed'].map(named).concat(`dhallow-${t.id}-web`),
        );
      },
      env: ({ t, receiver }) => ({
        AUTO_FIX_ENABLED: 'true',
        VERIFY_DELAY: '2',
        RESTART_COOLDOWN: '0',
        // Only the web container by name; the others are in scope by their labels, or not at all.
        CONTAINER_ALLOWLIST: `dhallow-${t.id}-*`,
        HEALTH_TARGETS: `dhallow-${t.id}-web=http://127.0.0.1:${webPort}/`,
        ESCALATION_WEBHOOK_URL: receiver!.url,
      }),
    });
  }, 180_000);

  afterAll(async () => {
    events?.stop();
    if (s) await removeTestContainers(s.docker, s.t);
    await s?.stop();
  });

  it('unhealthy + autoheal=true: restarted with the stop-timeout label, healthy again', async () => {
    const target = name('labelled');
    unhealthy(target);
    const id = healingWorkflowId('unhealthy_container', target);
    const status = await ended(id);
    expect(status.phase).toBe('healed');
    expect(status.anomaly.summary).toMatch(/Docker reports it unhealthy \(last check: exit 1/);
    const rows = await executed(id);
    expect(rows.map((r) => [r.action, r.outcome])).toEqual([['restart_worker', 'done']]);
    const result = rows[0]!.params.result as Record<string, unknown>;
    expect(result).toMatchObject({
      container: target,
      allowed: `container ${target} in scope by its label autoheal=true`,
      dockerHealthBefore: 'unhealthy',
      stopTimeoutSeconds: 2,
      stopTimeoutLabel: 'autoheal.stop.timeout',
    });
    // PID 1 ignores SIGTERM, so the restart took the label's 2 s to stop it (the default is 10 s).
    expect(result.restartMs).toBeGreaterThanOrEqual(1_900);
    // Back to healthy by its HEALTHCHECK before the action returned, and told on the webhook (event restarted).
    expect(status.actions[0]!.details).toMatchObject({ healthy: true, notice: 'delivered' });
    const notice = s.receiver!.bodies.find((b) => b.event === 'restarted' && b.workflowId === id);
    expect(notice).toMatchObject({
      schema: 'selfheal.escalation.v1',
      target,
      anomalyType: 'unhealthy_container',
      commands: { approve: null, reject: null },
      result: { outcome: 'done', details: { container: target, stopTimeoutSeconds: 2, healthy: true } },
    });
    expect(events.of(target, 'restart')).toHaveLength(1);
    expect((await inspect(target)).State.Health?.Status).toBe('healthy');
  }, 120_000);

  it('unhealthy without a label, outside the allow list: escalated, never touched', async () => {
    const target = name('nolabel');
    unhealthy(target);
    const id = healingWorkflowId('unhealthy_container', target);
    const status = await ended(id);
    expect(status.phase).toBe('escalated');
    const { rows } = await s.t.pool.query<{ reasons: string[] }>(
      `SELECT params->'reasons' AS reasons FROM healing_log WHERE workflow_id = $1 AND step = 'refused'`,
      [id],
    );
    expect(JSON.stringify(rows.map((r) => r.reasons))).toContain(
      `container ${target} matches no allow-list pattern and carries no scope label`,
    );
    expect((await executed(id)).map((r) => r.action)).toEqual(['escalate_to_human']);
    await waitFor(() => s.receiver!.bodies.find((b) => b.event === 'escalation' && b.workflowId === id), {
      what: 'the escalation notice',
    });
    expect(lifecycle(target)).toEqual([]);
    expect((await inspect(target)).State.Health?.Status).toBe('unhealthy');
  }, 120_000);

  it('docker stop: left alone; docker kill -s KILL: restarted', async () => {
    const stopped = name('stopped');
    const killed = name('killed');
    await s.docker.getContainer(stopped).stop({ t: 5 });
    await s.docker.getContainer(killed).kill({ signal: 'SIGKILL' });
    expect((await inspect(stopped)).State.ExitCode).toBe(143);
    const status = await ended(healingWorkflowId('unhealthy_container', killed));
    expect(status.phase).toBe('healed');
    expect(status.anomaly.summary).toBe(
      `${killed}: container is exited (died without a stop: exit code 137, signal 9)`,
    );
    expect((await inspect(killed)).State.Running).toBe(true);
    // The stopped one: no healing in the cycles since (the killed one's took several), and still stopped.
    const since = Date.now();
    await waitFor(async () => (await s.t.redis.xrange(s.t.keys.metricsStream(), String(since), '+')).length >= 3, {
      timeoutMs: 30_000,
      what: 'three more cycles',
    });
    await expect(
      s.client.workflow.getHandle(healingWorkflowId('unhealthy_container', stopped)).describe(),
    ).rejects.toThrow(/not found/i);
    expect(lifecycle(stopped)).toEqual(['kill', 'die', 'stop']);
    expect((await inspect(stopped)).State.Running).toBe(false);
  }, 120_000);

  it('an allow-listed container outside the pipeline whose HEALTH_TARGETS URL fails: restarted, healthy again', async () => {
    const target = web();
    unhealthy(target);
    const id = healingWorkflowId('unhealthy_container', target);
    const status = await ended(id);
    expect(status.phase).toBe('healed');
    const rows = await executed(id);
    expect(rows.map((r) => [r.action, r.outcome])).toEqual([['restart_worker', 'done']]);
    expect(rows[0]!.params.result).toMatchObject({ container: target, healthStatusBefore: 500 });
    expect(status.actions[0]!.details).toMatchObject({ healthy: true });
    const res = await fetch(`http://127.0.0.1:${webPort}/`);
    expect(res.status).toBe(200);
  }, 120_000);

  it("a crash loop under Docker's restart policy counts: its restarts recorded by the inspection open the breaker", async () => {
    // Out of the stack's scope (no label, not allow-listed): only this test's inspection watches it.
    const looping = name('policy');
    const inspection = createDockerActivities({
      docker: s.docker,
      scope: { allowlist: [looping], autohealLabel: false },
      stops: { redis: s.t.redis, keys: s.t.keys },
    });
    const seen = async () =>
      (await inspection.inspectContainers({ names: [], labels: [`${PREFIX_LABEL}=${s.t.prefix}`] })).containers.find(
        (c) => c.name === looping,
      );
    await runTestContainer(s.docker, s.t, looping, ['/bin/busybox', 'sh', '-c', 'busybox sleep 3; exit 3'], {
      restartPolicy: { Name: 'on-failure', MaximumRetryCount: 3 },
    });
    const first = await seen();
    expect(first?.restartCount).toBe(0);
    const from = Date.now();
    await waitFor(async () => (await inspect(looping)).RestartCount === 3 && !(await inspect(looping)).State.Running, {
      timeoutMs: 30_000,
      what: 'Docker to restart it 3 times and give up',
    });
    expect((await seen())?.restartCount).toBe(3);
    const times = await policyRestartsSince(s.t.redis, s.t.keys, looping, from - 1);
    expect(times).toHaveLength(3);
    for (const at of times) expect(at).toBeGreaterThanOrEqual(from);
    // Seen again unchanged: nothing more recorded. Inspections at once, one of them stale (it read the count before
    // the last restart): still three, each once.
    const now = (await seen())!;
    await Promise.all([
      recordPolicyRestarts(s.t.redis, s.t.keys, [{ ...now, restartCount: 2 }]),
      recordPolicyRestarts(s.t.redis, s.t.keys, [now]),
      recordPolicyRestarts(s.t.redis, s.t.keys, [now]),
    ]);
    await seen();
    expect(await policyRestartsSince(s.t.redis, s.t.keys, looping, 0)).toEqual(times);
    // The policy sees a crash loop of three restarts in the hour, though selfheal made none.
    const safety = createSafetyActivities({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys });
    const { verdict, context } = await safety.checkSafety({
      plan: {
        id: 'p-policy',
        anomalyType: 'unhealthy_container',
        action: 'restart_worker',
        target: looping,
        params: { container: looping },
        reasoning: 'test',
        confidence: 0.9,
        source: 'runbook',
        rung: 0,
      },
      policy: {
        autoFix: true,
        minConfidence: 0.5,
        allowlist: [looping],
        denylist: [],
        cooldownSeconds: 10,
        restartBackoffMaxSeconds: 300,
        breakerRestarts: 3,
        breakerWindowSeconds: 3600,
        requeueCap: 100,
      },
      workflowId: 'wf-policy',
      now: Date.now(),
    });
    expect(context.dockerRestartsOfTarget).toEqual(times);
    expect(verdict.decision).toBe('escalate');
    expect(verdict.reasons.join('; ')).toMatch(
      new RegExp(`circuit breaker open: 3 restarts of ${looping} \\(3 by Docker's restart policy\\)`),
    );
  });

  it('healthy + selfheal.enable=true: never restarted, no healing', async () => {
    // Run last: every cycle of the tests above saw it healthy.
    const target = name('healthy');
    expect(lifecycle(target)).toEqual([]);
    await expect(
      s.client.workflow.getHandle(healingWorkflowId('unhealthy_container', target)).describe(),
    ).rejects.toThrow(/not found/i);
    expect((await inspect(target)).State.Health?.Status).toBe('healthy');
  });
});
