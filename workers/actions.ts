/**
 * Entry point of the actions worker (task queue selfheal-actions): the only process with Docker access. It runs
 * the remediation actions and the Docker inspection of the monitoring cycle.
 */
import Docker from 'dockerode';
import { createPools } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { actionsActivities } from './activities';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';
import { errorMessage } from '../core/errors';

const config = loadConfigOrExit();
const pools = createPools(config, { application: 'selfheal-actions' });
const redis = createFailFastRedis(config.REDIS_URL);

runWorker({
  name: 'selfheal-actions',
  config,
  taskQueue: TaskQueue.actions,
  activities: actionsActivities(config, {
    pool: pools.selfheal,
    pipelinePool: pools.pipeline,
    redis,
    docker: new Docker(),
  }),
  maxConcurrentActivityTaskExecutions: 4,
  onShutdown: async () => {
    redis.disconnect();
    await pools.end();
  },
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-actions: ${errorMessage(err)}\n`);
  process.exit(1);
});
