/**
 * What the fault families of `pipeline/chaos.ts` share: errors, options, the record of injected faults kept for
 * `clear()`, argument checks, and the context each family is built on.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { STAGES, type Keys, type Stage } from '../core/keys';
import { readRegistration, readRegistrations, type WorkerRegistration } from './registry';
import { sleep } from './util';

export type ChaosErrorType =
  | 'invalid_argument'
  | 'unknown_fault'
  | 'unknown_worker'
  | 'not_running'
  | 'not_enough_documents'
  | 'llm_not_found'
  | 'docker_unavailable';

export class ChaosError extends Error {
  constructor(
    readonly type: ChaosErrorType,
    message: string,
  ) {
    super(message);
    this.name = 'ChaosError';
  }
}

/** What a fault did, JSON only. */
export type ChaosResult = { fault: string } & Record<string, unknown>;

export interface ChaosOptions {
  pool: pg.Pool;
  redis: Redis;
  keys: Keys;
  /** Needed for container workers and an LLM container. */
  docker?: Docker;
  /**
   * Environment of process workers respawned by `clear()`: connection strings are not stored in Redis, so they come
   * from here (DATABASE_URL, REDIS_URL). Default this process's environment.
   */
  spawnEnv?: NodeJS.ProcessEnv;
  /** Where respawned process workers log (`<worker>.log`). Default `<project>/.data/logs/pipeline`. */
  logDir?: string;
  /** Docker container of the LLM. Default env OLLAMA_CONTAINER, else `ollama`. */
  ollamaContainer?: string;
  /** How far in the past stuck documents started, in seconds. Default 3600 (past every default threshold). */
  stuckAgeSeconds?: number;
  /** TTL of stale locks, in seconds. Default 3600. */
  staleLockTtlSeconds?: number;
  /** Milliseconds `clear()` waits for each restarted worker to answer 200. Default 30000. */
  restartTimeoutMs?: number;
}

export interface Chaos {
  /** SIGKILL of the worker's process, or `docker kill` of its container (restart policy `no`: it stays dead). */
  killWorker(worker: string): Promise<ChaosResult>;
  /**
   * The live worker stops taking documents and answers 503 on /health (fault `hang:<worker>`); `silent`: /health
   * still answers 200, as with a stuck consumer loop behind a health check that only proves the HTTP server lives.
   */
  hangWorker(worker: string, silent?: boolean): Promise<ChaosResult>;
  /**
   * That fraction of the stage's documents really fails (fault `error-rate:<stage>`, the input or a dependency);
   * with `worker`, only that worker's (fault `error-rate@<worker>`, a fault of its process a restart cures).
   */
  errorRate(stage: Stage, fraction: number, worker?: string): Promise<ChaosResult>;
  /** The stage's processing really takes `factor` times longer (fault `slow:<stage>`); with `worker`, only its. */
  slow(stage: Stage, factor: number, worker?: string): Promise<ChaosResult>;
  /** `n` lease keys on finished documents, owned by a worker id that never had a heartbeat, with a long TTL. */
  staleLocks(n: number): Promise<ChaosResult>;
  /** `n` new documents left `processing` by a dead worker, started long ago, ids in its processing list. */
  stuckDocuments(n: number, stage?: Stage): Promise<ChaosResult>;
  /** Stops the LLM: its Docker container, else SIGSTOP of its registered local process. */
  llmDown(): Promise<ChaosResult>;
  /**
   * What a Redis restart without persistence does: every key under the pipeline's prefix is deleted (queues,
   * processing lists, leases, heartbeats, selfheal's own history), except this tool's bookkeeping
   * (`pipeline:workers`, `pipeline:chaos`, `pipeline:llm`), which a real pipeline does not have.
   */
  redisFlush(): Promise<ChaosResult>;
  /**
   * `n` ids already waiting in `queue:<stage>` pushed a second time (a retried LPUSH), and `n` ids of completed
   * documents pushed (a push after the commit was already done): duplicate and orphaned entries.
   */
  duplicateEntries(n: number, stage?: Stage): Promise<ChaosResult>;
  /** `n` new documents whose processing kills the worker process that takes them (exit 137, every time). */
  poison(n: number, stage?: Stage): Promise<ChaosResult>;
  /** Undoes every fault recorded, from whichever process injected it. */
  clear(): Promise<ChaosResult>;
  /** Faults set and chaos records not yet cleared. */
  active(): Promise<{ faults: Record<string, string>; records: ChaosRecord[] }>;
}

/** One injected fault, as recorded for `clear()`. */
export type ChaosRecord =
  | { fault: 'kill-worker'; at: number; registration: WorkerRegistration }
  | { fault: 'hang-worker'; at: number; worker: string }
  | { fault: 'error-rate'; at: number; stage: Stage; fraction: number; worker?: string }
  | { fault: 'slow'; at: number; stage: Stage; factor: number; worker?: string }
  | { fault: 'stale-lock'; at: number; owner: string; locks: { id: number; key: string; value: string }[] }
  | { fault: 'stuck-documents'; at: number; owner: string; stage: Stage; ids: number[] }
  | { fault: 'redis-flush'; at: number; deleted: number }
  | { fault: 'duplicate-entries'; at: number; stage: Stage; duplicates: string[]; orphans: string[] }
  | { fault: 'poison'; at: number; stage: Stage; ids: number[] }
  | { fault: 'llm-down'; at: number; via: 'container'; container: string }
  | { fault: 'llm-down'; at: number; via: 'process'; pid: number; argv?: string[] };

/** Redis list of chaos records (kept beside the other `pipeline:*` keys, under the same prefix). */
export const chaosKey = (keys: Keys) => `${keys.prefix}pipeline:chaos`;
/** Redis string: JSON `{ pid, url?, argv? }` of a local LLM process that `llm-down` may SIGSTOP. */
export const llmKey = (keys: Keys) => `${keys.prefix}pipeline:llm`;

export interface LlmProcess {
  pid: number;
  url?: string;
  /** Command line, checked before signalling so a reused pid is never stopped. */
  argv?: string[];
}

/**
 * Registers a local LLM process (e.g. `ollama serve`, or a stand-in in tests) so `llm-down` can stop it. A hash
 * field `llm` of `pipeline:workers` with the same JSON is also honoured.
 */
export async function registerLlmProcess(redis: Redis, keys: Keys, llm: LlmProcess): Promise<void> {
  await redis.set(llmKey(keys), JSON.stringify(llm));
}

export const hex = () => randomBytes(4).toString('hex');

export function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

export function checkStage(stage: string): Stage {
  if (!(STAGES as readonly string[]).includes(stage)) {
    throw new ChaosError('invalid_argument', `unknown stage "${stage}": expected one of ${STAGES.join(', ')}`);
  }
  return stage as Stage;
}

export function checkCount(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 1_000) {
    throw new ChaosError('invalid_argument', `${what}: n must be a whole number between 1 and 1000, got ${n}`);
  }
}

/** The clients and the helpers every fault family uses. */
export interface ChaosContext {
  opts: ChaosOptions;
  pool: pg.Pool;
  redis: Redis;
  keys: Keys;
  record: (r: ChaosRecord) => Promise<void>;
  registration: (worker: string) => Promise<WorkerRegistration>;
  needDocker: (what: string) => Docker;
  waitFor: (check: () => Promise<boolean> | boolean, timeoutMs: number) => Promise<boolean>;
}

export function createChaosContext(opts: ChaosOptions): ChaosContext {
  const { pool, redis, keys } = opts;

  async function record(r: ChaosRecord): Promise<void> {
    await redis.rpush(chaosKey(keys), JSON.stringify(r));
  }

  async function registration(worker: string): Promise<WorkerRegistration> {
    const reg = await readRegistration(redis, keys, worker);
    if (reg) return reg;
    const known = (await readRegistrations(redis, keys)).map((r) => r.worker);
    throw new ChaosError(
      'unknown_worker',
      `unknown worker "${worker}": registered workers are ${known.length > 0 ? known.join(', ') : '(none)'}`,
    );
  }

  function needDocker(what: string): Docker {
    if (!opts.docker)
      throw new ChaosError('docker_unavailable', `${what} needs Docker, and no Docker client was given`);
    return opts.docker;
  }

  async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await check()) return true;
      if (Date.now() > deadline) return false;
      await sleep(50);
    }
  }

  return { opts, pool, redis, keys, record, registration, needDocker, waitFor };
}
