import { NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Config } from '../core/config';
import type { TaskQueue } from '../workflows/definitions';
import { stopWhenParentGoes } from './env';
import { createLogger, createTemporalLogger } from './logger';

/** Offset of each worker's SDK metrics port from SDK_METRICS_PORT: three workers on one host need three ports. */
const SDK_METRICS_PORT_OFFSET: Record<TaskQueue, number> = {
  'selfheal-monitor': 0,
  'selfheal-healing': 1,
  'selfheal-actions': 2,
};

/**
 * `host:port` of this worker's SDK Prometheus endpoint (SDK_METRICS_HOST, SDK_METRICS_PORT + the worker's offset),
 * or undefined when SDK_METRICS_PORT is 0 (off).
 */
export function sdkMetricsAddress(config: Config, taskQueue: TaskQueue): string | undefined {
  if (!config.SDK_METRICS_PORT) return undefined;
  const host = config.SDK_METRICS_HOST.includes(':') ? `[${config.SDK_METRICS_HOST}]` : config.SDK_METRICS_HOST;
  return `${host}:${config.SDK_METRICS_PORT + SDK_METRICS_PORT_OFFSET[taskQueue]}`;
}

/**
 * A workflow bundle built beforehand (SELFHEAL_WORKFLOW_BUNDLE, set by `selfheal up`), else the workflows bundled
 * here at start.
 */
function workflowSource(workflowsPath: string | undefined): Pick<WorkerOptions, 'workflowsPath' | 'workflowBundle'> {
  if (!workflowsPath) return {};
  const codePath = process.env.SELFHEAL_WORKFLOW_BUNDLE;
  return codePath ? { workflowBundle: { codePath } } : { workflowsPath };
}

export interface RunWorkerOptions {
  name: string;
  config: Config;
  taskQueue: TaskQueue;
  /** Built once per process by the caller; undefined for an activities-only worker. */
  workflowsPath?: string;
  activities?: WorkerOptions['activities'];
  maxConcurrentActivityTaskExecutions?: number;
  /** Workflow runs kept in memory (the SDK's default is sized from the heap limit: about 2,300 with Node's 4 GB). */
  maxCachedWorkflows?: number;
  /** Called after the worker stopped (close clients here). */
  onShutdown?: () => Promise<void>;
}

/**
 * Runs one Temporal worker until SIGINT/SIGTERM (the SDK's Runtime handles the signals and drains
 * in-flight tasks), or until the parent process that spawned it goes away (`selfheal up` uses an IPC
 * channel so that no worker outlives it, even when it is killed with SIGKILL).
 */
export async function runWorker(opts: RunWorkerOptions): Promise<void> {
  const log = createLogger(opts.name, opts.config.LOG_LEVEL);
  const metricsAddress = sdkMetricsAddress(opts.config, opts.taskQueue);
  Runtime.install({
    logger: createTemporalLogger(log),
    telemetryOptions: {
      // Core's own records go through the same pino logger instead of its plain-text console output.
      logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} },
      ...(metricsAddress
        ? { metrics: { prometheus: { bindAddress: metricsAddress }, globalTags: { worker: opts.name } } }
        : {}),
    },
  });
  // Watched from the start: the connection and Worker.create (the workflow bundle) take seconds, and a parent that
  // goes away meanwhile must not leave a worker running.
  const started: { worker?: Worker; parentGone: boolean } = { parentGone: false };
  stopWhenParentGoes(() => {
    started.parentGone = true;
    if (started.worker?.getState() === 'RUNNING') started.worker.shutdown();
  });
  const connection = await NativeConnection.connect({ address: opts.config.TEMPORAL_ADDRESS });
  const worker = (started.worker = await Worker.create({
    connection,
    namespace: opts.config.TEMPORAL_NAMESPACE,
    taskQueue: opts.taskQueue,
    ...workflowSource(opts.workflowsPath),
    activities: opts.activities,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions,
    ...(opts.maxCachedWorkflows === undefined ? {} : { maxCachedWorkflows: opts.maxCachedWorkflows }),
  }));
  log.info(
    { taskQueue: opts.taskQueue, ...(metricsAddress ? { sdkMetrics: `http://${metricsAddress}/metrics` } : {}) },
    'worker started',
  );
  try {
    const running = worker.run();
    // run() is RUNNING at once: a parent gone while the worker started shuts it down now, as SIGTERM would.
    if (started.parentGone) worker.shutdown();
    await running;
  } finally {
    await connection.close();
    await opts.onShutdown?.();
    log.info('worker stopped');
  }
}
