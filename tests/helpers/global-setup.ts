/**
 * vitest globalSetup of the integration project: one Temporal dev server per run, from the pinned binary, on
 * free ports (a developer's `selfheal up` on 7233 is never touched), with a pool of namespaces so that tests
 * whose workflow ids are fixed by the contract (`heal-<type>-<target>`, the Schedule id) never meet. Search
 * attributes are registered in every namespace. Tests read it all with `inject()`.
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
  startDevServer,
  stopProcessGroup,
} from '../../starter/temporal-local';
import { registerSearchAttributes } from '../../workers/temporal-connection';

/**
 * Namespaces available to the tests of one run (each test file or describe takes its own; the suite needs about 30,
 * and running out fails the file that asks, so keep ample room).
 */
const NAMESPACES = Array.from({ length: 64 }, (_, i) => `test-${String(i + 1).padStart(2, '0')}`);

let server: ChildProcess | undefined;

export async function setup(project: TestProject): Promise<void> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error(`temporal CLI not found: ${INSTALL_HINT}`);
  const port = await freePort();
  const uiPort = await freePort();
  const runId = `${process.pid}-${Date.now()}`;
  const runDir = path.join(PROJECT_ROOT, '.data', 'test-runs', runId);
  const dbFile = path.join(runDir, 'temporal.db');
  server = await startDevServer({
    cli,
    port,
    uiPort,
    dbFile,
    logFile: path.join(runDir, 'temporal.log'),
    namespaces: NAMESPACES,
  });
  const address = `127.0.0.1:${port}`;
  const connection = await Connection.connect({ address });
  try {
    for (const ns of ['default', ...NAMESPACES]) await registerSearchAttributes(connection, ns);
  } finally {
    await connection.close();
  }
  project.provide('temporalAddress', address);
  project.provide('temporalUiPort', uiPort);
  project.provide('temporalDbFile', dbFile);
  project.provide('temporalNamespaces', NAMESPACES);
  project.provide('testRunId', runId);
}

export async function teardown(): Promise<void> {
  if (server) await stopProcessGroup(server);
}
