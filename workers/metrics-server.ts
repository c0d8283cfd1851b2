/** Entry point of the HTTP metrics server (METRICS_HOST:METRICS_PORT). */
import { Redis } from 'ioredis';
import { createPool } from '../db/pool';
import { loadConfigOrExit } from './env';
import { createHttpServer, listen } from './http-server';
import { createLogger } from './logger';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const log = createLogger('selfheal-http', config.LOG_LEVEL);
  const pool = createPool(config.DATABASE_URL, { application: 'selfheal-http' });
  const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  redis.on('error', () => undefined);
  const server = createHttpServer({ pool, redis, temporalAddress: config.TEMPORAL_ADDRESS });
  const addr = await listen(server, config.METRICS_PORT, config.METRICS_HOST);
  log.info({ host: addr.address, port: addr.port }, 'metrics server listening');
  const stop = () => {
    server.close();
    server.closeAllConnections();
    redis.disconnect();
    void pool.end();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  if (process.send) process.once('disconnect', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`selfheal-http: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
