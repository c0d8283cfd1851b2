/** Registration, heartbeat and fault polling of a pipeline worker. */
import type http from 'node:http';
import type { WorkerRegistration } from './registry';
import { errorMessage } from '../core/errors';
import { parseFaults } from './worker-options';
import type { WorkerRuntime } from './worker-runtime';

/**
 * Registers the worker and starts its heartbeat and fault polling. On failure, closes everything (the server, the
 * clients, the pool) and throws.
 */
export async function startHeartbeat(
  rt: WorkerRuntime,
  server: http.Server,
  healthUrl: string,
): Promise<{ timers: NodeJS.Timeout[]; beating(): Promise<void> | undefined }> {
  const { opts, redis, blocking, pool, keys, log, worker, stage, startedAt } = rt;
  const registration: WorkerRegistration = {
    worker,
    stage,
    kind: opts.kind,
    pid: process.pid,
    ...(opts.container ? { container: opts.container } : {}),
    healthUrl,
    startedAt,
    ...(opts.command ? { command: opts.command } : {}),
  };
  const registrationJson = JSON.stringify(registration);
  async function beat(): Promise<void> {
    // The registration is rewritten with each beat so it survives a Redis restart (Redis has no persistence here).
    await redis
      .multi()
      .set(keys.heartbeat(worker), String(Date.now()), 'PX', opts.heartbeatMs * 3)
      .hset(keys.pipelineWorkers(), worker, registrationJson)
      .exec();
  }
  async function pollFaults(): Promise<void> {
    rt.faults = parseFaults(await redis.hgetall(keys.pipelineFaults()), stage, worker);
  }
  try {
    await beat();
    // A hang, or errors and slowness of this process alone (a broken connection pool, a leak), belong to the
    // process: a restarted worker starts healthy, as a real one would. Stage-wide faults stay.
    await redis.hdel(keys.pipelineFaults(), `hang:${worker}`, `error-rate@${worker}`, `slow@${worker}`);
    await pollFaults();
  } catch (err) {
    server.close();
    redis.disconnect();
    blocking.disconnect();
    await pool.end();
    throw new Error(`cannot register worker ${worker} in Redis: ${errorMessage(err)}`);
  }
  // In-flight beat, awaited at shutdown so a late HSET cannot re-register a stopped worker.
  let beating: Promise<void> | undefined;
  const timers = [
    setInterval(() => {
      beating = beat().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'heartbeat failed'));
    }, opts.heartbeatMs),
    setInterval(() => void pollFaults().catch(() => undefined), opts.faultPollMs),
  ];
  return { timers, beating: () => beating };
}
