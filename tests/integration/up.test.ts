/**
 * `selfheal up` from the real CLI, as a user runs it: no Temporal answers at TEMPORAL_ADDRESS, so it starts its
 * own dev server with a database file; it must come up with every component, `selfheal doctor` must be all ok
 * but Ollama, SIGTERM must leave no process or container behind, and Temporal state must survive a restart.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorRow } from '../../starter/doctor';
import { freePort } from '../../starter/temporal-local';
import { createTestEnv, type TestEnv, waitFor } from '../helpers/env';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.join(ROOT, 'bin/selfheal.cjs');

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Running {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function startUp(env: NodeJS.ProcessEnv, uiPort: number): Running {
  let out = '';
  const child = spawn(process.execPath, [CLI, 'up', '--ui-port', String(uiPort)], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitUp(run: Running): Promise<number> {
  const line = await waitFor(
    () => {
      if (run.child.exitCode !== null) throw new Error(`selfheal up exited early:\n${run.output()}`);
      return /selfheal is up in ([\d.]+) s/.exec(run.output());
    },
    { timeoutMs: 120_000, intervalMs: 200, what: 'selfheal up' },
  );
  return Number(line[1]);
}

describe('selfheal up', () => {
  let t: TestEnv;
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  let uiPort: number;
  let temporalAddress: string;
  let metricsPort: number;

  beforeAll(async () => {
    t = await createTestEnv();
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-up-'));
    temporalAddress = `127.0.0.1:${await freePort()}`;
    uiPort = await freePort();
    metricsPort = await freePort();
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      TEMPORAL_ADDRESS: temporalAddress,
      METRICS_PORT: String(metricsPort),
      // Nothing listens there: Ollama must come out degraded, not fatal.
      OLLAMA_HOST: `http://127.0.0.1:${await freePort()}`,
      SELFHEAL_DATA_DIR: dataDir,
      PIPELINE_BASE_PORT: String(await freePort()),
      PIPELINE_CONTAINER_PREFIX: `pipeline-${t.id}`,
    };
  });

  afterAll(async () => {
    await t.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts everything, doctor is ok but Ollama, SIGTERM stops everything, and Temporal state survives', async () => {
    const first = startUp(env, uiPort);
    const seconds = await waitUp(first);
    console.log(`selfheal up: ${seconds} s to up (Temporal dev server started)`);
    const state = JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as {
      components: { name: string; pid?: number }[];
    };
    const names = state.components.map((c) => c.name);
    expect(names).toEqual(
      expect.arrayContaining(['temporal', 'selfheal-monitor', 'selfheal-healing', 'selfheal-actions', 'selfheal-http']),
    );
    expect(names.some((n) => n.startsWith('pipeline-'))).toBe(true);

    // doctor, through the real CLI, against what up started
    const doctor = spawnSync(process.execPath, [CLI, 'doctor', '--json'], { env, encoding: 'utf8', timeout: 60_000 });
    expect(doctor.status, doctor.stderr).toBe(0);
    const rows = JSON.parse(doctor.stdout) as DoctorRow[];
    const byName = Object.fromEntries(rows.map((r) => [r.dependency, r.status]));
    expect(byName).toEqual({
      Temporal: 'ok',
      Postgres: 'ok',
      Redis: 'ok',
      Docker: 'ok',
      Ollama: 'degraded',
      'temporal CLI': 'ok',
    });

    const health = await fetch(`http://127.0.0.1:${metricsPort}/health`);
    expect(health.status).toBe(200);

    // A workflow that stays open (nobody polls its task queue), to check the database file keeps it.
    const connection = await Connection.connect({ address: temporalAddress });
    const client = new Client({ connection });
    const workflowId = `persist-${t.id}`;
    await client.workflow.start('noSuchWorkflow', { taskQueue: `nobody-${t.id}`, workflowId });
    await connection.close();

    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    const pids = state.components.map((c) => c.pid).filter((p): p is number => typeof p === 'number');
    await waitFor(() => pids.every((p) => !isAlive(p)), { timeoutMs: 20_000, what: 'every component process gone' });
    const leftovers = await new Docker().listContainers({
      all: true,
      filters: { label: [`selfheal.prefix=${t.prefix}`] },
    });
    expect(leftovers.map((c) => c.Names)).toEqual([]);

    // Second start: same data dir; the workflow is still there.
    const second = startUp(env, uiPort);
    await waitUp(second);
    expect(second.output()).toMatch(/search attributes already registered/);
    const connection2 = await Connection.connect({ address: temporalAddress });
    const described = await new Client({ connection: connection2 }).workflow.getHandle(workflowId).describe();
    expect(described.status.name).toBe('RUNNING');
    await connection2.close();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });
});
