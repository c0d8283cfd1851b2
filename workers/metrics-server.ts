/** Entry point of the HTTP metrics server (METRICS_HOST:METRICS_PORT). */
import { createKeys } from '../core/keys';
import { createPools } from '../db/pool';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit, stopWhenParentGoes } from './env';
import { createHttpServer, listen } from './http-server';
import { createLogger } from './logger';
import { createMetricsState } from './metrics-state';
import { errorMessage } from '../core/errors';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const log = createLogger('selfheal-http', config.LOG_LEVEL);
  const pools = createPools(config, { application: 'selfheal-http' });
  const redis = createFailFastRedis(config.REDIS_URL);
  const metrics = createMetricsState({ redis, pool: pools.selfheal, keys: createKeys(config.REDIS_KEY_PREFIX) });
  const server = createHttpServer({
    pool: pools.selfheal,
    pipelinePool: pools.pipeline,
    redis,
    temporalAddress: config.TEMPORAL_ADDRESS,
    ollama: { host: config.OLLAMA_HOST, model: config.OLLAMA_MODEL },
    metrics,
  });
  const addr = await listen(server, config.METRICS_PORT, config.METRICS_HOST);
  log.info({ host: addr.address, port: addr.port }, 'metrics server listening');
  const stop = () => {
    server.close();
    server.closeAllConnections();
    redis.disconnect();
    void pools.end();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  stopWhenParentGoes(stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`selfheal-http: ${errorMessage(err)}\n`);
  process.exit(1);
});
