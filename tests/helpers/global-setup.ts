/**
 * vitest globalSetup of the integration project: one Temporal dev server per run, from the pinned binary,
 * on free ports (so a developer's `selfheal up` on 7233 is never touched), with the search attributes
 * registered. Tests read its address with `inject('temporalAddress')`.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import type { TestProject } from 'vitest/node';
import {
  findTemporalCli,
  freePort,
  INSTALL_HINT,
  PROJECT_ROOT,
  registerSearchAttributes,
  startDevServer,
  stopProcessGroup,
} from '../../starter/temporal-local';

let server: ChildProcess | undefined;

export async function setup(project: TestProject): Promise<void> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error(`temporal CLI not found: ${INSTALL_HINT}`);
  const port = await freePort();
  const uiPort = await freePort();
  const runDir = path.join(PROJECT_ROOT, '.data', 'test-runs', String(process.pid));
  const dbFile = path.join(runDir, 'temporal.db');
  server = await startDevServer({ cli, port, uiPort, dbFile, logFile: path.join(runDir, 'temporal.log') });
  const address = `127.0.0.1:${port}`;
  const connection = await Connection.connect({ address });
  try {
    await registerSearchAttributes(connection, 'default');
  } finally {
    await connection.close();
  }
  project.provide('temporalAddress', address);
  project.provide('temporalUiPort', uiPort);
  project.provide('temporalDbFile', dbFile);
}

export async function teardown(): Promise<void> {
  if (server) await stopProcessGroup(server);
}
