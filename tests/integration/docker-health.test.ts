/**
 * Docker-native health against the real Docker engine, with containers that declare a HEALTHCHECK (busybox, from the
 * pipeline image): autoheal's own three scenarios (unhealthy + label → restarted; healthy + label → never restarted;
 * unhealthy, no label, outside the allow list → escalated, never touched), the stop-timeout label passed to the
 * restart, a stopped container left alone beside a killed one restarted, and an allow-listed container outside the
 * pipeline (no stage) whose HEALTH_TARGETS URL fails, restarted and healthy again.
 */
import { execFileSync } from 'node:child_process';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensurePipelineImage } from '../../pipeline/image';
import { freePort, PREFIX_LABEL } from '../../pipeline/runner-support';
import { healingWorkflowId, type HealingStatus } from '../../workflows/definitions';
import type { healingWorkflow } from '../../workflows/healing';
import { watchDockerEvents } from '../helpers/docker-events';
import { createTestEnv, type TestEnv, waitFor } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { testDocker } from '../helpers/pipeline';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver';

/** Healthy while /tmp/healthy exists; the entry point creates it, so a restart makes the container healthy again. */
const HEALTHCHECK = {
  Test: ['CMD', '/bin/busybox', 'test', '-f', '/tmp/healthy'],
  Interval: 1_000_000_000,
  Timeout: 2_000_000_000,
  Retries: 1,
  StartPeriod: 0,
};
/** busybox sh as PID 1 ignores SIGTERM: a stop waits for the stop timeout, then kills. */
const SLEEPER = ['/bin/busybox', 'sh', '-c', 'busybox touch /tmp/healthy; while :; do busybox sleep 1; done'];
/** Ends on SIGTERM (a trap, so PID 1 honours it) with code 143, as a process without a handler would. */
const STOPPABLE = ['/bin/busybox', 'sh', '-c', "trap 'exit 143' TERM; while :; do busybox sleep 1 & wait $!; done"];

describe('Docker-native health', () => {
  const docker = testDocker();
  let t: TestEnv;
  let ollama: FakeOllama;
  let receiver: WebhookReceiver;
  let selfheal: RunningSelfheal;
  let client: Client;
  let closeClient: () => Promise<void>;
  let events: Awaited<ReturnType<typeof watchDockerEvents>>;
  const created: string[] = [];
  let webPort: number;
  const name = (role: string) => `dh-${t.id}-${role}`;

  async function run(
    role: string,
    entrypoint: string[],
    opts: { labels?: Record<string, string>; healthcheck?: boolean; host?: boolean; named?: string } = {},
  ): Promise<Docker.Container> {
    const { image } = await ensurePipelineImage(docker);
    const container = await docker.createContainer({
      name: opts.named ?? name(role),
      Image: image,
      Entrypoint: entrypoint,
      Cmd: [],
      Labels: { [PREFIX_LABEL]: t.prefix, ...opts.labels },
      ...(opts.healthcheck ? { Healthcheck: HEALTHCHECK } : {}),
      HostConfig: { NetworkMode: opts.host ? 'host' : 'none' },
    });
    created.push(opts.named ?? name(role));
    await container.start();
    return container;
  }

  const inspect = (n: string) => docker.getContainer(n).inspect();
  /** What happened to a container's state (health checks and `docker exec` left out). */
  const lifecycle = (n: string) => events.actions(n).filter((a) => !/^(exec_|health_status)/.test(a ?? ''));
  const unhealthy = (n: string) => execFileSync('docker', ['exec', n, '/bin/busybox', 'rm', '-f', '/tmp/healthy']);

  async function ended(id: string): Promise<HealingStatus> {
    await waitFor(
      () =>
        client.workflow
          .getHandle(id)
          .describe()
          .then(
            () => true,
            () => false,
          ),
      {
        timeoutMs: 60_000,
        what: `${id} to start`,
      },
    );
    return client.workflow.getHandle<typeof healingWorkflow>(id).result();
  }

  async function executed(id: string) {
    const { rows } = await t.pool.query<{ action: string; outcome: string; params: Record<string, unknown> }>(
      `SELECT action, outcome, params FROM healing_log WHERE workflow_id = $1 AND step = 'executed' ORDER BY id`,
      [id],
    );
    return rows;
  }

  beforeAll(async () => {
    t = await createTestEnv();
    const ns = await allocateNamespace();
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
    receiver = await startWebhookReceiver();
    webPort = await freePort();
    const web = `dhallow-${t.id}-web`;
    const server = [
      "const fs = require('fs');",
      "fs.writeFileSync('/tmp/healthy', '');",
      "require('http').createServer((q, s) => { s.statusCode = fs.existsSync('/tmp/healthy') ? 200 : 500; s.end(); })",
      `.listen(${webPort}, '127.0.0.1');`,
      "process.on('SIGTERM', () => process.exit(0));",
    ].join('\n');
    await Promise.all([
      run('labelled', SLEEPER, { labels: { autoheal: 'true', 'autoheal.stop.timeout': '2' }, healthcheck: true }),
      run('healthy', SLEEPER, { labels: { 'selfheal.enable': 'true' }, healthcheck: true }),
      run('nolabel', SLEEPER, { healthcheck: true }),
      run('stopped', STOPPABLE, { labels: { 'selfheal.enable': 'true' } }),
      run('killed', STOPPABLE, { labels: { 'selfheal.enable': 'true' } }),
      run('web', ['/usr/bin/node', '-e', server], { host: true, named: web }),
    ]);
    await waitFor(
      async () => {
        const states = await Promise.all(['labelled', 'healthy', 'nolabel'].map((r) => inspect(name(r))));
        return states.every((s) => s.State.Health?.Status === 'healthy');
      },
      { timeoutMs: 30_000, what: 'the HEALTHCHECKs to pass' },
    );
    events = await watchDockerEvents(docker, created);
    selfheal = await startSelfheal(t, ns, {
      OLLAMA_HOST: ollama.url,
      AUTO_FIX_ENABLED: 'true',
      VERIFY_DELAY: '2',
      RESTART_COOLDOWN: '0',
      // Only the web container by name; the others are in scope by their labels, or not at all.
      CONTAINER_ALLOWLIST: `dhallow-${t.id}-*`,
      HEALTH_TARGETS: `${web}=http://127.0.0.1:${webPort}/`,
      ESCALATION_WEBHOOK_URL: receiver.url,
    });
    ({ client, close: closeClient } = await connectClient(ns));
  }, 180_000);

  afterAll(async () => {
    events?.stop();
    await selfheal?.stop();
    await closeClient?.();
    await Promise.all(
      created.map((n) =>
        docker
          .getContainer(n)
          .remove({ force: true })
          .catch(() => undefined),
      ),
    );
    await ollama?.close();
    await receiver?.close();
    await t?.cleanup();
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
    const notice = receiver.bodies.find((b) => b.event === 'restarted' && b.workflowId === id);
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
    const { rows } = await t.pool.query<{ reasons: string[] }>(
      `SELECT params->'reasons' AS reasons FROM healing_log WHERE workflow_id = $1 AND step = 'refused'`,
      [id],
    );
    expect(JSON.stringify(rows.map((r) => r.reasons))).toContain(
      `container ${target} matches no allow-list pattern and carries no scope label`,
    );
    expect((await executed(id)).map((r) => r.action)).toEqual(['escalate_to_human']);
    await waitFor(() => receiver.bodies.find((b) => b.event === 'escalation' && b.workflowId === id), {
      what: 'the escalation notice',
    });
    expect(lifecycle(target)).toEqual([]);
    expect((await inspect(target)).State.Health?.Status).toBe('unhealthy');
  }, 120_000);

  it('docker stop: left alone; docker kill -s KILL: restarted', async () => {
    const stopped = name('stopped');
    const killed = name('killed');
    await docker.getContainer(stopped).stop({ t: 5 });
    await docker.getContainer(killed).kill({ signal: 'SIGKILL' });
    expect((await inspect(stopped)).State.ExitCode).toBe(143);
    const status = await ended(healingWorkflowId('unhealthy_container', killed));
    expect(status.phase).toBe('healed');
    expect(status.anomaly.summary).toBe(
      `${killed}: container is exited (died without a stop: exit code 137, signal 9)`,
    );
    expect((await inspect(killed)).State.Running).toBe(true);
    // The stopped one: no healing in the cycles since (the killed one's took several), and still stopped.
    const since = Date.now();
    await waitFor(async () => (await t.redis.xrange(t.keys.metricsStream(), String(since), '+')).length >= 3, {
      timeoutMs: 30_000,
      what: 'three more cycles',
    });
    await expect(
      client.workflow.getHandle(healingWorkflowId('unhealthy_container', stopped)).describe(),
    ).rejects.toThrow(/not found/i);
    expect(lifecycle(stopped)).toEqual(['kill', 'die', 'stop']);
    expect((await inspect(stopped)).State.Running).toBe(false);
  }, 120_000);

  it('an allow-listed container outside the pipeline whose HEALTH_TARGETS URL fails: restarted, healthy again', async () => {
    const target = `dhallow-${t.id}-web`;
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

  it('healthy + selfheal.enable=true: never restarted, no healing', async () => {
    // Run last: every cycle of the tests above saw it healthy.
    const target = name('healthy');
    expect(lifecycle(target)).toEqual([]);
    await expect(
      client.workflow.getHandle(healingWorkflowId('unhealthy_container', target)).describe(),
    ).rejects.toThrow(/not found/i);
    expect((await inspect(target)).State.Health?.Status).toBe('healthy');
  });
});
