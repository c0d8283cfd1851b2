import type Docker from 'dockerode';
import type pg from 'pg';
import pino from 'pino';
import type { Keys } from '../../core/keys';
import { CLEAR_STALE_LOCKS, REMOVE_ENTRIES, REQUEUE_CHUNK, REQUEUE_LOST_CHUNK } from '../actions-lua';
import { createExecutedRows } from './executed-row';
import type { ActionConfig, ActionDeps } from './types';

/** What the actions share: the clients, the configuration, the Redis scripts and the executed-row helpers. */
export interface ActionContext extends ReturnType<typeof createExecutedRows> {
  pool: pg.Pool;
  /** Where `documents` lives; the same pool as `healing_log` unless SELFHEAL_DATABASE_URL names another database. */
  documentsPool: pg.Pool;
  keys: Keys;
  docker: Docker;
  config: ActionConfig;
  log: pino.Logger;
  runScript: (name: string, keyList: string[], args: (string | number)[]) => Promise<unknown>;
}

export function createActionContext({ pool, pipelinePool, redis, keys, docker, config, log: logger }: ActionDeps) {
  const log = logger ?? pino({ name: 'selfheal-actions' }, pino.destination(2));
  const documentsPool = pipelinePool ?? pool;

  // Scripts by SHA (EVALSHA with a transparent EVAL fallback, by ioredis); the number of keys is given per call.
  const scripts = redis as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>;
  redis.defineCommand('selfhealRequeueChunk', { lua: REQUEUE_CHUNK });
  redis.defineCommand('selfhealClearStaleLocks', { lua: CLEAR_STALE_LOCKS });
  redis.defineCommand('selfhealRemoveEntries', { lua: REMOVE_ENTRIES });
  redis.defineCommand('selfhealRequeueLostChunk', { lua: REQUEUE_LOST_CHUNK });
  const runScript = (name: string, keyList: string[], args: (string | number)[]) =>
    scripts[name]!.call(redis, keyList.length, ...keyList, ...args);

  const ctx: ActionContext = {
    pool,
    documentsPool,
    keys,
    docker,
    config,
    log,
    runScript,
    ...createExecutedRows(pool, documentsPool),
  };
  return ctx;
}
