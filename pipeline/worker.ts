/**
 * One worker of one stage of the reference document pipeline (the pipeline contract of docs/ARCHITECTURE.md).
 *
 *   tsx pipeline/worker.ts --stage extract --worker extract-1 --port 9101
 *
 * with DATABASE_URL, REDIS_URL and REDIS_KEY_PREFIX from the environment. The same file is bundled into the
 * pipeline image (pipeline/image.ts), where it runs as `node /app/worker.js --stage ... --worker ... --port ...`.
 *
 * Per document: BLMOVE queue:<stage> -> processing:<stage>:<worker> (reliable queue), take the lease
 * lock:document:<id>, move the row queued -> processing, simulate the work (obeying injected faults), commit the
 * outcome to Postgres, then in one Redis script push to the next stage, LREM from the processing list and release
 * the lease.
 */
import { STAGES } from '../core/keys';
import { createPool } from '../db/pool';
import { ensurePipelineSchema } from './schema';
import { errorMessage } from '../core/errors';
import { sleep } from './util';
import { parseWorkerCli } from './worker-cli';
import { documentProcessing } from './worker-documents';
import { startHealthServer } from './worker-health';
import { startHeartbeat } from './worker-heartbeat';
import { workerOptionsSchema, type PipelineWorkerHandle, type PipelineWorkerOptions } from './worker-options';
import { createWorkerRuntime } from './worker-runtime';

export { parseWorkerCli, type ParsedWorkerCli } from './worker-cli';
export {
  workerOptionsSchema,
  type PipelineWorkerHandle,
  type PipelineWorkerOptions,
  type WorkerState,
  type WorkerStats,
} from './worker-options';

/** Exit code for invalid arguments or environment: nothing started. */
export const USAGE_EXIT_CODE = 2;

/** Starts a worker in this process. Resolves once it is registered and `/health` listens. */
export async function startPipelineWorker(input: PipelineWorkerOptions): Promise<PipelineWorkerHandle> {
  const opts = workerOptionsSchema.parse(input);
  const rt = createWorkerRuntime(opts);
  const { stage, worker, log, pool, redis, blocking, queueKey, processingKey, keys, stats } = rt;
  const { giveBack } = rt.scripts;
  const { server, port, healthUrl } = await startHealthServer(rt);
  const heartbeat = await startHeartbeat(rt, server, healthUrl);
  const { timers } = heartbeat;
  const { handleDocument, recoverOwnList, sweepOwnList } = documentProcessing(rt);

  // ---- the loop -------------------------------------------------------------------------------------------
  async function loop(): Promise<void> {
    // Entries an earlier incarnation left (a crash) are handled first; after an infrastructure error (Redis or
    // Postgres unreachable mid-document) the same pass puts what we had taken back in order.
    let recover = true;
    while (!rt.stopping) {
      if (recover) {
        try {
          await recoverOwnList();
          recover = false;
        } catch (err) {
          log.warn({ err: errorMessage(err) }, 'recovery of own processing list failed; retrying');
          await sleep(500);
          continue;
        }
      }
      if (rt.faults.hang) {
        if (rt.state !== 'hung') log.warn('hang fault: not taking documents');
        rt.state = 'hung';
        await sleep(Math.min(100, opts.faultPollMs));
        continue;
      }
      if (rt.state === 'hung') log.info('hang fault cleared');
      rt.state = 'idle';
      let id: string | null;
      try {
        id = await blocking.blmove(queueKey, processingKey, 'RIGHT', 'LEFT', opts.blockTimeoutS);
      } catch (err) {
        if (rt.stopping) break;
        log.warn({ err: errorMessage(err) }, 'BLMOVE failed; backing off');
        recover = true; // the move may have happened with its reply lost
        await sleep(500);
        continue;
      }
      if (id === null) continue;
      if (rt.faults.hang || rt.stopping) {
        // Taken while the hang fault arrived or shutdown began: give it back untouched.
        await giveBack([processingKey, queueKey], [id]).catch(() => undefined);
        stats.givenBack++;
        continue;
      }
      try {
        await handleDocument(id);
      } catch (err) {
        log.error({ id, err: errorMessage(err) }, 'document processing failed on infrastructure; backing off');
        recover = true;
        await sleep(500);
      }
    }
  }
  const looping = loop();

  let stopped: Promise<void> | undefined;
  async function stop(): Promise<void> {
    rt.stopping = true;
    rt.state = 'stopping';
    // Interrupts a blocked BLMOVE at once. If Redis had already moved an id for the lost reply, the sweep below
    // finds it in our processing list and gives it back.
    blocking.disconnect();
    await looping;
    for (const t of timers) clearInterval(t);
    await heartbeat.beating();
    try {
      await sweepOwnList();
      await redis.multi().hdel(keys.pipelineWorkers(), worker).del(keys.heartbeat(worker)).exec();
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'clean-up at shutdown failed');
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections(); // keep-alive clients would otherwise hold close() open
    await closed;
    redis.disconnect();
    await pool.end().catch(() => undefined);
    log.info(stats, 'worker stopped');
  }

  log.info({ healthUrl, kind: opts.kind }, 'worker started');
  return {
    worker,
    stage,
    port,
    healthUrl,
    state: () => rt.state,
    stats: () => ({ ...stats }),
    stop: () => (stopped ??= stop()),
  };
}

/** The script: validate, start, stop cleanly on SIGTERM/SIGINT (exit 0). */
export async function main(argv = process.argv.slice(2), env: Record<string, string | undefined> = process.env) {
  const parsed = parseWorkerCli(argv, env);
  if (!parsed.ok) {
    process.stderr.write(
      `pipeline worker: ${parsed.error}\nusage: worker --stage ${STAGES.join('|')} --worker ID --port N ` +
        '[--host H] [--min-ms N] [--max-ms N] [--lock-ttl-ms N] [--heartbeat-ms N] [--fault-poll-ms N] ' +
        '[--block-timeout-s N]\n',
    );
    process.exit(USAGE_EXIT_CODE);
  }
  // The pipeline creates its own tables (selfheal's migrate does not): a no-op read of the catalog when they exist.
  // Not fatal: with Postgres away the worker starts anyway, and its /health says so until Postgres answers.
  const setup = createPool(parsed.options.databaseUrl, { max: 1, application: 'selfheal-pipeline-setup' });
  try {
    await ensurePipelineSchema(setup);
  } catch (err) {
    process.stderr.write(`pipeline worker: could not ensure the pipeline's tables: ${errorMessage(err)}\n`);
  } finally {
    await setup.end().catch(() => undefined);
  }
  let handle: PipelineWorkerHandle;
  try {
    handle = await startPipelineWorker(parsed.options);
  } catch (err) {
    process.stderr.write(`pipeline worker: ${errorMessage(err)}\n`);
    process.exit(1);
  }
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(1); // a second signal: do not wait any longer
    signalled = true;
    process.stderr.write(`pipeline worker ${handle.worker}: ${signal}, stopping\n`);
    handle.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Started with an IPC channel (by the runner): when the parent goes away, even by SIGKILL, the channel closes
  // and the worker stops, so nothing outlives `selfheal up` or a test run.
  if (process.channel) {
    process.channel.unref();
    process.once('disconnect', () => onSignal('SIGTERM'));
  }
}

if (require.main === module) void main();
