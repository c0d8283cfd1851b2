/** Entry point of the actions worker (task queue selfheal-actions): the only process with Docker access. */
import Docker from 'dockerode';
import { createAuditActivities } from '../activities/audit';
import { createDockerActivities } from '../activities/docker';
import { createPool } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';

const config = loadConfigOrExit();
const pool = createPool(config.DATABASE_URL, { application: 'selfheal-actions' });
const docker = new Docker();

runWorker({
  name: 'selfheal-actions',
  config,
  taskQueue: TaskQueue.actions,
  activities: { ...createAuditActivities({ pool }), ...createDockerActivities({ docker }) },
  maxConcurrentActivityTaskExecutions: 4,
  onShutdown: () => pool.end(),
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-actions: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
