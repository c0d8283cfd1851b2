/**
 * vitest globalSetup of the integration project: one Temporal dev server per run, from the pinned binary, on
 * free ports (a developer's `selfheal up` on 7233 is never touched), with a pool of namespaces so that tests
 * whose workflow ids are fixed by the contract (`heal-<type>-<target>`, the Schedule id) never meet. Search
 * attributes are registered in every namespace. Tests read it all with `inject()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import type { TestProject } from 'vitest/node';
import {
  findTemporalCli,
  INSTALL_HINT,
  PROJECT_ROOT,
  startDevServer,
  stopProcessGroup,
} from '../../starter/temporal-local';
import { nodeCommand } from '../../workers/project';
import { registerSearchAttributes } from '../../workers/temporal-connection';
import { heldPort } from './env';

/**
 * Namespaces available to the tests of one run (each test file or describe takes its own; the suite needs about 30,
 * and running out fails the file that asks, so keep ample room).
 */
const NAMESPACES = Array.from({ length: 64 }, (_, i) => `test-${String(i + 1).padStart(2, '0')}`);

let server: ChildProcess | undefined;

export async function setup(project: TestProject): Promise<void> {
  const cli = findTemporalCli(process.env.TEMPORAL_CLI_PATH);
  if (!cli) throw new Error(`temporal CLI not found: ${INSTALL_HINT}`);
  const port = await heldPort();
  const uiPort = await heldPort();
  const runId = `${process.pid}-${Date.now()}`;
  const runDir = path.join(PROJECT_ROOT, '.data', 'test-runs', runId);
  mkdirSync(runDir, { recursive: true });
  // The workflow bundle, built once for the run while the server starts: every `selfheal up` of the tests loads it
  // (SELFHEAL_WORKFLOW_BUNDLE) instead of running webpack again (about 4 s each on a quiet machine, more under load).
  // up.test.ts, which spawns `up` itself, still bundles in `up`.
  const bundle = path.join(runDir, 'workflow-bundle.js');
  const bundled = bundleWorkflows(bundle);
  bundled.catch(() => undefined); // awaited below; a failed server start must not leave it unhandled
  // In memory: no test needs the shared server's state to outlive it (restarts.test.ts runs a server of its own with
  // a database file), and it is the suite's busiest process: in a CI run it took 26 % of the CPU time, with a file.
  server = await startDevServer({
    cli,
    port,
    uiPort,
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
  project.provide('temporalNamespaces', NAMESPACES);
  project.provide('testRunId', runId);
  await bundled;
  project.provide('workflowBundle', bundle);
}

/** `workers/bundle-workflows.ts <out>` in a process of its own, as `selfheal up` runs it. */
function bundleWorkflows(out: string): Promise<void> {
  const [node, ...args] = nodeCommand(path.join(PROJECT_ROOT, 'workers/bundle-workflows.ts'));
  const child = spawn(node, [...args, out], { stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`bundling the workflows: exit ${code}`))));
  });
}

export async function teardown(): Promise<void> {
  if (server) await stopProcessGroup(server);
}
