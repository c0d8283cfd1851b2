/**
 * Entry point of the actions worker (task queue selfheal-actions): the only process with Docker access. It runs
 * the remediation actions and the Docker inspection of the monitoring cycle.
 */
import Docker from 'dockerode';
import { createActionActivities } from '../activities/actions';
import { createAuditActivities } from '../activities/audit';
import { createDockerActivities } from '../activities/docker';
import { createKeys } from '../core/keys';
import { createPool } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';

const config = loadConfigOrExit();
const pool = createPool(config.DATABASE_URL, { application: 'selfheal-actions' });
const redis = createFailFastRedis(config.REDIS_URL);
const docker = new Docker();

runWorker({
  name: 'selfheal-actions',
  config,
  taskQueue: TaskQueue.actions,
  activities: {
    ...createAuditActivities({ pool }),
    ...createDockerActivities({ docker }),
    ...createActionActivities({
      pool,
      redis,
      keys: createKeys(config.REDIS_KEY_PREFIX),
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
  maxConcurrentActivityTaskExecutions: 4,
  onShutdown: async () => {
    redis.disconnect();
    await pool.end();
  },
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-actions: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
