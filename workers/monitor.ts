/**
 * Entry point of the monitor worker (task queue selfheal-monitor): monitoring cycles, metrics collection and
 * detection. On start it creates or updates the Schedule `selfheal-monitor` to the current configuration.
 */
import { Client, Connection } from '@temporalio/client';
import { createPools } from '../db/pool';
import { projectScript } from './project';
import { ensureMonitorSchedule } from './schedule';
import { TaskQueue } from '../workflows/definitions';
import { monitorActivities } from './activities';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit } from './env';
import { createLogger } from './logger';
import { runWorker } from './run-worker';
import { errorMessage } from '../core/errors';

/** Monitoring cycles kept in memory: at most a few are open at once. */
const MONITOR_CACHED_WORKFLOWS = 10;

// The runbooks file is the healing worker's: this one starts while it is being fixed.
const config = loadConfigOrExit(process.env, { runbooks: false });
const log = createLogger('selfheal-monitor', config.LOG_LEVEL);
const pools = createPools(config, { application: 'selfheal-monitor' });
const redis = createFailFastRedis(config.REDIS_URL);

async function main(): Promise<void> {
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  try {
    const what = await ensureMonitorSchedule(new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }), config);
    log.info({ scheduleId: 'selfheal-monitor', what, everySeconds: config.MONITOR_INTERVAL }, 'schedule ready');
  } finally {
    await connection.close();
  }
  await runWorker({
    name: 'selfheal-monitor',
    config,
    taskQueue: TaskQueue.monitor,
    workflowsPath: projectScript('workflows/index'),
    activities: monitorActivities(config, { pool: pools.selfheal, pipelinePool: pools.pipeline, redis }),
    // A cycle is short and the Schedule overlaps none (SKIP); a Docker event may trigger one more: a handful of runs
    // are ever open, so the SDK's default cache (about 2,300) only bounds nothing.
    maxCachedWorkflows: MONITOR_CACHED_WORKFLOWS,
    onShutdown: async () => {
      redis.disconnect();
      await pools.end();
    },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`selfheal-monitor: ${errorMessage(err)}\n`);
  process.exit(1);
});
