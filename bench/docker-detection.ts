/**
 * Docker-native detection, event-driven against polling only: for a container Docker reports unhealthy, and for one
 * that dies (SIGKILL), the time from Docker's own event (`health_status: unhealthy`, `die`) to the restart issued
 * (selfheal's `attempted` row, written right before the Docker restart call). Each trial uses a fresh container (no
 * cooldown, backoff or breaker in the way), `selfheal up` with MONITOR_INTERVAL (5 s by default) and
 * DOCKER_EVENTS=true, then false.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';
import { freePort } from '../starter/temporal-local';
import { nodeCommand, projectScript } from '../workers/project';
import { makeUnhealthy, removeTestContainers, runTestContainer, SLEEPER, STOPPABLE } from '../tests/helpers/containers';
import { watchDockerEvents } from '../tests/helpers/docker-events';
import { createTestEnv, waitFor, type TestEnv } from '../tests/helpers/env';
import { startFakeOllama } from '../tests/helpers/fake-ollama';
import { percentile, progress, round1, type Row } from './common';

const [NODE, ...CLI] = nodeCommand(projectScript('starter/cli'));

/** `selfheal up --no-pipeline` on a Temporal dev server of its own, the fake model answering 500 (runbook plans). */
async function up(t: TestEnv, extra: Record<string, string>) {
  const ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-bench-docker-'));
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    ...t.env,
    TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
    METRICS_PORT: String(await freePort()),
    SELFHEAL_DATA_DIR: dataDir,
    OLLAMA_HOST: ollama.url,
    LOG_LEVEL: 'warn',
    ...extra,
  };
  const child = spawn(NODE, [...CLI, 'up', '--no-pipeline', '--ui-port', String(await freePort())], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.once('exit', r));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    await ollama.close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitFor(() => /selfheal is up in/.test(out), { timeoutMs: 180_000, what: 'selfheal up' });
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${out.slice(-2000)}`);
  }
  return { stop };
}

type Fault = 'unhealthy' | 'died';

export async function benchDockerDetection({ trials = 20, interval = 5 } = {}): Promise<Row[]> {
  const rows: Row[] = [];
  for (const mode of ['events', 'polling'] as const) {
    progress(`docker detection: ${mode}, MONITOR_INTERVAL=${interval}, ${trials} trials per fault`);
    const t = await createTestEnv();
    const docker = new Docker();
    const selfheal = await up(t, {
      MONITOR_INTERVAL: String(interval),
      DOCKER_EVENTS: String(mode === 'events'),
      AUTO_FIX_ENABLED: 'true',
      VERIFY_DELAY: '1',
      RESTART_COOLDOWN: '0',
      RESTART_STOP_TIMEOUT: '1',
      MAX_ACTIONS_PER_HOUR: '10000',
      CONTAINER_ALLOWLIST: 'nothing-by-name-*',
    });
    const s = { t, docker };
    try {
      for (const fault of ['unhealthy', 'died'] as Fault[]) {
        const latencies: number[] = [];
        for (let i = 0; i < trials; i++) {
          const name = `bd-${s.t.id}-${fault}-${randomBytes(3).toString('hex')}`;
          const labels = { 'selfheal.enable': 'true' };
          await runTestContainer(s.docker, s.t, name, fault === 'unhealthy' ? SLEEPER : STOPPABLE, {
            labels,
            healthcheck: fault === 'unhealthy',
          });
          if (fault === 'unhealthy') {
            await waitFor(
              async () => (await s.docker.getContainer(name).inspect()).State.Health?.Status === 'healthy',
              {
                timeoutMs: 30_000,
                what: `${name} healthy`,
              },
            );
          }
          // A moment running first; the fault then falls anywhere in the polling interval.
          await new Promise((r) => setTimeout(r, 1_500));
          const events = await watchDockerEvents(s.docker, [name]);
          try {
            if (fault === 'unhealthy') makeUnhealthy(name);
            else await s.docker.getContainer(name).kill({ signal: 'SIGKILL' });
            const action = fault === 'unhealthy' ? 'health_status: unhealthy' : 'die';
            const faultAt = await waitFor(
              () => {
                const e = events.of(name, action)[0];
                return e?.timeNano ? e.timeNano / 1e6 : undefined;
              },
              { timeoutMs: 30_000, intervalMs: 50, what: `${name} ${action}` },
            );
            const issuedAt = await waitFor(
              async () => {
                const { rows: r } = await s.t.pool.query<{ at: string }>(
                  `SELECT (extract(epoch FROM created_at) * 1000)::text AS at FROM healing_log
                    WHERE step = 'attempted' AND action = 'restart_worker' AND target = $1`,
                  [name],
                );
                return r[0] ? Number(r[0].at) : undefined;
              },
              { timeoutMs: 60_000, intervalMs: 50, what: `the restart of ${name}` },
            );
            latencies.push((issuedAt - faultAt) / 1000);
          } finally {
            events.stop();
          }
          await s.docker
            .getContainer(name)
            .remove({ force: true })
            .catch(() => undefined);
        }
        const row = {
          mode,
          fault: fault === 'unhealthy' ? 'Docker unhealthy → restart issued' : 'died (SIGKILL) → restart issued',
          monitor_interval_s: interval,
          trials: latencies.length,
          p50_s: round1(percentile(latencies, 50)),
          p95_s: round1(percentile(latencies, 95)),
          max_s: round1(Math.max(...latencies)),
        };
        progress(`  ${JSON.stringify(row)}`);
        rows.push(row);
      }
    } finally {
      await selfheal.stop();
      await removeTestContainers(docker, t);
      await t.cleanup();
    }
  }
  return rows;
}
