/**
 * selfheal's three workers, in the test process, with real activities wired to a test environment (its Postgres
 * schema, Redis prefix, the Docker engine, and the fake Ollama server): the same factories the worker entry points
 * use. For tests that drive workflows directly, e.g. in the time-skipping environment.
 */
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection } from '@temporalio/worker';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import Docker from 'dockerode';
import type pg from 'pg';
import { inject } from 'vitest';
import type { Config } from '../../core/config';
import { TaskQueue } from '../../workflows/definitions';
import { registerSearchAttributes } from '../../workers/temporal-connection';
import { actionsActivities, healingActivities, monitorActivities } from '../../workers/activities';
import { createTestEnv, type TestEnv } from './env';
import { startFakeOllama, type FakeOllama, type Reply } from './fake-ollama';
import { ROOT } from './cli';

let bundle: Promise<WorkflowBundle> | undefined;
let runtimeInstalled = false;

/** The workflow bundle, built once per test file. */
export function workflowBundle(): Promise<WorkflowBundle> {
  if (!runtimeInstalled) {
    runtimeInstalled = true;
    try {
      Runtime.install({ logger: new DefaultLogger('WARN') });
    } catch {
      /* already installed by this process */
    }
  }
  bundle ??= bundleWorkflowCode({
    workflowsPath: path.join(__dirname, '../../workflows/index.ts'),
    logger: new DefaultLogger('WARN'),
  });
  return bundle;
}

export interface TestWorkers {
  run<T>(body: () => Promise<T>): Promise<T>;
}

export async function createTestWorkers(opts: {
  connection: NativeConnection;
  namespace: string;
  t: TestEnv;
  config: Config;
  docker?: Docker;
  /** The watched pipeline's database when it is not `t`'s (SELFHEAL_DATABASE_URL apart): default `t.pool`. */
  pipelinePool?: pg.Pool;
  /** The task queues to serve here; default all three (another process may serve the rest). */
  only?: (keyof typeof TaskQueue)[];
  /** Healing-worker activities replaced for a test (a stand-in that wraps the real one to force a rare branch). */
  healingOverrides?: (real: ReturnType<typeof healingActivities>) => Partial<ReturnType<typeof healingActivities>>;
}): Promise<TestWorkers> {
  const { t, config, connection, namespace } = opts;
  const docker = opts.docker ?? new Docker();
  const workflowBundleReady = await workflowBundle();
  const clients = { pool: t.pool, pipelinePool: opts.pipelinePool, redis: t.redis };
  const only = new Set(opts.only ?? ['monitor', 'healing', 'actions']);
  // Monitor and healing run workflows and activities; actions only activities (and has the Docker client).
  const specs = [
    { queue: 'monitor', workflows: true, activities: () => monitorActivities(config, clients) },
    {
      queue: 'healing',
      workflows: true,
      activities: () => {
        const real = healingActivities(config, clients);
        return { ...real, ...opts.healingOverrides?.(real) };
      },
    },
    { queue: 'actions', workflows: false, activities: () => actionsActivities(config, { ...clients, docker }) },
  ] as const;
  const created: Worker[] = [];
  for (const spec of specs) {
    if (!only.has(spec.queue)) continue;
    created.push(
      await Worker.create({
        connection,
        namespace,
        taskQueue: TaskQueue[spec.queue],
        ...(spec.workflows ? { workflowBundle: workflowBundleReady } : {}),
        activities: spec.activities(),
      }),
    );
  }
  return {
    run<T>(body: () => Promise<T>): Promise<T> {
      let wrapped = body;
      for (const w of created) {
        const inner = wrapped;
        wrapped = () => w.runUntil(inner());
      }
      return wrapped();
    },
  };
}

/**
 * The workers of `createTestWorkers` serving `namespace` of the run's dev server until `stop()`, and a client of the
 * namespace. Bundling comes first: it installs the quiet Runtime logger before any connection is made.
 */
export async function startTestWorkers(
  opts: Omit<Parameters<typeof createTestWorkers>[0], 'connection'>,
): Promise<{ client: Client; stop(): Promise<void> }> {
  await workflowBundle();
  const native = await NativeConnection.connect({ address: inject('temporalAddress') });
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  let stopWorkers: () => void = () => undefined;
  let workersDone: Promise<unknown> = Promise.resolve();
  try {
    const workers = await createTestWorkers({ ...opts, connection: native });
    workersDone = workers.run(() => new Promise<void>((resolve) => (stopWorkers = resolve)));
  } catch (err) {
    await connection.close();
    await native.close();
    throw err;
  }
  return {
    client: new Client({ connection, namespace: opts.namespace }),
    async stop() {
      stopWorkers();
      await workersDone;
      await connection.close();
      await native.close();
    },
  };
}

/**
 * A test environment, the fake Ollama (answering `replies`) and the time-skipping environment (the pinned
 * temporal-test-server) with selfheal's search attributes and the workers of `createTestWorkers` (configured by
 * `config`) serving it until `stop()`, which takes down whatever was started, also after a half-way failure.
 */
export async function startTimeSkipping(opts: {
  replies: Reply[];
  config(t: TestEnv, ollama: FakeOllama): Config;
}): Promise<{ t: TestEnv; ollama: FakeOllama; env: TestWorkflowEnvironment; stop(): Promise<void> }> {
  let t: TestEnv | undefined;
  let ollama: FakeOllama | undefined;
  let env: TestWorkflowEnvironment | undefined;
  let stopWorkers: () => void = () => undefined;
  let workersDone: Promise<unknown> = Promise.resolve();
  const stop = async () => {
    stopWorkers();
    await workersDone;
    await env?.teardown();
    await ollama?.close();
    await t?.cleanup();
  };
  try {
    t = await createTestEnv();
    ollama = await startFakeOllama({ replies: opts.replies });
    const config = opts.config(t, ollama);
    env = await TestWorkflowEnvironment.createTimeSkipping({
      server: {
        executable: { type: 'existing-path', path: path.join(ROOT, '.tools/python/bin/temporal-test-server') },
      },
    });
    await registerSearchAttributes(env.connection, env.namespace ?? 'default');
    const workers = await createTestWorkers({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      t,
      config,
    });
    workersDone = workers.run(() => new Promise<void>((resolve) => (stopWorkers = resolve)));
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  return { t, ollama, env, stop };
}
