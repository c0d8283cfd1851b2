/**
 * One worker of one stage of the reference document pipeline (DESIGN.md §3).
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
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pino from 'pino';
import { z } from 'zod';
import { configSchema } from '../core/config';
import { createKeys, STAGES, type Stage } from '../core/keys';
import { createPool } from '../db/pool';
import { COMPARE_AND_DELETE, COMPARE_AND_PEXPIRE, defineScript, FINISH_DOCUMENT, GIVE_BACK } from './lua';
import { processCommandLine, workerIdSchema, type WorkerRegistration } from './registry';
import { ensurePipelineSchema } from './schema';

/** Exit code for invalid arguments or environment: nothing started. */
export const USAGE_EXIT_CODE = 2;

/** Longest error text stored per document (errors are untrusted and may be anything). */
const MAX_ERROR_LENGTH = 2_000;

export const workerOptionsSchema = z
  .object({
    stage: z.enum(STAGES),
    /** Worker id: lease owner, processing-list suffix, registration field. No ':'. */
    worker: workerIdSchema,
    /** Port of `GET /health`; 0 picks a free one. */
    port: z.number().int().min(0).max(65_535),
    /** Address the health server binds to. Default 127.0.0.1. */
    host: z.string().default('127.0.0.1'),
    databaseUrl: z.string().min(1),
    redisUrl: z.string().min(1),
    /** REDIS_KEY_PREFIX. Default none. */
    prefix: z.string().default(''),
    /** Simulated work per document: uniform between minMs and maxMs milliseconds. Defaults 5 and 20. */
    minMs: z.number().min(0).default(5),
    maxMs: z.number().min(0).default(20),
    /** Lease TTL in ms; renewed every third of it while a document is processed. Default 30000. */
    lockTtlMs: z.number().int().min(1_000).default(30_000),
    /** Heartbeat period in ms; the key lives 3 periods. Default 1000. */
    heartbeatMs: z.number().int().min(50).default(1_000),
    /** Period in ms of reading `pipeline:faults`. Default 500. */
    faultPollMs: z.number().int().min(50).default(500),
    /** Seconds BLMOVE blocks before the loop looks at faults and shutdown again. Default 1. */
    blockTimeoutS: z.number().min(0.01).max(30).default(1),
    kind: z.enum(['process', 'container']).default('process'),
    /** Container name when running in Docker. */
    container: z.string().optional(),
    /** Recorded in the registration so chaos can respawn a killed process worker. */
    command: z
      .object({ argv: z.array(z.string()).min(1), cwd: z.string(), env: z.record(z.string(), z.string()) })
      .optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((o) => o.maxMs >= o.minMs, { error: 'maxMs must be >= minMs', path: ['maxMs'] });

export type PipelineWorkerOptions = z.input<typeof workerOptionsSchema>;

/** Counters of one worker since it started. */
export interface WorkerStats {
  completed: number;
  failed: number;
  /** Entries dropped by the exactly-once guard (lease held elsewhere, row not queued in this stage). */
  skipped: number;
  /** Entries given back to the queue untouched (hang, shutdown, database errors). */
  givenBack: number;
}

export type WorkerState = 'idle' | 'processing' | 'hung' | 'stopping';

export interface PipelineWorkerHandle {
  worker: string;
  stage: Stage;
  /** The port `/health` actually listens on. */
  port: number;
  healthUrl: string;
  state(): WorkerState;
  stats(): WorkerStats;
  /** Finishes the current document, gives untouched entries back, deregisters, closes everything. Idempotent. */
  stop(): Promise<void>;
}

interface Faults {
  errorRate: number;
  slow: number;
  hang: boolean;
  /** A hang /health does not see (its HTTP server and heartbeat are fine; the consumer loop is stuck). */
  silentHang: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Resolves with the promise's outcome, or a timeout error; never leaves a rejection unhandled. */
function settle<T>(
  promise: Promise<T>,
  timeoutMs: number,
): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ ok: true, value });
      },
      (err: unknown) => {
        clearTimeout(timer);
        resolve({ ok: false, error: errorText(err) });
      },
    );
  });
}

function parseFaults(hash: Record<string, string>, stage: Stage, worker: string): Faults {
  const num = (v: string | undefined, min: number, max: number, def: number) => {
    const n = v === undefined ? NaN : Number(v);
    return Number.isFinite(n) && n >= min && n <= max ? n : def;
  };
  // A stage-wide fault (the input, a dependency) and a fault of this process alone: the worse one applies.
  return {
    errorRate: Math.max(num(hash[`error-rate:${stage}`], 0, 1, 0), num(hash[`error-rate@${worker}`], 0, 1, 0)),
    slow: Math.max(num(hash[`slow:${stage}`], 0, 10_000, 1), num(hash[`slow@${worker}`], 0, 10_000, 1)),
    hang: hash[`hang:${worker}`] === '1' || hash[`hang:${worker}`] === 'silent',
    silentHang: hash[`hang:${worker}`] === 'silent',
  };
}

/** Starts a worker in this process. Resolves once it is registered and `/health` listens. */
export async function startPipelineWorker(input: PipelineWorkerOptions): Promise<PipelineWorkerHandle> {
  const opts = workerOptionsSchema.parse(input);
  const { stage, worker } = opts;
  const keys = createKeys(opts.prefix);
  const nextStage: Stage | undefined = STAGES[STAGES.indexOf(stage) + 1];
  const queueKey = keys.queue(stage);
  const processingKey = keys.processing(stage, worker);
  const log = pino({ name: 'pipeline-worker', level: opts.logLevel, base: { worker, stage } }, pino.destination(1));

  const pool = createPool(opts.databaseUrl, { max: 3, application: `selfheal-pipeline-${worker}` });
  // Short retries: a Redis outage must show up in /health and the loop's back-off, not hang a command forever.
  const redisOptions = { maxRetriesPerRequest: 2, connectTimeout: 2_000, lazyConnect: false };
  const redis = new Redis(opts.redisUrl, redisOptions);
  // BLMOVE blocks its connection: it gets one of its own.
  const blocking = new Redis(opts.redisUrl, redisOptions);
  for (const client of [redis, blocking]) client.on('error', (err) => log.debug({ err: errorText(err) }, 'redis'));

  const compareAndDelete = defineScript(redis, 'pipelineCompareAndDelete', COMPARE_AND_DELETE);
  const compareAndPexpire = defineScript(redis, 'pipelineCompareAndPexpire', COMPARE_AND_PEXPIRE);
  const finishDocument = defineScript(redis, 'pipelineFinishDocument', FINISH_DOCUMENT);
  const giveBack = defineScript(redis, 'pipelineGiveBack', GIVE_BACK);

  let faults: Faults = { errorRate: 0, slow: 1, hang: false, silentHang: false };
  let state: WorkerState = 'idle';
  let stopping = false;
  let current: { id: string; since: number } | undefined;
  const stats: WorkerStats = { completed: 0, failed: 0, skipped: 0, givenBack: 0 };
  const startedAt = Date.now();

  // ---- health ---------------------------------------------------------------------------------------------
  async function health(): Promise<{ code: number; body: Record<string, unknown> }> {
    const [r, p] = await Promise.all([settle(redis.ping(), 1_000), settle(pool.query('SELECT 1'), 1_000)]);
    const problems: string[] = [];
    if (state === 'hung' && !faults.silentHang) problems.push('hung: not taking documents');
    if (state === 'stopping') problems.push('stopping');
    if (!r.ok) problems.push(`redis: ${r.error}`);
    if (!p.ok) problems.push(`postgres: ${p.error}`);
    return {
      code: problems.length === 0 ? 200 : 503,
      body: {
        status: problems.length === 0 ? 'ok' : 'unhealthy',
        problems,
        worker,
        stage,
        kind: opts.kind,
        state,
        redis: r.ok ? 'ok' : r.error,
        postgres: p.ok ? 'ok' : p.error,
        current: current?.id ?? null,
        faults,
        ...stats,
        uptimeMs: Date.now() - startedAt,
      },
    };
  }

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== '/health') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    health().then(
      ({ code, body }) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
      (err: unknown) =>
        res
          .writeHead(503, { 'content-type': 'application/json' })
          .end(JSON.stringify({ status: 'unhealthy', problems: [errorText(err)] })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const healthUrl = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}/health`;

  // ---- registration, heartbeat, faults ----------------------------------------------------------------------
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
    faults = parseFaults(await redis.hgetall(keys.pipelineFaults()), stage, worker);
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
    throw new Error(`cannot register worker ${worker} in Redis: ${errorText(err)}`);
  }
  // In-flight beat, awaited at shutdown so a late HSET cannot re-register a stopped worker.
  let beating: Promise<void> | undefined;
  const timers = [
    setInterval(() => {
      beating = beat().catch((err: unknown) => log.warn({ err: errorText(err) }, 'heartbeat failed'));
    }, opts.heartbeatMs),
    setInterval(() => void pollFaults().catch(() => undefined), opts.faultPollMs),
  ];

  // ---- one document ---------------------------------------------------------------------------------------
  type RowClass = 'queued' | 'mine' | 'other';
  async function classify(id: string): Promise<RowClass> {
    if (!/^\d{1,18}$/.test(id)) return 'other';
    const { rows } = await pool.query<{ stage: string; status: string; worker_id: string | null }>(
      'SELECT stage, status, worker_id FROM documents WHERE id = $1',
      [id],
    );
    const row = rows[0];
    if (!row || row.stage !== stage) return 'other';
    if (row.status === 'queued') return 'queued';
    if (row.status === 'processing' && row.worker_id === worker) return 'mine';
    return 'other';
  }

  /** Takes the lease; a lease left by an earlier incarnation of this same worker id (a crash) is ours to replace. */
  async function acquireLease(id: string, value: string): Promise<boolean> {
    if ((await redis.set(keys.lock(id), value, 'PX', opts.lockTtlMs, 'NX')) === 'OK') return true;
    const holder = await redis.get(keys.lock(id));
    if (holder === null || !holder.startsWith(`${worker}:`)) return false;
    await compareAndDelete([keys.lock(id)], [holder]);
    return (await redis.set(keys.lock(id), value, 'PX', opts.lockTtlMs, 'NX')) === 'OK';
  }

  async function simulateWork(): Promise<void> {
    const base = opts.minMs + Math.random() * (opts.maxMs - opts.minMs);
    await sleep(base * faults.slow);
    if (faults.errorRate > 0 && Math.random() < faults.errorRate) {
      throw new Error(`${stage} failed: simulated processing error (error-rate fault ${faults.errorRate})`);
    }
  }

  /** Runs a write, retrying briefly: the work is done, losing it to a short database blip would waste it. */
  async function withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= 5) throw err;
        log.warn({ err: errorText(err), attempt }, `${what} failed, retrying`);
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  async function handleDocument(id: string): Promise<void> {
    if (!/^\d{1,18}$/.test(id)) {
      // Not a document id at all: nothing to process, drop the entry.
      await redis.lrem(processingKey, 1, id);
      stats.skipped++;
      return;
    }
    const lease = `${worker}:${randomBytes(8).toString('hex')}`;
    const lockKey = keys.lock(id);
    if (!(await acquireLease(id, lease))) {
      // Exactly-once guard: someone else holds the document (duplicate queue entry). Drop ours.
      await redis.lrem(processingKey, 1, id);
      stats.skipped++;
      log.debug({ id }, 'lease held by another worker; entry dropped');
      return;
    }
    let started;
    try {
      started = await pool.query(
        `UPDATE documents SET status = 'processing', worker_id = $3, attempts = attempts + 1,
                started_at = now(), updated_at = now()
          WHERE id = $1 AND stage = $2 AND status = 'queued' RETURNING payload->>'chaos' AS chaos`,
        [id, stage, worker],
      );
    } catch (err) {
      // Nothing changed in Postgres: give the entry back untouched and release the lease.
      await giveBack([processingKey, queueKey], [id]);
      await compareAndDelete([lockKey], [lease]);
      stats.givenBack++;
      throw err;
    }
    if ((started.rows[0] as { chaos?: string | null } | undefined)?.chaos === 'poison') {
      // A poison document (selfheal chaos poison): the process dies on it, as on a parser segfault or an OOM kill.
      // process.exit, not a signal: a container's PID 1 ignores the signals it sends itself.
      log.error({ id }, 'poison document: the worker process dies');
      process.exit(137);
    }
    if (started.rowCount !== 1) {
      // Exactly-once guard: already done in this stage, dead, missing, or a duplicate entry. Drop it.
      await finishDocument([processingKey, lockKey], [id, lease]);
      stats.skipped++;
      log.debug({ id }, 'row not queued in this stage; entry dropped');
      return;
    }

    current = { id, since: Date.now() };
    state = 'processing';
    // Renew the lease while the work runs, so a slow document is not taken over by another worker.
    const renew = setInterval(() => {
      compareAndPexpire([lockKey], [lease, opts.lockTtlMs]).then(
        (kept) => {
          if (kept !== 1) log.warn({ id }, 'lease lost while processing (expired or cleared)');
        },
        () => undefined,
      );
    }, opts.lockTtlMs / 3);
    const t0 = performance.now();
    let failure: string | undefined;
    try {
      await simulateWork();
    } catch (err) {
      failure = errorText(err).slice(0, MAX_ERROR_LENGTH);
    }
    const ms = Math.max(0, Math.round(performance.now() - t0));
    clearInterval(renew);

    // Crash-safety order: Postgres first, then Redis (push to the next stage, LREM, release) in one script.
    // - Crash before the commit: the row stays `processing` by us and the id stays in our processing list, which
    //   is exactly what selfheal's stuck-document detection and requeue expect (a restarted worker with the same id
    //   also takes it back, see recoverOwnList).
    // - Crash after the commit, before the script: the outcome is durable; the leftover entry in our processing
    //   list is dropped by the guard; for a non-final stage the row is `queued` in the next stage but in no queue,
    //   which `lost_documents` detects and requeue repairs; the lease expires by its TTL. Nothing is lost or done
    //   twice.
    // Pushing before committing would instead let the next stage pop an id whose row is not yet queued there and
    // drop it as a duplicate. Releasing the lease in the same script as the push means the next stage never sees
    // the id while our lease still exists.
    let sql: string;
    let params: unknown[];
    if (failure !== undefined) {
      sql = `WITH d AS (
               UPDATE documents SET status = 'failed', error = $5, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms, error)
             SELECT id, $2, $3, 'failed', $4, $5 FROM d`;
      params = [id, stage, worker, ms, failure];
    } else if (nextStage) {
      sql = `WITH d AS (
               UPDATE documents SET stage = $5, status = 'queued', worker_id = NULL, error = NULL,
                      processing_ms = $4, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms)
             SELECT id, $2, $3, 'completed', $4 FROM d`;
      params = [id, stage, worker, ms, nextStage];
    } else {
      sql = `WITH d AS (
               UPDATE documents SET status = 'completed', completed_at = now(), error = NULL,
                      processing_ms = $4, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms)
             SELECT id, $2, $3, 'completed', $4 FROM d`;
      params = [id, stage, worker, ms];
    }
    try {
      const committed = await withRetry('commit', () => pool.query(sql, params));
      const owned = committed.rowCount === 1;
      if (!owned) log.warn({ id }, 'row changed while processing (requeued or quarantined); result discarded');
      const pushTo = owned && failure === undefined && nextStage ? [keys.queue(nextStage)] : [];
      await withRetry('finish', () => finishDocument([processingKey, lockKey, ...pushTo], [id, lease]));
      if (owned && failure === undefined) stats.completed++;
      else if (owned) stats.failed++;
      log.debug({ id, ms, failure }, owned ? 'document done' : 'document discarded');
    } finally {
      current = undefined;
      state = 'idle';
    }
  }

  /**
   * Entries left in our processing list by an earlier incarnation (a crash): rows still queued here are processed;
   * rows we had started are reset to queued and processed again (the attempt never committed); anything else is
   * dropped.
   */
  async function recoverOwnList(): Promise<void> {
    const ids = await redis.lrange(processingKey, 0, -1);
    for (const id of ids.reverse()) {
      if (stopping) return;
      const cls = await classify(id);
      if (cls === 'other') {
        await redis.lrem(processingKey, 1, id);
        continue;
      }
      if (cls === 'mine') {
        await pool.query(
          `UPDATE documents SET status = 'queued', updated_at = now()
            WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3`,
          [id, stage, worker],
        );
      }
      log.info({ id, was: cls }, 'recovering entry left in own processing list');
      await handleDocument(id);
    }
  }

  /** On shutdown: untouched entries go back to the queue, stale ones are dropped. */
  async function sweepOwnList(): Promise<void> {
    for (const id of await redis.lrange(processingKey, 0, -1)) {
      const cls = await classify(id);
      if (cls === 'queued') {
        if ((await giveBack([processingKey, queueKey], [id])) === 1) stats.givenBack++;
      } else if (cls === 'other') await redis.lrem(processingKey, 1, id);
    }
  }

  // ---- the loop -------------------------------------------------------------------------------------------
  async function loop(): Promise<void> {
    // Entries an earlier incarnation left (a crash) are handled first; after an infrastructure error (Redis or
    // Postgres unreachable mid-document) the same pass puts what we had taken back in order.
    let recover = true;
    while (!stopping) {
      if (recover) {
        try {
          await recoverOwnList();
          recover = false;
        } catch (err) {
          log.warn({ err: errorText(err) }, 'recovery of own processing list failed; retrying');
          await sleep(500);
          continue;
        }
      }
      if (faults.hang) {
        if (state !== 'hung') log.warn('hang fault: not taking documents');
        state = 'hung';
        await sleep(Math.min(100, opts.faultPollMs));
        continue;
      }
      if (state === 'hung') log.info('hang fault cleared');
      state = 'idle';
      let id: string | null;
      try {
        id = await blocking.blmove(queueKey, processingKey, 'RIGHT', 'LEFT', opts.blockTimeoutS);
      } catch (err) {
        if (stopping) break;
        log.warn({ err: errorText(err) }, 'BLMOVE failed; backing off');
        recover = true; // the move may have happened with its reply lost
        await sleep(500);
        continue;
      }
      if (id === null) continue;
      if (faults.hang || stopping) {
        // Taken while the hang fault arrived or shutdown began: give it back untouched.
        await giveBack([processingKey, queueKey], [id]).catch(() => undefined);
        stats.givenBack++;
        continue;
      }
      try {
        await handleDocument(id);
      } catch (err) {
        log.error({ id, err: errorText(err) }, 'document processing failed on infrastructure; backing off');
        recover = true;
        await sleep(500);
      }
    }
  }
  const looping = loop();

  let stopped: Promise<void> | undefined;
  async function stop(): Promise<void> {
    stopping = true;
    state = 'stopping';
    // Interrupts a blocked BLMOVE at once. If Redis had already moved an id for the lost reply, the sweep below
    // finds it in our processing list and gives it back.
    blocking.disconnect();
    await looping;
    for (const t of timers) clearInterval(t);
    await beating;
    try {
      await sweepOwnList();
      await redis.multi().hdel(keys.pipelineWorkers(), worker).del(keys.heartbeat(worker)).exec();
    } catch (err) {
      log.warn({ err: errorText(err) }, 'clean-up at shutdown failed');
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
    state: () => state,
    stats: () => ({ ...stats }),
    stop: () => (stopped ??= stop()),
  };
}

// ---- command line -------------------------------------------------------------------------------------------

const cliNumber = (flag: string, opts: { int?: boolean; min: number; max: number }) =>
  z
    .string({ error: `${flag}: required` })
    .trim()
    .regex(opts.int ? /^\d+$/ : /^\d+(\.\d+)?$/, {
      error: `${flag}: expected ${opts.int ? 'a whole number' : 'a number'} between ${opts.min} and ${opts.max}`,
    })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(opts.min, { error: `${flag}: expected a number between ${opts.min} and ${opts.max}` })
        .max(opts.max, { error: `${flag}: expected a number between ${opts.min} and ${opts.max}` }),
    );

const cliSchema = z.object({
  stage: z.enum(STAGES, { error: `--stage: expected one of ${STAGES.join(', ')}` }),
  worker: z.string({ error: '--worker: required' }).pipe(workerIdSchema),
  port: cliNumber('--port', { int: true, min: 0, max: 65_535 }),
  host: z.string().optional(),
  'min-ms': cliNumber('--min-ms', { min: 0, max: 3_600_000 }).optional(),
  'max-ms': cliNumber('--max-ms', { min: 0, max: 3_600_000 }).optional(),
  'lock-ttl-ms': cliNumber('--lock-ttl-ms', { int: true, min: 1_000, max: 86_400_000 }).optional(),
  'heartbeat-ms': cliNumber('--heartbeat-ms', { int: true, min: 50, max: 600_000 }).optional(),
  'fault-poll-ms': cliNumber('--fault-poll-ms', { int: true, min: 50, max: 600_000 }).optional(),
  'block-timeout-s': cliNumber('--block-timeout-s', { min: 0.01, max: 30 }).optional(),
});

const envSchema = configSchema.pick({ DATABASE_URL: true, REDIS_URL: true, REDIS_KEY_PREFIX: true }).extend({
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Set by the runner for container workers: the container's name. */
  PIPELINE_CONTAINER: z.string().optional(),
});

export type ParsedWorkerCli = { ok: true; options: PipelineWorkerOptions } | { ok: false; error: string };

/** Validates the command line and environment of the worker script; every problem is listed. */
export function parseWorkerCli(argv: string[], env: Record<string, string | undefined>): ParsedWorkerCli {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(Object.keys(cliSchema.shape).map((k) => [k, { type: 'string' as const }])),
    }).values;
  } catch (err) {
    return { ok: false, error: errorText(err) };
  }
  const problems: string[] = [];
  const args = cliSchema.safeParse(values);
  if (!args.success) {
    for (const issue of args.error.issues) {
      const flag = `--${String(issue.path[0] ?? '')}`;
      problems.push(issue.message.startsWith('--') ? issue.message : `${flag}: ${issue.message}`);
    }
  }
  const envInput = Object.fromEntries(
    ['DATABASE_URL', 'REDIS_URL', 'REDIS_KEY_PREFIX', 'LOG_LEVEL', 'PIPELINE_CONTAINER'].flatMap((k) => {
      const v = env[k];
      return v !== undefined && v.trim() !== '' ? [[k, v]] : [];
    }),
  );
  const e = envSchema.safeParse(envInput);
  if (!e.success) for (const issue of e.error.issues) problems.push(`${String(issue.path[0])}: ${issue.message}`);
  if (!args.success || !e.success) return { ok: false, error: problems.join('; ') };
  const a = args.data;
  if (a['min-ms'] !== undefined && a['max-ms'] !== undefined && a['max-ms'] < a['min-ms']) {
    return { ok: false, error: '--max-ms: must be >= --min-ms' };
  }
  const container = e.data.PIPELINE_CONTAINER;
  const options: PipelineWorkerOptions = {
    stage: a.stage,
    worker: a.worker,
    port: a.port,
    host: a.host,
    databaseUrl: e.data.DATABASE_URL,
    redisUrl: e.data.REDIS_URL,
    prefix: e.data.REDIS_KEY_PREFIX,
    minMs: a['min-ms'],
    maxMs: a['max-ms'] ?? (a['min-ms'] !== undefined ? Math.max(a['min-ms'], 20) : undefined),
    lockTtlMs: a['lock-ttl-ms'],
    heartbeatMs: a['heartbeat-ms'],
    faultPollMs: a['fault-poll-ms'],
    blockTimeoutS: a['block-timeout-s'],
    logLevel: e.data.LOG_LEVEL,
    kind: container ? 'container' : 'process',
    container,
    command: container
      ? undefined
      : {
          // Exactly as the kernel has it (chaos compares it before signalling), else as Node reports it.
          argv: processCommandLine(process.pid) ?? [process.execPath, ...process.execArgv, ...process.argv.slice(1)],
          cwd: process.cwd(),
          env: { REDIS_KEY_PREFIX: e.data.REDIS_KEY_PREFIX, LOG_LEVEL: e.data.LOG_LEVEL },
        },
  };
  return { ok: true, options };
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
    process.stderr.write(`pipeline worker: could not ensure the pipeline's tables: ${errorText(err)}\n`);
  } finally {
    await setup.end().catch(() => undefined);
  }
  let handle: PipelineWorkerHandle;
  try {
    handle = await startPipelineWorker(parsed.options);
  } catch (err) {
    process.stderr.write(`pipeline worker: ${errorText(err)}\n`);
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
