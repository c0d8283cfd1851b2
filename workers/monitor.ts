/** Entry point of the monitor worker (task queue selfheal-monitor): monitoring cycles. */
import { createPool } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { createAuditActivities } from '../activities/audit';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';

const config = loadConfigOrExit();
const pool = createPool(config.DATABASE_URL, { application: 'selfheal-monitor' });

runWorker({
  name: 'selfheal-monitor',
  config,
  taskQueue: TaskQueue.monitor,
  workflowsPath: require.resolve('../workflows'),
  activities: { ...createAuditActivities({ pool }) },
  onShutdown: () => pool.end(),
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-monitor: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
