/**
 * Starts and stops pipeline workers: as local processes (compiled, or from sources with tsx's hook; own process group, IPC channel so
 * they stop with their parent) or as Docker containers of the local image (network host, restart policy `no`, so a
 * killed container stays dead until something restarts it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type { Keys, Stage } from '../core/keys';
import { nodeCommand, PROJECT_ROOT, projectScript } from '../workers/project';
import { ensurePipelineImage } from './image';
import { processRunsCommand, readRegistration, type WorkerKind } from './registry';
import {
  answers200,
  demuxLogs,
  freePort,
  isPortFree,
  PIPELINE_LABEL,
  PipelineRunnerError,
  PREFIX_LABEL,
  tail,
  terminate,
} from './runner-support';
import { sleep } from './util';

export {
  answers200,
  freePort,
  PIPELINE_LABEL,
  PipelineRunnerError,
  PREFIX_LABEL,
  stopAllPipelineWorkers,
  terminate,
} from './runner-support';
export { PROJECT_ROOT };
/** `pipeline/worker.js` compiled, `pipeline/worker.ts` from sources. */
export const WORKER_SCRIPT = projectScript('pipeline/worker');

export interface PipelineRunnerOptions {
  /** What every worker connects to (DATABASE_URL, REDIS_URL, REDIS_KEY_PREFIX). */
  connection: { databaseUrl: string; redisUrl: string; prefix: string };
  /** Client of the same Redis, to read registrations. */
  redis: Redis;
  keys: Keys;
  /** Needed for container workers. */
  docker?: Docker;
  /** Image of container workers. Default: `ensurePipelineImage(docker)` on first use. */
  image?: string;
  /** Where process workers write their logs (`<worker>.log`). Default `<project>/.data/logs/pipeline`. */
  logDir?: string;
  /**
   * First health port; workers get the next free ones in start order. Default: ports the OS reports free
   * (listen on port 0), which never collide with anything listening.
   */
  basePort?: number;
  /** Address health servers bind to. Default 127.0.0.1. */
  host?: string;
  /** Container names are `<containerPrefix>-<stage>-<n>`. Default `pipeline` (matches CONTAINER_ALLOWLIST). */
  containerPrefix?: string;
  /** Simulated work per document in ms (uniform). Default the worker's (5..20). */
  work?: { minMs?: number; maxMs?: number };
  /** Lease TTL, heartbeat and fault-poll periods (ms) and BLMOVE timeout (s) of the workers. */
  tuning?: { lockTtlMs?: number; heartbeatMs?: number; faultPollMs?: number; blockTimeoutS?: number };
  /** LOG_LEVEL of the workers. Default info. */
  logLevel?: string;
  /** Milliseconds a worker may take to answer 200 on /health. Default 30000. */
  startTimeoutMs?: number;
  /** Extra environment of process workers (PATH etc. are inherited from this process). */
  env?: NodeJS.ProcessEnv;
}

export interface WorkerSpec {
  stage: Stage;
  /** Default `process`. */
  kind?: WorkerKind;
  /** Default `<stage>-<n>` for processes, `<containerPrefix>-<stage>-<n>` for containers (id = container name). */
  worker?: string;
  /** Default from the runner's port policy. */
  port?: number;
}

export interface RunningWorker {
  worker: string;
  stage: Stage;
  kind: WorkerKind;
  port: number;
  healthUrl: string;
  /** Host pid of a process worker. */
  pid?: number;
  container?: string;
  /** `name=url` for HEALTH_TARGETS: the container name, or the worker id of a process. */
  healthTarget: string;
  logFile?: string;
}

export interface PipelineRunner {
  /** Starts one worker; resolves when its /health answers 200 and it is registered. */
  start(spec: WorkerSpec): Promise<RunningWorker>;
  /** Starts `count` workers of each entry, all at once. */
  startMany(plan: { stage: Stage; kind?: WorkerKind; count: number }[]): Promise<RunningWorker[]>;
  /** Everything started and not yet stopped. */
  workers(): RunningWorker[];
  /** HEALTH_TARGETS value for the workers: comma-separated `name=url`. */
  healthTargets(): string;
  /** Stops one worker (and a respawned copy of it, see chaos `clear()`). */
  stopWorker(worker: string): Promise<void>;
  /** Stops everything started: processes by process group, containers removed. Idempotent. */
  stop(): Promise<void>;
}

export function createPipelineRunner(opts: PipelineRunnerOptions): PipelineRunner {
  const host = opts.host ?? '127.0.0.1';
  const logDir = opts.logDir ?? path.join(PROJECT_ROOT, '.data', 'logs', 'pipeline');
  const containerPrefix = opts.containerPrefix ?? 'pipeline';
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const running = new Map<string, RunningWorker & { child?: ChildProcess }>();
  const counters = new Map<string, number>();
  const usedPorts = new Set<number>();
  let nextPort = opts.basePort;
  let image: Promise<string> | undefined;

  function flags(): string[] {
    const out: string[] = [];
    const add = (flag: string, v: number | undefined) => {
      if (v !== undefined) out.push(flag, String(v));
    };
    add('--min-ms', opts.work?.minMs);
    add('--max-ms', opts.work?.maxMs);
    add('--lock-ttl-ms', opts.tuning?.lockTtlMs);
    add('--heartbeat-ms', opts.tuning?.heartbeatMs);
    add('--fault-poll-ms', opts.tuning?.faultPollMs);
    add('--block-timeout-s', opts.tuning?.blockTimeoutS);
    return out;
  }

  async function allocatePort(): Promise<number> {
    if (nextPort === undefined) {
      for (;;) {
        const p = await freePort(host);
        if (!usedPorts.has(p)) {
          usedPorts.add(p);
          return p;
        }
      }
    }
    for (; nextPort <= 65_535; nextPort++) {
      const p = nextPort;
      if (usedPorts.has(p) || !(await isPortFree(host, p))) continue;
      usedPorts.add(p);
      nextPort++;
      return p;
    }
    throw new PipelineRunnerError(`no free port at or above ${opts.basePort}`);
  }

  function nextId(stage: Stage, kind: WorkerKind): string {
    const key = `${kind}:${stage}`;
    const n = (counters.get(key) ?? 0) + 1;
    counters.set(key, n);
    return kind === 'container' ? `${containerPrefix}-${stage}-${n}` : `${stage}-${n}`;
  }

  /** Polls /health and the registration; `failed()` returns a reason to give up early (the worker exited). */
  async function waitReady(w: RunningWorker, failed: () => Promise<string | undefined>): Promise<void> {
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      const reason = await failed();
      if (reason) throw new PipelineRunnerError(`worker ${w.worker} ${reason}`);
      if (await answers200(w.healthUrl)) {
        const reg = await readRegistration(opts.redis, opts.keys, w.worker);
        if (reg && reg.healthUrl === w.healthUrl) return;
      }
      await sleep(100);
    }
    throw new PipelineRunnerError(
      `worker ${w.worker} did not answer 200 at ${w.healthUrl} within ${startTimeoutMs} ms`,
    );
  }

  async function startProcess(stage: Stage, worker: string, port: number): Promise<RunningWorker> {
    mkdirSync(logDir, { recursive: true });
    const logFile = path.join(logDir, `${worker}.log`);
    const out = openSync(logFile, 'a');
    // One process per worker, no wrapper: `node dist/pipeline/worker.js`, or from sources node with tsx's hook.
    const [exe, ...pre] = nodeCommand(WORKER_SCRIPT);
    const args = [...pre, '--stage', stage, '--worker', worker, '--port', String(port), '--host', host, ...flags()];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...opts.env,
      DATABASE_URL: opts.connection.databaseUrl,
      REDIS_URL: opts.connection.redisUrl,
      REDIS_KEY_PREFIX: opts.connection.prefix,
      LOG_LEVEL: opts.logLevel ?? 'info',
    };
    delete env.PIPELINE_CONTAINER;
    // Own process group (detached) so stop() reaches anything it spawns; IPC so it stops when we go away.
    const child = spawn(exe, args, { cwd: PROJECT_ROOT, env, stdio: ['ignore', out, out, 'ipc'], detached: true });
    closeSync(out);
    let exit: string | undefined;
    child.once('exit', (code, sig) => (exit = `exited at start (code ${code}, signal ${sig}): ${tail(logFile)}`));
    child.once('error', (err) => (exit = `could not be spawned: ${err.message}`));
    const pid = child.pid;
    if (pid === undefined) throw new PipelineRunnerError(`worker ${worker} could not be spawned`);
    const w = {
      worker,
      stage,
      kind: 'process' as const,
      port,
      healthUrl: `http://${host}:${port}/health`,
      pid,
      healthTarget: `${worker}=http://${host}:${port}/health`,
      logFile,
      child,
    };
    running.set(worker, w);
    try {
      await waitReady(w, () => Promise.resolve(exit));
    } catch (err) {
      await stopWorker(worker);
      throw err;
    }
    return w;
  }

  async function startContainer(stage: Stage, worker: string, port: number): Promise<RunningWorker> {
    const docker = opts.docker;
    if (!docker) throw new PipelineRunnerError('container workers need a Docker client (docker option)');
    image ??= opts.image ? Promise.resolve(opts.image) : ensurePipelineImage(docker).then((i) => i.image);
    const img = await image;
    const existing = docker.getContainer(worker);
    try {
      const info = await existing.inspect();
      if (info.Config.Labels?.[PIPELINE_LABEL] !== 'true') {
        throw new PipelineRunnerError(`a container named ${worker} exists and was not created by selfheal; remove it`);
      }
      await existing.remove({ force: true }); // a leftover of ours from an earlier run
    } catch (err) {
      if (err instanceof PipelineRunnerError) throw err;
    }
    const container = await docker.createContainer({
      name: worker,
      Image: img,
      Cmd: ['--stage', stage, '--worker', worker, '--port', String(port), '--host', host, ...flags()],
      Env: [
        `DATABASE_URL=${opts.connection.databaseUrl}`,
        `REDIS_URL=${opts.connection.redisUrl}`,
        `REDIS_KEY_PREFIX=${opts.connection.prefix}`,
        `LOG_LEVEL=${opts.logLevel ?? 'info'}`,
        `PIPELINE_CONTAINER=${worker}`,
      ],
      Labels: {
        [PIPELINE_LABEL]: 'true',
        [PREFIX_LABEL]: opts.connection.prefix,
        'selfheal.stage': stage,
        'selfheal.worker': worker,
      },
      StopTimeout: 10,
      HostConfig: { NetworkMode: 'host', RestartPolicy: { Name: 'no' } },
    });
    const w: RunningWorker = {
      worker,
      stage,
      kind: 'container',
      port,
      healthUrl: `http://${host}:${port}/health`,
      container: worker,
      healthTarget: `${worker}=http://${host}:${port}/health`,
    };
    running.set(worker, w);
    try {
      await container.start();
      await waitReady(w, async () => {
        const info = await container.inspect();
        if (info.State.Running) return undefined;
        const logs = demuxLogs(await container.logs({ stdout: true, stderr: true }));
        return `container exited at start (code ${info.State.ExitCode}): ${logs.trim().split('\n').slice(-15).join('\n')}`;
      });
    } catch (err) {
      await stopWorker(worker);
      throw err;
    }
    return w;
  }

  async function start(spec: WorkerSpec): Promise<RunningWorker> {
    const kind = spec.kind ?? 'process';
    const worker = spec.worker ?? nextId(spec.stage, kind);
    if (running.has(worker)) throw new PipelineRunnerError(`worker ${worker} is already running`);
    const port = spec.port ?? (await allocatePort());
    return kind === 'container' ? startContainer(spec.stage, worker, port) : startProcess(spec.stage, worker, port);
  }

  async function stopWorker(worker: string): Promise<void> {
    const w = running.get(worker);
    if (!w) return;
    running.delete(worker);
    if (w.kind === 'process') {
      if (w.pid !== undefined) await terminate(w.pid);
      // chaos clear() may have respawned it: that copy is not our child, the registration names it.
      const reg = await readRegistration(opts.redis, opts.keys, worker).catch(() => undefined);
      if (reg?.kind === 'process' && reg.pid !== w.pid && processRunsCommand(reg.pid, reg.command?.argv)) {
        await terminate(reg.pid);
      }
    } else if (opts.docker) {
      const c = opts.docker.getContainer(worker);
      try {
        if ((await c.inspect()).State.Running) await c.stop({ t: 10 });
      } catch {
        /* already gone or stopped */
      }
      try {
        if (logDir) {
          const logs = demuxLogs(await c.logs({ stdout: true, stderr: true }));
          mkdirSync(logDir, { recursive: true });
          writeFileSync(path.join(logDir, `${worker}.log`), logs, { flag: 'a' });
        }
      } catch {
        /* no logs to keep */
      }
      await c.remove({ force: true }).catch(() => undefined);
    }
    // A worker that died without its clean shutdown leaves its registration; it is gone now.
    await opts.redis
      .multi()
      .hdel(opts.keys.pipelineWorkers(), worker)
      .del(opts.keys.heartbeat(worker))
      .exec()
      .catch(() => undefined);
    usedPorts.delete(w.port);
  }

  let stopping: Promise<void> | undefined;
  return {
    start,
    async startMany(plan) {
      const specs = plan.flatMap((p) =>
        Array.from({ length: p.count }, () => ({ stage: p.stage, kind: p.kind ?? ('process' as const) })),
      );
      const settled = await Promise.allSettled(specs.map((s) => start(s)));
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      return settled.map((s) => (s as PromiseFulfilledResult<RunningWorker>).value);
    },
    workers: () => [...running.values()].map(({ child: _child, ...w }) => w),
    healthTargets: () => [...running.values()].map((w) => w.healthTarget).join(','),
    stopWorker,
    stop() {
      stopping ??= Promise.all([...running.keys()].map((w) => stopWorker(w))).then(() => undefined);
      return stopping;
    },
  };
}
