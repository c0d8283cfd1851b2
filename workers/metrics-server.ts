/** Entry point of the HTTP metrics server (METRICS_HOST:METRICS_PORT). */
import { Client, Connection } from '@temporalio/client';
import { createKeys } from '../core/keys';
import { createPools } from '../db/pool';
import { createFailFastRedis } from './clients';
import { loadConfigOrExit, stopWhenParentGoes } from './env';
import { createHttpServer, listen } from './http-server';
import { createLogger } from './logger';
import { createMetricsState } from './metrics-state';
import { monitoringInput } from './schedule';
import { errorMessage } from '../core/errors';

async function main(): Promise<void> {
  // The runbooks file is the healing worker's: the HTTP server (approvals, webhooks) stays up while it is fixed.
  const config = loadConfigOrExit(process.env, { runbooks: false });
  const log = createLogger('selfheal-http', config.LOG_LEVEL);
  const pools = createPools(config, { application: 'selfheal-http' });
  const redis = createFailFastRedis(config.REDIS_URL);
  const metrics = createMetricsState({ redis, pool: pools.selfheal, keys: createKeys(config.REDIS_KEY_PREFIX) });
  // Connected on first use, so /health answers while Temporal is down; a failed connection is tried again next time.
  let connecting: Promise<Connection> | undefined;
  let client: Promise<Client> | undefined;
  const temporalClient = (): Promise<Client> => {
    if (!client) {
      connecting = Connection.connect({ address: config.TEMPORAL_ADDRESS, connectTimeout: 5_000 });
      client = connecting.then(
        (connection) => new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }),
        (err: unknown) => {
          client = connecting = undefined;
          throw err;
        },
      );
    }
    return client;
  };
  const server = createHttpServer({
    pool: pools.selfheal,
    pipelinePool: pools.pipeline,
    redis,
    temporalAddress: config.TEMPORAL_ADDRESS,
    ollama: { host: config.OLLAMA_HOST, model: config.OLLAMA_MODEL },
    metrics,
    healings: {
      client: temporalClient,
      // The same healing input the monitor's Schedule hands to each cycle (policy, thresholds, containers).
      monitoring: monitoringInput(config),
      webhookToken: config.WEBHOOK_TOKEN,
      approvalSecret: config.APPROVAL_SECRET,
    },
  });
  const addr = await listen(server, config.METRICS_PORT, config.METRICS_HOST);
  log.info({ host: addr.address, port: addr.port }, 'metrics server listening');
  const stop = () => {
    server.close();
    server.closeAllConnections();
    redis.disconnect();
    void pools.end();
    void connecting?.then((c) => c.close()).catch(() => undefined);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  stopWhenParentGoes(stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`selfheal-http: ${errorMessage(err)}\n`);
  process.exit(1);
});
