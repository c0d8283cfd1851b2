import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { migrate } from '../db/migrate';
import { createPool } from '../db/pool';
import { findTemporalCli, INSTALL_HINT, startDevServer, stopProcessGroup } from './temporal-local';
import { registerSearchAttributes, temporalAnswers, waitForPollers } from '../workers/temporal-connection';
import { TaskQueue } from '../workflows/definitions';
import { nodeCommand, PROJECT_ROOT, projectScript } from '../workers/project';
import { startModel } from './up-model';
import { errorMessage } from '../core/errors';

/** Where `selfheal up` keeps its state: the Temporal database, logs, the run file. */
export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.SELFHEAL_DATA_DIR ?? path.join(PROJECT_ROOT, '.data'));
}

export class UpError extends Error {
  readonly type: 'up_failed' | 'interrupted' = 'up_failed';
}

/** Thrown by `up` when its signal aborts the start: everything started so far is stopped first. */
export class UpInterrupted extends UpError {
  override readonly type = 'interrupted';
  constructor() {
    super('interrupted while starting; everything started so far is stopped');
  }
}

export interface Component {
  name: string;
  /** Stops it; resolves when it is gone. */
  stop(): Promise<void>;
  pid?: number;
}

export interface UpOptions {
  config: Config;
  env: NodeJS.ProcessEnv;
  /** Start the reference pipeline too (default true). */
  pipeline: boolean;
  /** Web UI port of a dev server that `up` starts. */
  uiPort: number;
  /** Progress lines for the terminal. */
  say: (line: string) => void;
  /**
   * Starts the reference pipeline; returns its components (the workers and what manages them), the number of
   * workers, and the HEALTH_TARGETS value describing them.
   */
  startPipeline?: (ctx: { config: Config; env: NodeJS.ProcessEnv; logDir: string }) => Promise<{
    components: Component[];
    workers: number;
    healthTargets: string;
  }>;
  /** Aborting it (SIGINT while starting) stops what is started so far and makes `up` throw UpInterrupted. */
  signal?: AbortSignal;
}

export interface UpHandle {
  components: Component[];
  /** Seconds from start to everything up. */
  startupSeconds: number;
  temporalStarted: boolean;
  /** Whether up started the local model server (`ollama serve`) itself. */
  ollamaStarted: boolean;
  /** The OLLAMA_MODEL the workers use. */
  model: string;
  webUi?: string;
  stop(): Promise<void>;
}

/**
 * Node's memory settings for the worker processes `up` starts: V8's old space at most 96 MB, its young generation in
 * 4 MB semi-spaces, two glibc malloc arenas. Measured with 500 open healings (`npm run bench -- system`): without
 * them the healing worker peaked at 406-566 MB and the monitor at 228-266 (V8 lets the heap grow far past what is
 * live while allocation is fast, and each thread gets malloc arenas of its own); with them every process stayed
 * under 250 MB and the burst took as long. 128 MB of old space left the healing worker at 257 MB. The Docker image
 * sets the same. The operator's own NODE_OPTIONS come after these, so theirs win (V8 takes a flag's last value), and
 * MALLOC_ARENA_MAX, when set, is kept.
 */
export const WORKER_NODE_OPTIONS = '--max-old-space-size=96 --max-semi-space-size=4';

/** `env` with WORKER_NODE_OPTIONS before the operator's NODE_OPTIONS, and MALLOC_ARENA_MAX 2 unless set. */
export function workerEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return {
    ...env,
    NODE_OPTIONS: [WORKER_NODE_OPTIONS, env.NODE_OPTIONS?.trim()].filter(Boolean).join(' '),
    MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX || '2',
  };
}

/**
 * Spawns a selfheal process with an IPC channel: when `up` goes away, even by SIGKILL, the channel closes
 * and the child shuts down, so nothing outlives it. `script` is named as in the sources without extension
 * (`workers/monitor`): the compiled `.js` when `up` runs compiled, the `.ts` through tsx's hook from sources.
 */
export function spawnComponent(
  name: string,
  script: string,
  env: NodeJS.ProcessEnv,
  logDir: string,
  args: string[] = [],
): Component & { child: ChildProcess } {
  mkdirSync(logDir, { recursive: true });
  const out = openSync(path.join(logDir, `${name}.log`), 'a');
  const [exe, ...argv] = nodeCommand(projectScript(script));
  const child = spawn(exe, [...argv, ...args], { env, stdio: ['ignore', out, out, 'ipc'] });
  return { name, child, pid: child.pid, stop: () => stopChild(child) };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child exited (at once if it already had). */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Builds the workflow bundle into the data directory; returns its path. */
async function bundleWorkflows(root: string, env: NodeJS.ProcessEnv, logDir: string): Promise<string> {
  const out = path.join(root, 'workflow-bundle.js');
  const c = spawnComponent('selfheal-bundle', 'workers/bundle-workflows', { ...env }, logDir, [out]);
  const code = await new Promise<number | null>((resolve) => c.child.once('exit', resolve));
  if (code !== 0) throw new UpError(`bundling the workflows failed (exit ${code}); see ${logDir}/selfheal-bundle.log`);
  return out;
}

/** Waits until the child prints nothing fatal for a moment, or fails fast if it exits. */
async function waitAlive(c: Component & { child: ChildProcess }, ms = 1_500): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    c.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new UpError(`${c.name} exited with code ${code} at start; see its log`));
    });
  });
}

async function waitHttp(url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      if (res.status < 500) return true;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

/**
 * Starts the whole local system: Temporal (an existing server, or a dev server with a persistent database),
 * the schema, the three selfheal workers, the HTTP server, and the reference pipeline. Everything started is
 * stopped by `stop()`, in reverse order.
 */
export async function up(opts: UpOptions): Promise<UpHandle> {
  const t0 = Date.now();
  const { config, say } = opts;
  const root = dataDir(opts.env);
  const logDir = path.join(root, 'logs');
  mkdirSync(logDir, { recursive: true });
  const components: Component[] = [];
  const checkInterrupted = () => {
    if (opts.signal?.aborted) throw new UpInterrupted();
  };
  // For the one long wait (the workers' first polls); the steps before it end on their own and are checked after.
  const interrupted = new Promise<never>((_, reject) => {
    if (opts.signal?.aborted) reject(new UpInterrupted());
    opts.signal?.addEventListener('abort', () => reject(new UpInterrupted()), { once: true });
  });
  interrupted.catch(() => undefined);
  const stopAll = async () => {
    for (const c of [...components].reverse()) {
      await c.stop().catch(() => undefined);
    }
    rmSync(path.join(root, 'up.json'), { force: true });
  };

  // A workflow bundle built beforehand is checked before anything starts.
  const prebuilt = opts.env.SELFHEAL_WORKFLOW_BUNDLE ? path.resolve(opts.env.SELFHEAL_WORKFLOW_BUNDLE) : undefined;
  if (prebuilt && !existsSync(prebuilt))
    throw new UpError(`SELFHEAL_WORKFLOW_BUNDLE: no workflow bundle at ${prebuilt} (unset it to have up bundle)`);

  try {
    // 1. Temporal
    let temporalStarted = false;
    let webUi: string | undefined;
    if (await temporalAnswers(config.TEMPORAL_ADDRESS)) {
      say(`Temporal: using the server at ${config.TEMPORAL_ADDRESS}`);
    } else {
      const cli = findTemporalCli(config.TEMPORAL_CLI_PATH);
      if (!cli)
        throw new UpError(`no Temporal server at ${config.TEMPORAL_ADDRESS} and no temporal CLI: ${INSTALL_HINT}`);
      const [host, portText] = config.TEMPORAL_ADDRESS.split(':');
      if (!['localhost', '127.0.0.1'].includes(host ?? '')) {
        throw new UpError(
          `no Temporal server answers at ${config.TEMPORAL_ADDRESS}, and up only starts one on localhost`,
        );
      }
      const dbFile = path.join(root, 'temporal.db');
      say(
        `Temporal: starting a dev server on ${config.TEMPORAL_ADDRESS} (state in ${path.relative(process.cwd(), dbFile) || dbFile})`,
      );
      const server = await startDevServer({
        cli,
        port: Number(portText),
        uiPort: opts.uiPort,
        dbFile,
        logFile: path.join(logDir, 'temporal.log'),
        namespaces: [config.TEMPORAL_NAMESPACE],
      });
      components.push({ name: 'temporal', pid: server.pid, stop: () => stopProcessGroup(server) });
      temporalStarted = true;
      webUi = `http://127.0.0.1:${opts.uiPort}`;
    }
    checkInterrupted();
    const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
    try {
      const added = await registerSearchAttributes(connection, config.TEMPORAL_NAMESPACE);
      say(`Temporal: search attributes ${added.length ? `registered (${added.join(', ')})` : 'already registered'}`);
    } finally {
      await connection.close();
    }

    // 1b. The model server (up-model.ts): started here, or an operator's, or none (then the runbook plans).
    const env: NodeJS.ProcessEnv = { ...opts.env };
    const { ollamaStarted, model } = await startModel({ config, callerEnv: opts.env, env, logDir, components, say });
    checkInterrupted();

    // 2. selfheal's own schema (the reference pipeline creates its tables itself, in step 3)
    const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-up' });
    const where = config.SELFHEAL_DATABASE_URL ? 'SELFHEAL_DATABASE_URL' : 'DATABASE_URL';
    try {
      await migrate(pool);
    } catch (err) {
      throw new UpError(`Postgres at ${where}: ${errorMessage(err)} (start it with scripts/dev.sh services)`);
    } finally {
      await pool.end();
    }
    say(`Postgres: selfheal's schema applied (${where})`);
    checkInterrupted();

    // 3. Reference pipeline (first, so the monitor sees its health targets)
    // Escalations link to the run in the Web UI of the dev server started here, unless the operator named one.
    if (webUi && !env.TEMPORAL_UI_URL) env.TEMPORAL_UI_URL = webUi;
    if (opts.pipeline && opts.startPipeline) {
      const pipeline = await opts.startPipeline({ config, env, logDir });
      components.push(...pipeline.components);
      if (!env.HEALTH_TARGETS) env.HEALTH_TARGETS = pipeline.healthTargets;
      say(`Pipeline: ${pipeline.workers} workers (${pipeline.healthTargets})`);
      checkInterrupted();
    }

    // 4. The workflow bundle, built once in a process of its own (the workers then load it instead of each running
    // webpack, which cost each its peak memory for good)
    // (or one the caller built beforehand and named in SELFHEAL_WORKFLOW_BUNDLE: the integration tests bundle once per
    // run instead of once per `selfheal up`)
    if (prebuilt) {
      env.SELFHEAL_WORKFLOW_BUNDLE = prebuilt;
      say(`Workflows: the bundle built beforehand (${prebuilt})`);
    } else {
      const bundleStarted = Date.now();
      env.SELFHEAL_WORKFLOW_BUNDLE = await bundleWorkflows(root, env, logDir);
      say(`Workflows: bundled in ${((Date.now() - bundleStarted) / 1000).toFixed(1)} s`);
    }
    checkInterrupted();

    // 5. selfheal workers and the HTTP server
    const workers = workerEnv(env);
    const started = [
      spawnComponent('selfheal-monitor', 'workers/monitor', workers, logDir),
      spawnComponent('selfheal-healing', 'workers/healing', workers, logDir),
      spawnComponent('selfheal-actions', 'workers/actions', workers, logDir),
      spawnComponent('selfheal-http', 'workers/metrics-server', workers, logDir),
    ];
    components.push(...started);
    await Promise.all(started.map((c) => waitAlive(c)));
    // Up means serving: every task queue has a poller (workflow bundles built, workers connected).
    const pollConnection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
    try {
      const exited = started.map(
        (c) =>
          new Promise<never>((_, reject) =>
            c.child.once('exit', (code) =>
              reject(new UpError(`${c.name} exited with code ${code}; see its log in ${logDir}`)),
            ),
          ),
      );
      // Handled here too: once the race is over, a later exit (at stop) must not be an unhandled rejection.
      for (const e of exited) e.catch(() => undefined);
      await Promise.race([
        waitForPollers(pollConnection, config.TEMPORAL_NAMESPACE, [
          { name: TaskQueue.monitor, type: 'workflow' },
          { name: TaskQueue.monitor, type: 'activity' },
          { name: TaskQueue.healing, type: 'workflow' },
          { name: TaskQueue.healing, type: 'activity' },
          { name: TaskQueue.actions, type: 'activity' },
        ]),
        ...exited,
        interrupted,
      ]);
    } finally {
      await pollConnection.close();
    }
    const healthUrl = `http://${config.METRICS_HOST}:${config.METRICS_PORT}/health`;
    if (!(await waitHttp(healthUrl, 30_000))) throw new UpError(`the HTTP server did not answer at ${healthUrl}`);
    checkInterrupted();
    say(`Workers: monitor, healing, actions polling; HTTP ${healthUrl.replace('/health', '')}`);

    const startupSeconds = (Date.now() - t0) / 1000;
    writeFileSync(
      path.join(root, 'up.json'),
      JSON.stringify(
        {
          pid: process.pid,
          startedAt: t0,
          startupSeconds,
          components: components.map((c) => ({ name: c.name, pid: c.pid })),
        },
        null,
        2,
      ),
    );
    return { components, startupSeconds, temporalStarted, ollamaStarted, model, webUi, stop: stopAll };
  } catch (err) {
    await stopAll();
    // A Ctrl-C reaches the whole foreground job: a child that it ended first is not the cause.
    if (opts.signal?.aborted) throw new UpInterrupted();
    throw err;
  }
}

/** What stops `selfheal up`: Ctrl-C, `kill`, and the terminal going away. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * `selfheal up`'s action (cli.ts defines the command): starts everything, then stops it all on the first SIGINT,
 * SIGTERM or SIGHUP, also one that comes while starting. Later signals are ignored rather than left to their
 * default (exit at once): a second Ctrl-C, or the same one forwarded by npx, must not cut the clean-up short (each
 * stop has its own bound, SIGKILL after a grace period). Output written to a closed pipe is dropped (cli.ts), so
 * `selfheal up | tee log` cleans up too when Ctrl-C has killed tee.
 */
export async function upCommand(
  config: Config,
  opts: { pipeline: boolean; uiPort: number; startPipeline: UpOptions['startPipeline'] },
): Promise<void> {
  const stopping = new AbortController();
  const onSignal = () => stopping.abort();
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  const say = (line: string) => process.stdout.write(`${line}\n`);
  try {
    const handle = await up({
      config,
      env: process.env,
      pipeline: opts.pipeline,
      uiPort: opts.uiPort,
      say,
      startPipeline: opts.startPipeline,
      signal: stopping.signal,
    });
    say(
      `selfheal is up in ${handle.startupSeconds.toFixed(1)} s.${handle.webUi ? ` Temporal Web UI: ${handle.webUi}.` : ''} Ctrl-C stops everything.`,
    );
    if (!stopping.signal.aborted) {
      await new Promise<void>((resolve) => stopping.signal.addEventListener('abort', () => resolve(), { once: true }));
    }
    say('stopping...');
    await handle.stop();
    say('stopped.');
  } catch (err) {
    if (!(err instanceof UpInterrupted)) throw err;
    say('interrupted while starting: stopped what was started.');
    process.exitCode = 130;
  } finally {
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
  }
}
