/**
 * Entry point of the healing worker (task queue selfheal-healing): healing workflows, LLM analysis with the runbook
 * fallback, the safety state and the audit.
 */
import { selfhealDatabaseUrl } from '../core/config';
import { createPool } from '../db/pool';
import { projectScript } from './project';
import { TaskQueue } from '../workflows/definitions';
import { healingActivities } from './activities';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';
import { errorMessage } from '../core/errors';

const config = loadConfigOrExit();
// Only selfheal's own tables (audit, permits): the healing worker never reads the watched pipeline's database.
const pool = createPool(selfhealDatabaseUrl(config), { application: 'selfheal-healing' });
const redis = createFailFastRedis(config.REDIS_URL);

runWorker({
  name: 'selfheal-healing',
  config,
  taskQueue: TaskQueue.healing,
  workflowsPath: projectScript('workflows/index'),
  activities: healingActivities(config, { pool, redis }),
  // Bounded: the SDK's default cache (sized from the heap limit, about 2,300 runs) let the worker grow with every open
  // healing. See HEALING_CACHED_WORKFLOWS_DEFAULT in core/config.ts for the measurements.
  maxCachedWorkflows: config.HEALING_CACHED_WORKFLOWS,
  onShutdown: async () => {
    redis.disconnect();
    await pool.end();
  },
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-healing: ${errorMessage(err)}\n`);
  process.exit(1);
});
