/**
 * A Temporal dev server of one test's own (not the run's shared one), with its state in a SQLite file, which the
 * test can kill and start again on the same port with the same file: a real server restart as `selfheal up`'s
 * dev server would have one (`temporal server start-dev --db-filename ...`), without touching other tests.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { findTemporalCli, INSTALL_HINT, startDevServer } from '../../starter/temporal-local';
import { heldPort } from './env';
import { registerSearchAttributes } from '../../workers/temporal-connection';

export interface OwnTemporal {
  address: string;
  namespace: string;
  dbFile: string;
  logFile: string;
  /** Pid of the running server process, or undefined while it is down. */
  pid(): number | undefined;
  /** Stops the server's process group with the signal and waits until the process is gone. */
  stop(signal: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Starts it again on the same port with the same database file; resolves once it answers. */
  start(): Promise<void>;
  /** Stops it for good and removes its files. */
  destroy(): Promise<void>;
}

export async function startOwnTemporal(namespace: string): Promise<OwnTemporal> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error(`temporal CLI not found: ${INSTALL_HINT}`);
  const port = await heldPort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-temporal-'));
  const dbFile = path.join(dir, 'temporal.db');
  const logFile = path.join(dir, 'temporal.log');
  const address = `127.0.0.1:${port}`;
  let child: ChildProcess | undefined;

  const own: OwnTemporal = {
    address,
    namespace,
    dbFile,
    logFile,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    async start() {
      child = await startDevServer({ cli, port, dbFile, logFile, namespaces: [namespace] }, 120_000);
    },
    async stop(signal) {
      const c = child;
      if (!c?.pid || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      // The dev server runs in its own process group (startDevServer): the signal reaches all of it.
      process.kill(-c.pid, signal);
      await exited;
      child = undefined;
    },
    async destroy() {
      await own.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await own.start();
  const connection = await Connection.connect({ address });
  try {
    await registerSearchAttributes(connection, namespace);
  } finally {
    await connection.close();
  }
  return own;
}
