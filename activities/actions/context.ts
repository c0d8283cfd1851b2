import type Docker from 'dockerode';
import type pg from 'pg';
import pino from 'pino';
import type { StoppedOnPurpose } from '../../core/docker-events';
import type { Keys } from '../../core/keys';
import { defineScript, type ScriptRunner } from '../../core/redis-script';
import { CLEAR_STALE_LOCKS, REMOVE_ENTRIES, REQUEUE_CHUNK, REQUEUE_LOST_CHUNK } from '../actions-lua';
import { StopRecords } from '../docker-stops';
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
  /** The actions' Lua scripts (activities/actions-lua.ts), registered on the Redis client. */
  scripts: ActionScripts;
  /**
   * The record of a container stopped on purpose (the Docker event stream's, workers/docker-events.ts; Redis's, or
   * this process's memory of it when Redis lost it), if any.
   */
  stopRecord: (container: string) => Promise<StoppedOnPurpose | undefined>;
}

export interface ActionScripts {
  requeueChunk: ScriptRunner;
  clearStaleLocks: ScriptRunner;
  removeEntries: ScriptRunner;
  requeueLostChunk: ScriptRunner;
}

export function createActionContext({
  pool,
  pipelinePool,
  redis,
  keys,
  docker,
  config,
  log: logger,
  stopRecords,
}: ActionDeps) {
  const log = logger ?? pino({ name: 'selfheal-actions' }, pino.destination(2));
  const stops = stopRecords ?? new StopRecords(redis, keys);
  const documentsPool = pipelinePool ?? pool;

  const scripts: ActionScripts = {
    requeueChunk: defineScript(redis, 'selfhealRequeueChunk', REQUEUE_CHUNK),
    clearStaleLocks: defineScript(redis, 'selfhealClearStaleLocks', CLEAR_STALE_LOCKS),
    removeEntries: defineScript(redis, 'selfhealRemoveEntries', REMOVE_ENTRIES),
    requeueLostChunk: defineScript(redis, 'selfhealRequeueLostChunk', REQUEUE_LOST_CHUNK),
  };

  const ctx: ActionContext = {
    pool,
    documentsPool,
    keys,
    docker,
    config,
    log,
    scripts,
    stopRecord: (container: string) => stops.get(container),
    ...createExecutedRows(pool, documentsPool),
  };
  return ctx;
}
