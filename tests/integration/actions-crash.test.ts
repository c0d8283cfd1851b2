/**
 * The actions worker is killed (SIGKILL) while it restarts a container through the Docker engine (issue 4; R1 of
 * the reliability suite). The monitor and healing workers run in this process, the actions worker as a real child
 * process (`workers/actions.ts`), the fault is a real hung container, the kill lands when Docker reports the
 * container going down for the restart. After a new actions worker starts, the activity's retry (heartbeat
 * timeout) finishes the job: exactly one executed restart in `healing_log`, exactly one restart in Docker's own
 * event stream, and the retry visible both in the audit (`attempted` rows) and in the workflow history.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig, type Config } from '../../core/config';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { nodeCommand, projectScript } from '../../workers/project';
import { ensureMonitorSchedule } from '../../workers/schedule';
import { waitForPollers } from '../../workers/temporal-connection';
import { healingWorkflowId, MONITOR_SCHEDULE_ID, TaskQueue } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { createTestEnv, type TestEnv, waitFor } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { createTestRunner, stopTestPipeline, testDocker } from '../helpers/pipeline';
import { CLI, FAST_CONFIG } from '../helpers/selfheal';
import { allocateNamespace, connectClient, recordHistories } from '../helpers/temporal';
import { createTestWorkers } from '../helpers/workers';
import { watchDockerEvents } from '../helpers/docker-events';

describe('actions worker killed mid-restart', () => {
  const docker = testDocker();
  let t: TestEnv;
  let ns: string;
  let ollama: FakeOllama;
  let runner: PipelineRunner;
  let workers: RunningWorker[];
  let env: NodeJS.ProcessEnv;
  let config: Config;
  const children: ChildProcess[] = [];

  /** The real actions worker entry point as a child process; resolves once its task queue has a poller. */
  async function startActionsWorker(connection: Connection): Promise<ChildProcess> {
    const [exe, ...args] = nodeCommand(projectScript('workers/actions'));
    const child = spawn(exe, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => reject(new Error(`actions worker exited (${code ?? signal}): ${stderr}`))),
    );
    exited.catch(() => undefined);
    await Promise.race([waitForPollers(connection, ns, [{ name: TaskQueue.actions, type: 'activity' }]), exited]);
    return child;
  }

  beforeAll(async () => {
    t = await createTestEnv();
    ns = await allocateNamespace();
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } });
    workers = await runner.startMany([
      { stage: 'extract', kind: 'container', count: 2 },
      { stage: 'evaluate', count: 1 },
    ]);
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      ...FAST_CONFIG,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: ns,
      OLLAMA_HOST: ollama.url,
      HEALTH_TARGETS: runner.healthTargets(),
      AUTO_FIX_ENABLED: 'true',
      VERIFY_DELAY: '3',
      RESTART_COOLDOWN: '0',
      MAX_ACTIONS_PER_HOUR: '100',
      CONTAINER_ALLOWLIST: 'pipeline-*',
    };
    const parsed = parseConfig(env);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed));
    config = parsed.config;
  }, 180_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await stopTestPipeline(t, runner, docker);
    await ollama?.close();
    await t?.cleanup();
  });

  it('exactly one restart in healing_log and in Docker, the retry visible', async () => {
    const victim = workers.find((w) => w.stage === 'extract' && w.kind === 'container')!;
    const name = victim.container!;
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const clientConnection = await Connection.connect({ address: inject('temporalAddress') });
    const { client, close } = await connectClient(ns);
    const inProcess = await createTestWorkers({ connection, namespace: ns, t, config, only: ['monitor', 'healing'] });
    try {
      await inProcess.run(async () => {
        let actionsWorker = await startActionsWorker(clientConnection);
        await ensureMonitorSchedule(client, config);

        // Docker's own record of what happened to the victim, from before the fault to the end.
        let killedAt: number | undefined;
        const watch = await watchDockerEvents(docker, [name], (e) => {
          // The container goes down for the restart: the restart call is in flight. Kill its caller now.
          if (killedAt === undefined && (e.Action === 'kill' || e.Action === 'die')) {
            killedAt = Date.now();
            actionsWorker.kill('SIGKILL');
          }
        });
        const { events } = watch;

        const hang = spawnCli(['chaos', 'hang-worker', victim.worker]);
        expect(await hang, 'chaos hang-worker').toBe(0);
        const injectedAt = Date.now();

        await waitFor(() => killedAt, { timeoutMs: 60_000, what: 'the restart to begin (Docker kill/die event)' });
        await waitFor(() => actionsWorker.exitCode !== null || actionsWorker.signalCode !== null, {
          what: 'the actions worker to die',
        });
        expect(actionsWorker.signalCode).toBe('SIGKILL');
        actionsWorker = await startActionsWorker(clientConnection);

        const id = healingWorkflowId('unhealthy_container', name);
        const handle = client.workflow.getHandle(id);
        const status = (await handle.result()) as HealingStatus;
        expect(status.phase, JSON.stringify(status.history)).toBe('healed');
        // Let late events arrive, then stop listening.
        await waitFor(async () => (await fetch(victim.healthUrl).catch(() => undefined))?.status === 200);
        watch.stop();

        const { rows } = await t.pool.query<{ step: string; outcome: string | null; params: Record<string, unknown> }>(
          `SELECT step, outcome, params FROM healing_log
            WHERE workflow_id = $1 AND action = 'restart_worker' AND step IN ('attempted', 'executed') ORDER BY id`,
          [id],
        );
        const executed = rows.filter((r) => r.step === 'executed');
        expect(executed, JSON.stringify(rows)).toHaveLength(1);
        expect(executed[0]!.outcome).toBe('done');
        const attempts = rows.filter((r) => r.step === 'attempted');
        expect(attempts.length).toBeGreaterThanOrEqual(1);
        expect(attempts[0]!.params.attempt).toBe(1);

        // Docker started the container once after the fault: one restart, not two.
        const starts = events.filter((e) => e.Action === 'start' && (e.time ?? 0) * 1000 >= injectedAt - 1_000);
        expect(starts, JSON.stringify(events.map((e) => e.Action))).toHaveLength(1);

        // The retry is in the history: restartWorker ran a second attempt after the first one's worker died.
        const history = await handle.fetchHistory();
        const restartScheduled = history.events!.filter(
          (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'restartWorker',
        );
        expect(restartScheduled).toHaveLength(1);
        const started = history.events!.find(
          (e) =>
            e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() ===
            restartScheduled[0]!.eventId?.toString(),
        );
        expect(started?.activityTaskStartedEventAttributes?.attempt).toBeGreaterThanOrEqual(2);

        const result = executed[0]!.params.result as Record<string, unknown>;
        console.log('actions worker killed mid-restart:', {
          killedAfterFaultMs: killedAt! - injectedAt,
          dockerEvents: events.map((e) => e.Action),
          attempts: attempts.map((a) => a.params.attempt),
          executedBy: result.restartedByAttempt
            ? `recorded by the retry (restart done by attempt ${JSON.stringify(result.restartedByAttempt)})`
            : 'the retry restarted (the first call did not complete)',
        });
        await recordHistories(client);
      });
    } finally {
      await client.schedule
        .getHandle(MONITOR_SCHEDULE_ID)
        .delete()
        .catch(() => undefined);
      await close();
      await clientConnection.close();
      await connection.close();
    }
  }, 240_000);

  function spawnCli(args: string[]): Promise<number | null> {
    return new Promise((resolve) => {
      const c = spawn(process.execPath, [...CLI, ...args], { env, stdio: 'ignore' });
      c.once('exit', (code) => resolve(code));
    });
  }
});
