/** Entry point of the healing worker (task queue selfheal-healing): healing workflows, analysis, safety, audit. */
import { createAuditActivities } from '../activities/audit';
import { createPool } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';

const config = loadConfigOrExit();
const pool = createPool(config.DATABASE_URL, { application: 'selfheal-healing' });

runWorker({
  name: 'selfheal-healing',
  config,
  taskQueue: TaskQueue.healing,
  workflowsPath: require.resolve('../workflows'),
  activities: { ...createAuditActivities({ pool }) },
  onShutdown: () => pool.end(),
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-healing: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
