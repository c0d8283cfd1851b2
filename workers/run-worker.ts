import { NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Config } from '../core/config';
import type { TaskQueue } from '../workflows/definitions';
import { stopWhenParentGoes } from './env';
import { createLogger } from './logger';

export interface RunWorkerOptions {
  name: string;
  config: Config;
  taskQueue: TaskQueue;
  /** Built once per process by the caller; undefined for an activities-only worker. */
  workflowsPath?: string;
  activities?: WorkerOptions['activities'];
  maxConcurrentActivityTaskExecutions?: number;
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
  Runtime.install({
    logger: {
      log: (level, message, meta) => log[level.toLowerCase() as 'info'](meta ?? {}, message),
      trace: (message, meta) => log.trace(meta ?? {}, message),
      debug: (message, meta) => log.debug(meta ?? {}, message),
      info: (message, meta) => log.info(meta ?? {}, message),
      warn: (message, meta) => log.warn(meta ?? {}, message),
      error: (message, meta) => log.error(meta ?? {}, message),
    },
  });
  const connection = await NativeConnection.connect({ address: opts.config.TEMPORAL_ADDRESS });
  const worker = await Worker.create({
    connection,
    namespace: opts.config.TEMPORAL_NAMESPACE,
    taskQueue: opts.taskQueue,
    workflowsPath: opts.workflowsPath,
    activities: opts.activities,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions,
  });
  stopWhenParentGoes(() => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
  });
  log.info({ taskQueue: opts.taskQueue }, 'worker started');
  try {
    await worker.run();
  } finally {
    await connection.close();
    await opts.onShutdown?.();
    log.info('worker stopped');
  }
}
