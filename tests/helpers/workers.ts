/**
 * selfheal's three workers, in the test process, with real activities wired to a test environment (its Postgres
 * schema, Redis prefix, the Docker engine, and the fake Ollama server): the same factories the worker entry points
 * use. For tests that drive workflows directly, e.g. in the time-skipping environment.
 */
import path from 'node:path';
import type { NativeConnection } from '@temporalio/worker';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import Docker from 'dockerode';
import { Ollama } from 'ollama';
import { createActionActivities } from '../../activities/actions';
import { createAnalysisActivities } from '../../activities/analysis';
import { createAuditActivities } from '../../activities/audit';
import { createDetectionActivities } from '../../activities/detection';
import { createDockerActivities } from '../../activities/docker';
import { createMetricsActivities } from '../../activities/metrics';
import { createSafetyActivities } from '../../activities/safety';
import type { Config } from '../../core/config';
import { TaskQueue } from '../../workflows/definitions';
import type { TestEnv } from './env';

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
}): Promise<TestWorkers> {
  const { t, config, connection, namespace } = opts;
  const docker = opts.docker ?? new Docker();
  const audit = createAuditActivities({ pool: t.pool });
  const workflowBundleReady = await workflowBundle();
  const monitor = await Worker.create({
    connection,
    namespace,
    taskQueue: TaskQueue.monitor,
    workflowBundle: workflowBundleReady,
    activities: {
      ...audit,
      ...createMetricsActivities({
        redis: t.redis,
        pool: t.pool,
        keys: t.keys,
        stages: config.PIPELINE_STAGES,
        healthTargets: config.HEALTH_TARGETS,
        ollamaHost: config.OLLAMA_HOST,
        ollamaModel: config.OLLAMA_MODEL,
        windowSeconds: config.ERROR_RATE_WINDOW,
      }),
      ...createDetectionActivities({
        redis: t.redis,
        keys: t.keys,
        retentionSeconds: config.METRICS_RETENTION,
        historyLimit: 200,
      }),
    },
  });
  const healing = await Worker.create({
    connection,
    namespace,
    taskQueue: TaskQueue.healing,
    workflowBundle: workflowBundleReady,
    activities: {
      ...audit,
      ...createSafetyActivities({ pool: t.pool, redis: t.redis, keys: t.keys }),
      ...createAnalysisActivities({
        ollama: new Ollama({ host: config.OLLAMA_HOST }),
        model: config.OLLAMA_MODEL,
        timeoutMs: config.LLM_TIMEOUT_MS,
      }),
    },
  });
  const actions = await Worker.create({
    connection,
    namespace,
    taskQueue: TaskQueue.actions,
    activities: {
      ...audit,
      ...createDockerActivities({ docker }),
      ...createActionActivities({
        pool: t.pool,
        redis: t.redis,
        keys: t.keys,
        docker,
        config: {
          maxRequeues: config.MAX_REQUEUES,
          requeueCap: config.REQUEUE_CAP,
          restartStopTimeoutSeconds: config.RESTART_STOP_TIMEOUT,
          healthTargets: config.HEALTH_TARGETS,
          escalationWebhookUrl: config.ESCALATION_WEBHOOK_URL,
          containerAllowlist: config.CONTAINER_ALLOWLIST,
          containerDenylist: config.CONTAINER_DENYLIST,
        },
      }),
    },
  });
  return {
    run: (body) => monitor.runUntil(healing.runUntil(actions.runUntil(body))),
  };
}
