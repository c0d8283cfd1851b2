/**
 * The local model server (core/local-model.ts), with the real Ollama and model that `scripts/dev.sh llm` installs (CI runs it
 * after setup): `startOllamaServer`, the function `selfheal up` starts it with, on a free loopback port — the model is
 * listed, and stopping it leaves no process; then, when nothing holds Ollama's default port 11434, `selfheal up`
 * itself with OLLAMA_HOST at the default address: it starts the server, its workers get OLLAMA_MODEL=smollm2:135m,
 * doctor and /health see the model, and SIGTERM leaves no server behind. Which address up starts a server for is
 * covered purely by tests/unit/local-model.test.ts (decideLocalOllama).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_MODEL, modelListed } from '../../core/local-model';
import type { DoctorRow } from '../../starter/doctor';
import { findOllamaBin, ollamaModelsDir, startOllamaServer } from '../../starter/ollama-local';
import { ollamaTags } from '../../workers/ollama-probe';
import { stopProcessGroup } from '../../starter/temporal-local';
import { isPortOpen } from '../../workers/temporal-connection';
import { CLI } from '../helpers/cli';
import { createTestEnv, type TestEnv, waitFor, heldPort } from '../helpers/env';

const INSTALL = 'the local model is not installed: run scripts/dev.sh llm';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function procEnv(pid: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean)) {
    const i = kv.indexOf('=');
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

describe('local model server', () => {
  const binary = findOllamaBin();
  let logDir: string;

  beforeAll(() => {
    logDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-ollama-'));
  });
  afterAll(() => rmSync(logDir, { recursive: true, force: true }));

  it('startOllamaServer on a free port: answers, lists smollm2:135m, and is gone after the stop', async () => {
    expect(binary, INSTALL).toBeDefined();
    const listen = `127.0.0.1:${await heldPort()}`;
    const t0 = Date.now();
    const server = await startOllamaServer({
      binary: binary!,
      listen,
      modelsDir: ollamaModelsDir(),
      logFile: path.join(logDir, 'ollama.log'),
    });
    try {
      console.log(`ollama serve answered in ${Date.now() - t0} ms`);
      const tags = await ollamaTags(`http://${listen}`);
      expect(tags.answers).toBe(true);
      expect(tags.answers && modelListed(tags.models, LOCAL_MODEL), JSON.stringify(tags)).toBe(true);
    } finally {
      await stopProcessGroup(server);
    }
    expect(isAlive(server.pid!)).toBe(false);
    expect(await isPortOpen(listen, 500)).toBe(false);
  });

  describe('selfheal up at the default address', () => {
    let t: TestEnv;
    let dataDir: string;
    let busy = false;

    beforeAll(async () => {
      busy = await isPortOpen('127.0.0.1:11434', 500);
      t = await createTestEnv();
      dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-up-llm-'));
    });
    afterAll(async () => {
      await t.cleanup();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('starts Ollama, gives the workers the small model, doctor and /health see it, SIGTERM stops it', async (ctx) => {
      if (busy) {
        console.log('127.0.0.1:11434 is taken: the start through up is covered by the test above only');
        ctx.skip();
      }
      expect(binary, INSTALL).toBeDefined();
      const metricsPort = await heldPort();
      const env: NodeJS.ProcessEnv = {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        ...(process.env.SELFHEAL_CACHE_DIR ? { SELFHEAL_CACHE_DIR: process.env.SELFHEAL_CACHE_DIR } : {}),
        ...t.env,
        TEMPORAL_ADDRESS: `127.0.0.1:${await heldPort()}`,
        METRICS_PORT: String(metricsPort),
        OLLAMA_HOST: 'http://127.0.0.1:11434',
        SELFHEAL_DATA_DIR: dataDir,
        LOG_LEVEL: 'warn',
      };
      let out = '';
      const child = spawn(process.execPath, [...CLI, 'up', '--no-pipeline', '--ui-port', String(await heldPort())], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      let ollamaPid: number | undefined;
      try {
        await waitFor(
          () => {
            if (child.exitCode !== null) throw new Error(`selfheal up exited early:\n${out}`);
            return /selfheal is up in/.test(out);
          },
          { timeoutMs: 120_000, intervalMs: 200, what: 'selfheal up' },
        );
        expect(out).toContain(`Model: local Ollama server started on http://127.0.0.1:11434`);
        expect(out).toContain(`model ${LOCAL_MODEL} (listed)`);
        const state = JSON.parse(readFileSync(path.join(dataDir, 'up.json'), 'utf8')) as {
          components: { name: string; pid?: number }[];
        };
        ollamaPid = state.components.find((c) => c.name === 'ollama')?.pid;
        expect(ollamaPid).toBeDefined();
        expect(existsSync(path.join(dataDir, 'logs', 'ollama.log'))).toBe(true);
        const healing = state.components.find((c) => c.name === 'selfheal-healing')!;
        expect(procEnv(healing.pid!).OLLAMA_MODEL).toBe(LOCAL_MODEL);

        const tags = await ollamaTags('http://127.0.0.1:11434');
        expect(tags.answers && modelListed(tags.models, LOCAL_MODEL)).toBe(true);

        // doctor, as the operator runs it with the same OLLAMA_MODEL as the workers
        const doctor = spawnSync(process.execPath, [...CLI, 'doctor', '--json'], {
          env: { ...env, OLLAMA_MODEL: LOCAL_MODEL },
          encoding: 'utf8',
          timeout: 60_000,
        });
        const rows = JSON.parse(doctor.stdout) as DoctorRow[];
        expect(rows.find((r) => r.dependency === 'Ollama')).toMatchObject({ status: 'ok' });

        const health = await fetch(`http://127.0.0.1:${metricsPort}/health`);
        expect(health.status).toBe(200);
        const body = (await health.json()) as { status: string; dependencies: { name: string; ok: boolean }[] };
        expect(body.dependencies.find((d) => d.name === 'ollama')).toMatchObject({
          ok: true,
          model: LOCAL_MODEL,
          modelPresent: true,
        });
        expect(body.status).toBe('ok');

        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        await waitFor(() => !isAlive(ollamaPid!), { timeoutMs: 20_000, what: 'ollama serve gone' });
        expect(await isPortOpen('127.0.0.1:11434', 500)).toBe(false);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        if (ollamaPid !== undefined) {
          try {
            process.kill(-ollamaPid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      }
    });
  });
});
