/**
 * `selfheal up` from the real CLI, as a user runs it: no Temporal answers at TEMPORAL_ADDRESS, so it starts its
 * own dev server with a database file; it must come up with every component, `selfheal doctor` must be all ok
 * but Ollama, SIGTERM must leave no process or container behind, and Temporal state must survive a restart.
 * Then the compiled `selfheal up` (what `scripts/dev.sh up` runs): its workers are compiled JavaScript with no
 * TypeScript loader, and Ctrl-C still stops everything when its output went to a pipe whose reader died first
 * (`scripts/dev.sh up 2>&1 | tee log`: Ctrl-C kills tee too).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorRow } from '../../starter/doctor';
import { temporalAnswers } from '../../workers/temporal-connection';
import { buildOnce, CLI, COMPILED_CLI, ROOT } from '../helpers/cli';
import { createTestEnv, pipelineBasePort, type TestEnv, waitFor, heldPort } from '../helpers/env';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A process's argv and environment, from /proc. */
function procInfo(pid: number): { argv: string[]; env: Record<string, string> } {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const env: Record<string, string> = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean)) {
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return { argv, env };
}

interface UpState {
  components: { name: string; pid?: number }[];
}

const readState = (dataDir: string) => JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as UpState;

interface Running {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * `selfheal up` from the TypeScript sources, or with `compiled` the built `bin/selfheal.cjs`; `detached` puts it in
 * a process group of its own, as a shell does with a foreground job, for a Ctrl-C to the whole group.
 */
function startUp(
  env: NodeJS.ProcessEnv,
  uiPort: number,
  opts: { compiled?: boolean; detached?: boolean } = {},
): Running {
  let out = '';
  const cli = opts.compiled ? [COMPILED_CLI] : CLI;
  const child = spawn(process.execPath, [...cli, 'up', '--ui-port', String(uiPort)], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached,
  });
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** The pipeline workers `up` started, as Docker containers of this test's prefix. */
async function pipelineContainers(prefix: string) {
  return new Docker().listContainers({ all: true, filters: { label: [`selfheal.prefix=${prefix}`] } });
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
    temporalAddress = `127.0.0.1:${await heldPort()}`;
    uiPort = await heldPort();
    metricsPort = await heldPort();
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...t.env,
      TEMPORAL_ADDRESS: temporalAddress,
      METRICS_PORT: String(metricsPort),
      // Nothing listens there: Ollama must come out degraded, not fatal.
      OLLAMA_HOST: `http://127.0.0.1:${await heldPort()}`,
      SELFHEAL_DATA_DIR: dataDir,
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
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
    // No bundle was handed to it (the other files' `selfheal up` load the one the run built): up bundles.
    expect(first.output()).toMatch(/Workflows: bundled in [\d.]+ s/);
    const state = readState(dataDir);
    const names = state.components.map((c) => c.name);
    expect(names).toEqual(
      expect.arrayContaining(['temporal', 'selfheal-monitor', 'selfheal-healing', 'selfheal-actions', 'selfheal-http']),
    );
    expect(names.some((n) => n.startsWith('pipeline-'))).toBe(true);
    // The banner counts the pipeline workers that run (not the runner that manages them).
    const running = (await pipelineContainers(t.prefix)).filter((c) => c.State === 'running');
    expect(running.length).toBeGreaterThan(0);
    expect(first.output()).toContain(`Pipeline: ${running.length} workers (`);
    // Escalations link to the Web UI of the dev server up started (TEMPORAL_UI_URL was not set).
    const actions = state.components.find((c) => c.name === 'selfheal-actions')!;
    expect(procInfo(actions.pid!).env.TEMPORAL_UI_URL).toBe(`http://127.0.0.1:${uiPort}`);

    // doctor, through the real CLI, against what up started
    const doctor = spawnSync(process.execPath, [...CLI, 'doctor', '--json'], {
      env,
      encoding: 'utf8',
      timeout: 60_000,
    });
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
      Runbooks: 'ok',
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
    const leftovers = await pipelineContainers(t.prefix);
    expect(leftovers.map((c) => c.Names)).toEqual([]);

    // Second start: same data dir; the workflow is still there. A TEMPORAL_UI_URL of the operator's is kept.
    const operatorUi = 'https://temporal-ui.example.org';
    const second = startUp({ ...env, TEMPORAL_UI_URL: operatorUi }, uiPort);
    await waitUp(second);
    expect(second.output()).toMatch(/search attributes already registered/);
    const actions2 = readState(dataDir).components.find((c) => c.name === 'selfheal-actions')!;
    expect(procInfo(actions2.pid!).env.TEMPORAL_UI_URL).toBe(operatorUi);
    const connection2 = await Connection.connect({ address: temporalAddress });
    const described = await new Client({ connection: connection2 }).workflow.getHandle(workflowId).describe();
    expect(described.status.name).toBe('RUNNING');
    await connection2.close();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });
  it('compiled: the workers are compiled JavaScript, and Ctrl-C through a dead pipe stops everything', async () => {
    buildOnce();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-up-pipe-'));
    const address = `127.0.0.1:${await heldPort()}`;
    const env2: NodeJS.ProcessEnv = {
      ...env,
      TEMPORAL_ADDRESS: address,
      METRICS_PORT: String(await heldPort()),
      SELFHEAL_DATA_DIR: dir,
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
    };
    const run = startUp(env2, await heldPort(), { compiled: true, detached: true });
    let state: UpState | undefined;
    try {
      await waitUp(run);
      state = readState(dir);
      const pidOf = (name: string) => state!.components.find((c) => c.name === name)?.pid;
      const scripts = {
        'selfheal-monitor': 'monitor',
        'selfheal-healing': 'healing',
        'selfheal-actions': 'actions',
        'selfheal-http': 'metrics-server',
      };
      for (const [name, script] of Object.entries(scripts)) {
        const { argv, env: procEnv } = procInfo(pidOf(name)!);
        // node and the compiled script, nothing else: no --require of tsx's hook.
        expect(argv.slice(1), name).toEqual([path.join(ROOT, 'dist', 'workers', `${script}.js`)]);
        expect(procEnv.NODE_OPTIONS ?? '', name).not.toMatch(/tsx/);
        // The memory settings measured with 500 open healings (starter/up.ts, WORKER_NODE_OPTIONS).
        expect(procEnv.NODE_OPTIONS, name).toMatch(/^--max-old-space-size=96 --max-semi-space-size=4( |$)/);
        expect(procEnv.MALLOC_ARENA_MAX, name).toBe('2');
      }
      const temporalPid = pidOf('temporal')!;
      const pids = state.components.map((c) => c.pid).filter((p): p is number => typeof p === 'number');
      expect((await pipelineContainers(t.prefix)).length).toBeGreaterThan(0);

      // The pipe's reader dies first (Ctrl-C kills tee too), then Ctrl-C reaches the whole foreground job.
      await Promise.all(
        [run.child.stdout!, run.child.stderr!].map(
          (s) => new Promise<void>((resolve) => s.once('close', () => resolve()).destroy()),
        ),
      );
      process.kill(-run.child.pid!, 'SIGINT');
      expect(await run.exited).toBe(0);
      await waitFor(() => pids.every((p) => !isAlive(p)), { timeoutMs: 30_000, what: 'every component process gone' });
      expect(isAlive(-temporalPid), 'the dev server process group').toBe(false);
      expect(await temporalAnswers(address)).toBe(false);
      expect((await pipelineContainers(t.prefix)).map((c) => c.Names)).toEqual([]);
    } finally {
      // When the test fails, leave nothing behind for the next ones.
      if (run.child.exitCode === null) process.kill(-run.child.pid!, 'SIGKILL');
      for (const c of state?.components ?? []) {
        if (c.pid === undefined) continue;
        for (const target of [-c.pid, c.pid]) {
          try {
            process.kill(target, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
      for (const c of await pipelineContainers(t.prefix)) await new Docker().getContainer(c.Id).remove({ force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('a workflow bundle named in SELFHEAL_WORKFLOW_BUNDLE that is not there: up stops before starting anything', () => {
    const missing = path.join(dataDir, 'no-such-bundle.js');
    const r = spawnSync(process.execPath, [...CLI, 'up', '--ui-port', String(uiPort)], {
      env: { ...env, SELFHEAL_WORKFLOW_BUNDLE: missing },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stdout + r.stderr).not.toBe(0);
    expect(r.stderr).toContain(`SELFHEAL_WORKFLOW_BUNDLE: no workflow bundle at ${missing}`);
    expect(r.stdout).not.toMatch(/Temporal: starting|Pipeline:|selfheal is up/);
  });

  it('Ctrl-C while it is starting stops what it started so far', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-up-early-'));
    const address = `127.0.0.1:${await heldPort()}`;
    const env3: NodeJS.ProcessEnv = {
      ...env,
      TEMPORAL_ADDRESS: address,
      METRICS_PORT: String(await heldPort()),
      SELFHEAL_DATA_DIR: dir,
      PIPELINE_BASE_PORT: String(pipelineBasePort()),
    };
    const run = startUp(env3, await heldPort(), { detached: true });
    try {
      // The dev server and the pipeline are up; the workflow bundle and the workers are not yet.
      await waitFor(
        () => {
          if (run.child.exitCode !== null) throw new Error(`selfheal up exited early:\n${run.output()}`);
          return /Pipeline: \d+ workers/.test(run.output());
        },
        { timeoutMs: 120_000, intervalMs: 100, what: 'the pipeline started' },
      );
      expect(await temporalAnswers(address)).toBe(true);
      process.kill(-run.child.pid!, 'SIGINT');
      expect(await run.exited).toBe(130);
      expect(run.output()).toMatch(/interrupted while starting: stopped what was started/);
      expect(await temporalAnswers(address)).toBe(false);
      expect((await pipelineContainers(t.prefix)).map((c) => c.Names)).toEqual([]);
    } finally {
      if (run.child.exitCode === null) process.kill(-run.child.pid!, 'SIGKILL');
      for (const c of await pipelineContainers(t.prefix)) await new Docker().getContainer(c.Id).remove({ force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
