/**
 * Running selfheal itself in integration tests, as a user does: `selfheal up --no-pipeline` and the other CLI
 * commands as child processes, against the run's Temporal dev server and a test environment.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { CLI } from './cli';
import { waitFor, type TestEnv, heldPort } from './env';

export { CLI, ROOT } from './cli';

/** Test-scaled configuration: 1 s cycles and thresholds of a few seconds. */
export const FAST_CONFIG: Record<string, string> = {
  MONITOR_INTERVAL: '1',
  QUEUE_STALL_THRESHOLD: '5',
  ERROR_RATE_THRESHOLD: '0.2',
  ERROR_RATE_MIN_SAMPLES: '10',
  ERROR_RATE_WINDOW: '5',
  SLOWDOWN_FACTOR: '3',
  SLOWDOWN_MIN_SAMPLES: '5',
  STUCK_DOCUMENT_THRESHOLD: '5',
  HEALTH_FAILURES_BEFORE_UNHEALTHY: '2',
  ANOMALY_FIRE_CYCLES: '2',
  ANOMALY_CLEAR_CYCLES: '3',
  METRICS_RETENTION: '3600',
  LOG_LEVEL: 'warn',
};

export interface RunningSelfheal {
  env: NodeJS.ProcessEnv;
  metricsUrl: string;
  output(): string;
  /** Runs a CLI command with the same environment. */
  cli(args: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string };
  stop(): Promise<void>;
}

export async function startSelfheal(
  t: TestEnv,
  namespace: string,
  extra: Record<string, string> = {},
): Promise<RunningSelfheal> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-test-'));
  const metricsPort = await heldPort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...t.env,
    ...FAST_CONFIG,
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    TEMPORAL_NAMESPACE: namespace,
    METRICS_PORT: String(metricsPort),
    SELFHEAL_DATA_DIR: dataDir,
    // Nothing listens there unless a test says otherwise (a fake Ollama's URL in `extra`): at the default address, up
    // would start the real local model server (tests/integration/local-model.test.ts covers that).
    OLLAMA_HOST: `http://127.0.0.1:${await heldPort()}`,
    // Built once per run by the global setup; `extra` may set it to '' to have `up` bundle the workflows itself.
    SELFHEAL_WORKFLOW_BUNDLE: inject('workflowBundle'),
    ...extra,
  };
  let out = '';
  const child: ChildProcess = spawn(process.execPath, [...CLI, 'up', '--no-pipeline'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`selfheal up exited:\n${out}`);
      return /selfheal is up in/.test(out);
    },
    { timeoutMs: 120_000, intervalMs: 200, what: 'selfheal up' },
  );
  return {
    env,
    metricsUrl: `http://127.0.0.1:${metricsPort}`,
    output: () => out,
    cli(args, timeoutMs = 60_000) {
      const r = spawnSync(process.execPath, [...CLI, ...args], { env, encoding: 'utf8', timeout: timeoutMs });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
