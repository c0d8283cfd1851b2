/**
 * Entry point of the healing worker (task queue selfheal-healing): healing workflows, LLM analysis with the runbook
 * fallback, the safety state and the audit.
 */
import { createAnalysisActivities, createOllamaClient } from '../activities/analysis';
import { createAuditActivities } from '../activities/audit';
import { createSafetyActivities } from '../activities/safety';
import { createKeys } from '../core/keys';
import { createPool } from '../db/pool';
import { TaskQueue } from '../workflows/definitions';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit } from './env';
import { runWorker } from './run-worker';

const config = loadConfigOrExit();
const pool = createPool(config.DATABASE_URL, { application: 'selfheal-healing' });
const redis = createFailFastRedis(config.REDIS_URL);

runWorker({
  name: 'selfheal-healing',
  config,
  taskQueue: TaskQueue.healing,
  workflowsPath: require.resolve('../workflows'),
  activities: {
    ...createAuditActivities({ pool }),
    ...createSafetyActivities({ pool, redis, keys: createKeys(config.REDIS_KEY_PREFIX) }),
    ...createAnalysisActivities({
      ollama: createOllamaClient({ host: config.OLLAMA_HOST, timeoutMs: config.LLM_TIMEOUT_MS }),
      model: config.OLLAMA_MODEL,
      timeoutMs: config.LLM_TIMEOUT_MS,
      containers: config.HEALTH_TARGETS.map((t) => t.container),
    }),
  },
  onShutdown: async () => {
    redis.disconnect();
    await pool.end();
  },
}).catch((err: unknown) => {
  process.stderr.write(`selfheal-healing: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
