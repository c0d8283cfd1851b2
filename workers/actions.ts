/**
 * Entry point of the actions worker (task queue selfheal-actions): the only process with Docker access. It runs
 * the remediation actions and the Docker inspection of the monitoring cycle, and follows Docker's event stream
 * (workers/docker-events.ts) so that a container that dies or turns unhealthy is looked at at once.
 */
import { Client, Connection, ScheduleOverlapPolicy } from '@temporalio/client';
import Docker from 'dockerode';
import { createPools } from '../db/pool';
import { createKeys } from '../core/keys';
import { MONITOR_SCHEDULE_ID, TaskQueue } from '../workflows/definitions';
import { StopRecords } from '../activities/docker-stops';
import { actionsActivities } from './activities';
import { createFailFastRedis } from './clients';
import { startDockerEventWatcher, type DockerEventWatcher } from './docker-events';
import { loadConfigOrExit } from './env';
import { createLogger } from './logger';
import { runWorker } from './run-worker';
import { monitoringInput } from './schedule';
import { errorMessage } from '../core/errors';

// The runbooks file is the healing worker's: this one starts while it is being fixed.
const config = loadConfigOrExit(process.env, { runbooks: false });
const log = createLogger('selfheal-actions', config.LOG_LEVEL);
const pools = createPools(config, { application: 'selfheal-actions' });
const redis = createFailFastRedis(config.REDIS_URL);
const docker = new Docker();
// The event watcher records the stops on purpose here; the inspection reads them (memory stands in for a lost Redis).
const stopRecords = new StopRecords(redis, createKeys(config.REDIS_KEY_PREFIX));

/** Runs a monitoring cycle now through the Schedule, unless an operator paused it (a pause means: do not act). */
async function watchDockerEvents(): Promise<{ watcher: DockerEventWatcher; connection: Connection }> {
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  const schedule = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }).schedule.getHandle(
    MONITOR_SCHEDULE_ID,
  );
  const watcher = startDockerEventWatcher({
    docker,
    stops: stopRecords,
    labels: monitoringInput(config).containerLabels,
    log,
    async trigger(why) {
      const described = await schedule.describe();
      if (described.state.paused) {
        log.info({ why }, 'docker event: the schedule is paused, no cycle triggered');
        return;
      }
      await schedule.trigger(ScheduleOverlapPolicy.BUFFER_ONE);
    },
  });
  return { watcher, connection };
}

async function main(): Promise<void> {
  const events = config.DOCKER_EVENTS ? await watchDockerEvents() : undefined;
  await runWorker({
    name: 'selfheal-actions',
    config,
    taskQueue: TaskQueue.actions,
    activities: actionsActivities(config, {
      pool: pools.selfheal,
      pipelinePool: pools.pipeline,
      redis,
      docker,
      stopRecords,
    }),
    maxConcurrentActivityTaskExecutions: 4,
    onShutdown: async () => {
      await events?.watcher.stop();
      await events?.connection.close();
      redis.disconnect();
      await pools.end();
    },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`selfheal-actions: ${errorMessage(err)}\n`);
  process.exit(1);
});
