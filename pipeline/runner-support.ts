/**
 * The parts of the pipeline runner that need no runner: labels of its containers, ports, health checks, logs of
 * processes and containers, stopping a process group, and stopping every worker of a prefix.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type Docker from 'dockerode';
import type { Redis } from 'ioredis';
import type { Keys } from '../core/keys';
import { isProcessRunning, processRunsCommand, readRegistrations } from './registry';
import { sleep } from './util';

/** Label on every pipeline container; `selfheal.prefix` holds the REDIS_KEY_PREFIX it serves. */
export const PIPELINE_LABEL = 'selfheal.pipeline';
export const PREFIX_LABEL = 'selfheal.prefix';

export class PipelineRunnerError extends Error {
  readonly type = 'pipeline_runner_failed';
}

export function isPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** A port the OS reports free on `host`. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const addr = server.address();
      server.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export function tail(file: string | undefined, lines = 15): string {
  if (!file) return '';
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** True when the worker's health URL answers 200 within a second. */
export async function answers200(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** Docker's log stream of a non-TTY container, de-multiplexed (8-byte frame headers dropped). */
export function demuxLogs(buf: Buffer): string {
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length) {
    const size = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + size));
    i += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

/** SIGTERM to a process group (or the pid), SIGKILL after the grace period; resolves when it is gone. */
export async function terminate(pid: number, graceMs = 10_000): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
    }
  };
  if (!isProcessRunning(pid)) return;
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isProcessRunning(pid) && Date.now() < deadline) await sleep(50);
  if (isProcessRunning(pid)) signal('SIGKILL');
  while (isProcessRunning(pid)) await sleep(50);
}

/**
 * Stops every pipeline worker of a prefix, including ones this process did not start (respawned by chaos, or left
 * by a crashed `selfheal up`): process workers from the registry (only when the pid still runs the recorded
 * command), and containers labelled with the prefix. Returns the worker ids stopped.
 */
export async function stopAllPipelineWorkers(opts: { redis: Redis; keys: Keys; docker?: Docker }): Promise<string[]> {
  const stopped = new Set<string>();
  const regs = await readRegistrations(opts.redis, opts.keys);
  await Promise.all(
    regs
      .filter((r) => r.kind === 'process')
      .map(async (r) => {
        if (processRunsCommand(r.pid, r.command?.argv)) await terminate(r.pid);
        stopped.add(r.worker);
      }),
  );
  if (opts.docker) {
    const containers = await opts.docker.listContainers({
      all: true,
      filters: { label: [`${PIPELINE_LABEL}=true`, `${PREFIX_LABEL}=${opts.keys.prefix}`] },
    });
    await Promise.all(
      containers.map(async (info) => {
        const c = opts.docker!.getContainer(info.Id);
        if (info.State === 'running') await c.stop({ t: 10 }).catch(() => undefined);
        await c.remove({ force: true }).catch(() => undefined);
        const worker = info.Labels['selfheal.worker'];
        if (worker) stopped.add(worker);
      }),
    );
  }
  if (opts.docker) for (const r of regs) if (r.kind === 'container') stopped.add(r.worker);
  if (stopped.size > 0) {
    const m = opts.redis.multi().hdel(opts.keys.pipelineWorkers(), ...stopped);
    for (const w of stopped) m.del(opts.keys.heartbeat(w));
    await m.exec();
  }
  return [...stopped].sort();
}
