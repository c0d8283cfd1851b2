/**
 * What the parts of one running pipeline worker share: its options, keys, logger, Postgres pool, Redis clients and
 * Lua scripts, and its mutable state (faults read, state, current document, counters).
 */
import { Redis } from 'ioredis';
import pino from 'pino';
import { createKeys, STAGES, type Keys, type Stage } from '../core/keys';
import { createPool } from '../db/pool';
import { defineScript, type ScriptRunner } from '../core/redis-script';
import { COMPARE_AND_DELETE, COMPARE_AND_PEXPIRE, FINISH_DOCUMENT, GIVE_BACK } from './lua';
import { errorMessage } from '../core/errors';
import type { Faults, WorkerOptions, WorkerState, WorkerStats } from './worker-options';

/** The Lua scripts of a worker (pipeline/lua.ts), registered on its Redis client. */
export interface WorkerScripts {
  compareAndDelete: ScriptRunner;
  compareAndPexpire: ScriptRunner;
  finishDocument: ScriptRunner;
  giveBack: ScriptRunner;
}

export function defineWorkerScripts(redis: Redis): WorkerScripts {
  return {
    compareAndDelete: defineScript(redis, 'pipelineCompareAndDelete', COMPARE_AND_DELETE),
    compareAndPexpire: defineScript(redis, 'pipelineCompareAndPexpire', COMPARE_AND_PEXPIRE),
    finishDocument: defineScript(redis, 'pipelineFinishDocument', FINISH_DOCUMENT),
    giveBack: defineScript(redis, 'pipelineGiveBack', GIVE_BACK),
  };
}

export interface WorkerRuntime {
  opts: WorkerOptions;
  stage: Stage;
  worker: string;
  keys: Keys;
  nextStage: Stage | undefined;
  queueKey: string;
  processingKey: string;
  log: pino.Logger;
  pool: ReturnType<typeof createPool>;
  redis: Redis;
  /** BLMOVE blocks its connection: it gets one of its own. */
  blocking: Redis;
  scripts: WorkerScripts;
  faults: Faults;
  state: WorkerState;
  stopping: boolean;
  current: { id: string; since: number } | undefined;
  stats: WorkerStats;
  startedAt: number;
}

/** Creates the clients (connecting) and registers the scripts; nothing is read or written yet. */
export function createWorkerRuntime(opts: WorkerOptions): WorkerRuntime {
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
  for (const client of [redis, blocking]) client.on('error', (err) => log.debug({ err: errorMessage(err) }, 'redis'));

  return {
    opts,
    stage,
    worker,
    keys,
    nextStage,
    queueKey,
    processingKey,
    log,
    pool,
    redis,
    blocking,
    scripts: defineWorkerScripts(redis),
    faults: { errorRate: 0, slow: 1, hang: false, silentHang: false },
    state: 'idle',
    stopping: false,
    current: undefined,
    stats: { completed: 0, failed: 0, skipped: 0, givenBack: 0 },
    startedAt: Date.now(),
  };
}
