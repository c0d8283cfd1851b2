/**
 * Fault injection into the reference pipeline (`selfheal chaos <fault> [args...]`). Every fault does the real thing
 * (a SIGKILL, a stopped container, real lease keys, real rows) rather than set a flag a monitor would read, and is
 * recorded in the Redis list `pipeline:chaos` so that `clear()`, from any process, knows what to undo.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { STAGES, type Keys, type Stage } from '../core/keys';
import { CHAOS_FAULTS, type ChaosFault } from './faults';
import { COMPARE_AND_DELETE } from './lua';
import {
  isProcessRunning,
  processRunsCommand,
  readRegistration,
  readRegistrations,
  type WorkerRegistration,
} from './registry';
import { answers200, PROJECT_ROOT } from './runner';

export { CHAOS_FAULTS, type ChaosFault };

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

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const hex = () => randomBytes(4).toString('hex');

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

export function createChaos(opts: ChaosOptions): Chaos {
  const { pool, redis, keys } = opts;
  const logDir = opts.logDir ?? path.join(PROJECT_ROOT, '.data', 'logs', 'pipeline');
  const restartTimeoutMs = opts.restartTimeoutMs ?? 30_000;
  const stuckAge = opts.stuckAgeSeconds ?? 3_600;
  const lockTtl = opts.staleLockTtlSeconds ?? 3_600;
  redis.defineCommand('chaosCompareAndDelete', { numberOfKeys: 1, lua: COMPARE_AND_DELETE });
  const compareAndDelete = (key: string, value: string) =>
    (redis as unknown as { chaosCompareAndDelete(k: string, v: string): Promise<number> }).chaosCompareAndDelete(
      key,
      value,
    );

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

  // ---- faults -----------------------------------------------------------------------------------------------

  async function killWorker(worker: string): Promise<ChaosResult> {
    const reg = await registration(worker);
    if (reg.kind === 'container') {
      const docker = needDocker(`killing container worker ${worker}`);
      const name = reg.container ?? worker;
      const c = docker.getContainer(name);
      let running: boolean;
      try {
        running = (await c.inspect()).State.Running;
      } catch (err) {
        throw new ChaosError('not_running', `container ${name} of worker ${worker} not found: ${errorText(err)}`);
      }
      if (!running) throw new ChaosError('not_running', `container ${name} of worker ${worker} is not running`);
      await c.kill({ signal: 'SIGKILL' });
      await waitFor(async () => !(await c.inspect()).State.Running, 10_000);
      const state = (await c.inspect()).State;
      await record({ fault: 'kill-worker', at: Date.now(), registration: reg });
      return {
        fault: 'kill-worker',
        worker,
        kind: 'container',
        container: name,
        signal: 'SIGKILL',
        state: state.Status,
        exitCode: state.ExitCode,
      };
    }
    if (!processRunsCommand(reg.pid, reg.command?.argv)) {
      throw new ChaosError(
        'not_running',
        `worker ${worker} is not running (pid ${reg.pid} is gone or another program)`,
      );
    }
    process.kill(reg.pid, 'SIGKILL');
    const gone = await waitFor(() => !isProcessRunning(reg.pid), 5_000);
    await record({ fault: 'kill-worker', at: Date.now(), registration: reg });
    return { fault: 'kill-worker', worker, kind: 'process', pid: reg.pid, signal: 'SIGKILL', gone };
  }

  async function hangWorker(worker: string, silent = false): Promise<ChaosResult> {
    await registration(worker);
    const field = `hang:${worker}`;
    const value = silent ? 'silent' : '1';
    await redis.hset(keys.pipelineFaults(), field, value);
    await record({ fault: 'hang-worker', at: Date.now(), worker });
    return { fault: 'hang-worker', worker, silent, set: { [field]: value } };
  }

  function checkStage(stage: string): Stage {
    if (!(STAGES as readonly string[]).includes(stage)) {
      throw new ChaosError('invalid_argument', `unknown stage "${stage}": expected one of ${STAGES.join(', ')}`);
    }
    return stage as Stage;
  }

  /** The fault field of a stage, or of one registered worker of that stage. */
  async function stageOrWorkerField(fault: string, stage: Stage, worker: string | undefined): Promise<string> {
    if (worker === undefined) return `${fault}:${stage}`;
    const reg = await registration(worker);
    if (reg.stage !== stage) {
      throw new ChaosError('invalid_argument', `${fault}: worker ${worker} serves ${reg.stage}, not ${stage}`);
    }
    return `${fault}@${worker}`;
  }

  async function errorRate(stage: Stage, fraction: number, worker?: string): Promise<ChaosResult> {
    checkStage(stage);
    if (!Number.isFinite(fraction) || fraction < 0 || fraction > 1) {
      throw new ChaosError('invalid_argument', `error-rate: fraction must be between 0 and 1, got ${fraction}`);
    }
    const field = await stageOrWorkerField('error-rate', stage, worker);
    await redis.hset(keys.pipelineFaults(), field, String(fraction));
    await record({ fault: 'error-rate', at: Date.now(), stage, fraction, ...(worker ? { worker } : {}) });
    return { fault: 'error-rate', stage, ...(worker ? { worker } : {}), fraction, set: { [field]: String(fraction) } };
  }

  async function slow(stage: Stage, factor: number, worker?: string): Promise<ChaosResult> {
    checkStage(stage);
    if (!Number.isFinite(factor) || factor <= 0 || factor > 1_000) {
      throw new ChaosError('invalid_argument', `slow: factor must be a number above 0 and at most 1000, got ${factor}`);
    }
    const field = await stageOrWorkerField('slow', stage, worker);
    await redis.hset(keys.pipelineFaults(), field, String(factor));
    await record({ fault: 'slow', at: Date.now(), stage, factor, ...(worker ? { worker } : {}) });
    return { fault: 'slow', stage, ...(worker ? { worker } : {}), factor, set: { [field]: String(factor) } };
  }

  function checkCount(what: string, n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > 1_000) {
      throw new ChaosError('invalid_argument', `${what}: n must be a whole number between 1 and 1000, got ${n}`);
    }
  }

  /**
   * Leases on finished documents (completed, failed or dead), newest first, as a worker that died between its
   * commit and its release would leave them: the documents are real and nothing else about them is wrong, so the
   * only anomaly is the lock itself. The owner is a fresh worker id that never had a heartbeat or registration.
   */
  async function staleLocks(n: number): Promise<ChaosResult> {
    checkCount('stale-lock', n);
    const owner = `chaos-dead-${hex()}`;
    const { rows } = await pool.query<{ id: number }>(
      `SELECT id FROM documents WHERE status IN ('completed', 'failed', 'dead') ORDER BY id DESC LIMIT $1`,
      // Room to skip documents already locked (by earlier stale-lock faults or live workers).
      [n * 3 + 200],
    );
    const locks: { id: number; key: string; value: string }[] = [];
    for (const { id } of rows) {
      if (locks.length >= n) break;
      const key = keys.lock(id);
      const value = `${owner}:${hex()}${hex()}`;
      // NX: never overwrite a live lease.
      if ((await redis.set(key, value, 'EX', lockTtl, 'NX')) === 'OK') locks.push({ id, key, value });
    }
    if (locks.length > 0) await record({ fault: 'stale-lock', at: Date.now(), owner, locks });
    if (locks.length < n) {
      throw new ChaosError(
        'not_enough_documents',
        `stale-lock: locked ${locks.length} of ${n} documents: stale locks are put on finished documents, and only ` +
          `${locks.length} unlocked ones exist; let the pipeline finish some documents first` +
          (locks.length > 0 ? ' (the locks made are recorded; `clear` removes them)' : ''),
      );
    }
    return {
      fault: 'stale-lock',
      owner,
      ownerHeartbeat: null,
      documents: locks.map((l) => l.id),
      keys: locks.map((l) => l.key),
      ttlSeconds: lockTtl,
    };
  }

  /**
   * New documents left as a crash leaves them: `processing`, owned by a worker id that has no heartbeat and no
   * registration, started `stuckAgeSeconds` ago, their ids in that worker's processing list, no lease (it would
   * have expired long ago). New rows, so no live worker's document is disturbed.
   */
  async function stuckDocuments(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('stuck-documents', n);
    checkStage(stage);
    const owner = `chaos-dead-${hex()}`;
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, payload, created_at, started_at, updated_at)
       SELECT $1, 'processing', $2, 1,
              jsonb_build_object('title', 'stuck document ' || n, 'chaos', 'stuck-documents'),
              now() - make_interval(secs => $3 + 60), now() - make_interval(secs => $3),
              now() - make_interval(secs => $3)
         FROM generate_series(1, $4::int) AS n ORDER BY n RETURNING id`,
      [stage, owner, stuckAge, n],
    );
    const ids = rows.map((r) => r.id);
    await redis.lpush(keys.processing(stage, owner), ...ids);
    await record({ fault: 'stuck-documents', at: Date.now(), owner, stage, ids });
    return {
      fault: 'stuck-documents',
      owner,
      ownerHeartbeat: null,
      stage,
      documents: ids,
      processingList: keys.processing(stage, owner),
      startedSecondsAgo: stuckAge,
    };
  }

  async function redisFlush(): Promise<ChaosResult> {
    const keep = new Set([chaosKey(keys), llmKey(keys), keys.pipelineWorkers()]);
    let deleted = 0;
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${keys.prefix}*`, 'COUNT', 1000);
      cursor = next;
      const doomed = batch.filter((k) => !keep.has(k));
      if (doomed.length > 0) deleted += await redis.unlink(...doomed);
    } while (cursor !== '0');
    await record({ fault: 'redis-flush', at: Date.now(), deleted });
    return { fault: 'redis-flush', deleted, kept: [...keep].sort() };
  }

  async function duplicateEntries(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('duplicate-entries', n);
    checkStage(stage);
    const waiting = await redis.lrange(keys.queue(stage), -n, -1);
    const { rows } = await pool.query<{ id: string }>(
      `SELECT id::text AS id FROM documents WHERE status = 'completed' ORDER BY completed_at DESC NULLS LAST LIMIT $1`,
      [n],
    );
    if (waiting.length < n || rows.length < n) {
      throw new ChaosError(
        'not_enough_documents',
        `duplicate-entries: needs ${n} entries waiting in queue:${stage} (has ${waiting.length}) and ${n} completed documents (has ${rows.length})`,
      );
    }
    const orphans = rows.map((r) => r.id);
    await redis.lpush(keys.queue(stage), ...waiting, ...orphans);
    await record({ fault: 'duplicate-entries', at: Date.now(), stage, duplicates: waiting, orphans });
    return { fault: 'duplicate-entries', stage, duplicates: waiting, orphans, queue: keys.queue(stage) };
  }

  async function poison(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('poison', n);
    checkStage(stage);
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, payload)
       SELECT $1, 'queued', jsonb_build_object('title', 'poison document ' || n, 'chaos', 'poison')
         FROM generate_series(1, $2::int) AS n ORDER BY n RETURNING id`,
      [stage, n],
    );
    const ids = rows.map((r) => r.id);
    await redis.lpush(keys.queue(stage), ...ids);
    await record({ fault: 'poison', at: Date.now(), stage, ids });
    return { fault: 'poison', stage, documents: ids, effect: 'the worker that takes one exits with code 137' };
  }

  async function findLlmProcess(): Promise<LlmProcess | undefined> {
    const raws = [await redis.get(llmKey(keys)), await redis.hget(keys.pipelineWorkers(), 'llm')];
    for (const raw of raws) {
      if (!raw) continue;
      try {
        const v = JSON.parse(raw) as Partial<LlmProcess>;
        if (typeof v.pid === 'number' && Number.isInteger(v.pid) && v.pid > 0) {
          return { pid: v.pid, url: v.url, argv: Array.isArray(v.argv) ? v.argv : undefined };
        }
      } catch {
        /* not ours */
      }
    }
    return undefined;
  }

  async function llmDown(): Promise<ChaosResult> {
    const name = opts.ollamaContainer ?? process.env.OLLAMA_CONTAINER ?? 'ollama';
    let dockerNote = 'no Docker client';
    if (opts.docker) {
      const c = opts.docker.getContainer(name);
      let running: boolean | undefined;
      try {
        running = (await c.inspect()).State.Running;
      } catch (err) {
        dockerNote = (err as { statusCode?: number }).statusCode === 404 ? 'no such container' : errorText(err);
      }
      if (running === false) return { fault: 'llm-down', via: 'container', container: name, alreadyStopped: true };
      if (running) {
        await c.stop({ t: 5 });
        await record({ fault: 'llm-down', at: Date.now(), via: 'container', container: name });
        return { fault: 'llm-down', via: 'container', container: name, state: (await c.inspect()).State.Status };
      }
    }
    const llm = await findLlmProcess();
    if (llm && processRunsCommand(llm.pid, llm.argv)) {
      process.kill(llm.pid, 'SIGSTOP');
      await waitFor(() => processState(llm.pid) === 'T', 2_000);
      await record({ fault: 'llm-down', at: Date.now(), via: 'process', pid: llm.pid, argv: llm.argv });
      return {
        fault: 'llm-down',
        via: 'process',
        pid: llm.pid,
        url: llm.url,
        signal: 'SIGSTOP',
        state: processState(llm.pid),
      };
    }
    throw new ChaosError(
      'llm_not_found',
      `llm-down: found no Docker container "${name}" (${dockerNote}; set OLLAMA_CONTAINER to name another) and no ` +
        `running local LLM process registered in Redis (${llmKey(keys)}, or field "llm" of ${keys.pipelineWorkers()})` +
        (llm ? `; the registered pid ${llm.pid} is not running` : ''),
    );
  }

  // ---- clear ------------------------------------------------------------------------------------------------

  async function restartWorker(reg: WorkerRegistration): Promise<Record<string, unknown>> {
    if (reg.kind === 'container') {
      const docker = needDocker(`restarting container worker ${reg.worker}`);
      const name = reg.container ?? reg.worker;
      const c = docker.getContainer(name);
      if (!(await c.inspect()).State.Running) await c.start();
      const healthy = await waitFor(() => answers200(reg.healthUrl), restartTimeoutMs);
      return { worker: reg.worker, container: name, restarted: true, healthy };
    }
    const now = await readRegistration(redis, keys, reg.worker);
    if (now && now.pid !== reg.pid && processRunsCommand(now.pid, now.command?.argv)) {
      return { worker: reg.worker, restarted: false, reason: `already running as pid ${now.pid}` };
    }
    if (!reg.command) throw new Error(`worker ${reg.worker} recorded no command line to restart it with`);
    const [exe, ...args] = reg.command.argv as [string, ...string[]];
    mkdirSync(logDir, { recursive: true });
    const out = openSync(path.join(logDir, `${reg.worker}.log`), 'a');
    const env: NodeJS.ProcessEnv = { ...(opts.spawnEnv ?? process.env), ...reg.command.env };
    delete env.PIPELINE_CONTAINER;
    // Detached and unreferenced: it must outlive a `selfheal chaos clear` command.
    const child = spawn(exe, args, { cwd: reg.command.cwd, env, detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    child.unref();
    const pid = child.pid;
    const healthy = await waitFor(async () => {
      const r = await readRegistration(redis, keys, reg.worker);
      return r !== undefined && r.pid === pid && (await answers200(r.healthUrl));
    }, restartTimeoutMs);
    return { worker: reg.worker, restarted: true, pid, healthy };
  }

  async function undo(r: ChaosRecord): Promise<Record<string, unknown>> {
    switch (r.fault) {
      case 'kill-worker':
        return { fault: r.fault, ...(await restartWorker(r.registration)) };
      case 'hang-worker':
      case 'error-rate':
      case 'slow':
        // The fault hash is deleted as a whole before any undo.
        return {
          fault: r.fault,
          ...('worker' in r && r.worker ? { worker: r.worker } : {}),
          ...('stage' in r ? { stage: r.stage } : {}),
        };
      case 'stale-lock': {
        let removed = 0;
        for (const l of r.locks) removed += await compareAndDelete(l.key, l.value);
        return { fault: r.fault, owner: r.owner, removed };
      }
      case 'stuck-documents': {
        // Only the documents still stuck as we left them: selfheal may have requeued some already.
        const { rows } = await pool.query<{ id: number }>(
          `UPDATE documents SET status = 'queued', worker_id = NULL, updated_at = now()
            WHERE id = ANY($1::bigint[]) AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id`,
          [r.ids, r.stage, r.owner],
        );
        const requeued = rows.map((x) => x.id).sort((a, b) => a - b);
        const m = redis.multi();
        for (const id of r.ids) m.lrem(keys.processing(r.stage, r.owner), 0, id);
        if (requeued.length > 0) m.lpush(keys.queue(r.stage), ...requeued);
        await m.exec();
        return { fault: r.fault, owner: r.owner, requeued };
      }
      case 'redis-flush':
        // Nothing to restore: that is the point. The pipeline's rows are intact; the lists are what was lost.
        return { fault: r.fault, deleted: r.deleted };
      case 'duplicate-entries': {
        let removed = 0;
        for (const id of r.duplicates) {
          if ((await redis.lpos(keys.queue(r.stage), id, 'COUNT', 0)).length > 1) {
            removed += await redis.lrem(keys.queue(r.stage), 1, id);
          }
        }
        for (const id of r.orphans) removed += await redis.lrem(keys.queue(r.stage), 0, id);
        return { fault: r.fault, stage: r.stage, removed };
      }
      case 'poison': {
        const { rows } = await pool.query<{ id: number }>(
          `UPDATE documents SET status = 'dead', error = 'poison document removed by chaos clear', updated_at = now()
            WHERE id = ANY($1::bigint[]) AND status NOT IN ('completed', 'dead') RETURNING id`,
          [r.ids],
        );
        return { fault: r.fault, markedDead: rows.map((x) => x.id).sort((a, b) => a - b) };
      }
      case 'llm-down': {
        if (r.via === 'container') {
          const c = needDocker(`starting LLM container ${r.container}`).getContainer(r.container);
          if (!(await c.inspect()).State.Running) await c.start();
          return { fault: r.fault, container: r.container, started: true };
        }
        if (processRunsCommand(r.pid, r.argv)) process.kill(r.pid, 'SIGCONT');
        return { fault: r.fault, pid: r.pid, signal: 'SIGCONT' };
      }
    }
  }

  async function clear(): Promise<ChaosResult> {
    // Take the records atomically, so two concurrent clears never undo one fault twice.
    const res = await redis.multi().lrange(chaosKey(keys), 0, -1).del(chaosKey(keys)).exec();
    const raws = (res?.[0]?.[1] as string[] | undefined) ?? [];
    const faults = await redis.hgetall(keys.pipelineFaults());
    await redis.del(keys.pipelineFaults());
    const undone: Record<string, unknown>[] = [];
    const failed: { record: ChaosRecord; error: string }[] = [];
    for (const raw of raws.reverse()) {
      let r: ChaosRecord;
      try {
        r = JSON.parse(raw) as ChaosRecord;
      } catch {
        continue;
      }
      try {
        undone.push(await undo(r));
      } catch (err) {
        failed.push({ record: r, error: errorText(err) });
      }
    }
    // Keep what could not be undone, so a later clear can try again.
    if (failed.length > 0) await redis.rpush(chaosKey(keys), ...failed.map((f) => JSON.stringify(f.record)));
    return {
      fault: 'clear',
      faultsCleared: Object.keys(faults).sort(),
      undone,
      failed: failed.map((f) => ({ fault: f.record.fault, error: f.error })),
    };
  }

  async function active() {
    const [faults, raws] = await Promise.all([
      redis.hgetall(keys.pipelineFaults()),
      redis.lrange(chaosKey(keys), 0, -1),
    ]);
    return { faults, records: raws.map((r) => JSON.parse(r) as ChaosRecord) };
  }

  return {
    killWorker,
    hangWorker,
    errorRate,
    slow,
    staleLocks,
    stuckDocuments,
    llmDown,
    redisFlush,
    duplicateEntries,
    poison,
    clear,
    active,
  };
}

function parseNumber(what: string, raw: string | undefined, opts: { int?: boolean; min: number; max: number }): number {
  if (raw === undefined) throw new ChaosError('invalid_argument', `${what}: missing`);
  const re = opts.int ? /^\d+$/ : /^\d+(\.\d+)?$|^\.\d+$/;
  const n = Number(raw);
  if (!re.test(raw.trim()) || !Number.isFinite(n) || n < opts.min || n > opts.max) {
    throw new ChaosError(
      'invalid_argument',
      `${what}: expected ${opts.int ? 'a whole number' : 'a number'} between ${opts.min} and ${opts.max}, got "${raw}"`,
    );
  }
  return n;
}

function parseStage(raw: string | undefined): Stage {
  if (raw === undefined) throw new ChaosError('invalid_argument', `stage: missing (one of ${STAGES.join(', ')})`);
  if (!(STAGES as readonly string[]).includes(raw)) {
    throw new ChaosError('invalid_argument', `unknown stage "${raw}": expected one of ${STAGES.join(', ')}`);
  }
  return raw as Stage;
}

/**
 * The CLI form, `selfheal chaos <fault> [args...]`, mapped to the methods with validated arguments. Throws a
 * `ChaosError` (with `type`) on an unknown fault, a bad or missing argument, an unknown stage or worker.
 */
export async function runChaos(chaos: Chaos, fault: string, args: string[]): Promise<ChaosResult> {
  if (!Object.hasOwn(CHAOS_FAULTS, fault)) {
    throw new ChaosError(
      'unknown_fault',
      `unknown fault "${fault}": expected one of ${Object.keys(CHAOS_FAULTS).join(', ')}`,
    );
  }
  const f = fault as ChaosFault;
  const usage = `${f} ${CHAOS_FAULTS[f]}`.trim();
  const arity: Record<ChaosFault, [number, number]> = {
    'kill-worker': [1, 1],
    'hang-worker': [1, 2],
    'error-rate': [2, 3],
    slow: [2, 3],
    'stale-lock': [1, 1],
    'stuck-documents': [1, 2],
    'llm-down': [0, 0],
    'redis-flush': [0, 0],
    'duplicate-entries': [1, 2],
    poison: [1, 2],
    clear: [0, 0],
  };
  const [min, max] = arity[f];
  if (args.length < min || args.length > max) {
    throw new ChaosError(
      'invalid_argument',
      `${f}: expected ${min === max ? min : `${min} to ${max}`} argument${max === 1 ? '' : 's'}, got ${args.length} (usage: ${usage})`,
    );
  }
  switch (f) {
    case 'kill-worker':
      return chaos.killWorker(args[0]!);
    case 'hang-worker':
      if (args[1] !== undefined && args[1] !== 'silent') {
        throw new ChaosError(
          'invalid_argument',
          `hang-worker: the second argument can only be "silent", got "${args[1]}"`,
        );
      }
      return chaos.hangWorker(args[0]!, args[1] === 'silent');
    case 'error-rate':
      return chaos.errorRate(
        parseStage(args[0]),
        parseNumber('error-rate fraction', args[1], { min: 0, max: 1 }),
        args[2],
      );
    case 'slow':
      return chaos.slow(parseStage(args[0]), parseNumber('slow factor', args[1], { min: 0.01, max: 1_000 }), args[2]);
    case 'stale-lock':
      return chaos.staleLocks(parseNumber('stale-lock n', args[0], { int: true, min: 1, max: 1_000 }));
    case 'stuck-documents':
      return chaos.stuckDocuments(
        parseNumber('stuck-documents n', args[0], { int: true, min: 1, max: 1_000 }),
        args[1] === undefined ? undefined : parseStage(args[1]),
      );
    case 'llm-down':
      return chaos.llmDown();
    case 'redis-flush':
      return chaos.redisFlush();
    case 'duplicate-entries':
      return chaos.duplicateEntries(
        parseNumber('duplicate-entries n', args[0], { int: true, min: 1, max: 1_000 }),
        args[1] === undefined ? undefined : parseStage(args[1]),
      );
    case 'poison':
      return chaos.poison(
        parseNumber('poison n', args[0], { int: true, min: 1, max: 1_000 }),
        args[1] === undefined ? undefined : parseStage(args[1]),
      );
    case 'clear':
      return chaos.clear();
  }
}
