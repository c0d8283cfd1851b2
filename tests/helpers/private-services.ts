/**
 * A Redis server and a PostgreSQL cluster of one test's own, on ports no other file takes while they are down
 * (`heldPort`), which the test can stop and start again (a real outage: the server process dies, every connection
 * drops, the port refuses) without touching the shared services every other test uses. Both keep their data across
 * a stop: Redis through an append-only file synced on every write, PostgreSQL through its WAL (crash recovery on the
 * next start), as a production restart would.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createKeys } from '../../core/keys';
import { migrate } from '../../db/migrate';
import { createPool } from '../../db/pool';
import { ensurePipelineSchema } from '../../pipeline/schema';
import { heldPort, uniqueId, waitFor, type TestEnv } from './env';

const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface PrivateService {
  port: number;
  url: string;
  /** Kills the server at once (SIGKILL for Redis, immediate shutdown for PostgreSQL). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data, and waits until it answers. */
  start(): Promise<void>;
  /** Stops it for good and removes its data. */
  destroy(): Promise<void>;
}

/** redis-server on 127.0.0.1 and a held port, with `appendfsync always`: a kill loses no acknowledged write. */
export async function startPrivateRedis(): Promise<PrivateService> {
  const port = await heldPort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const answers = async () => {
    const r = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1_000 });
    r.on('error', () => undefined);
    try {
      return (await r.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      r.disconnect();
    }
  };
  const service: PrivateService = {
    port,
    url,
    async start() {
      if (child && child.exitCode === null && child.signalCode === null) return;
      const server = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--save',
          '',
          '--appendonly',
          'yes',
          '--appendfsync',
          'always',
        ],
        { stdio: 'ignore' },
      );
      child = server;
      await waitFor(
        () => {
          if (server.exitCode !== null) throw new Error(`redis-server on ${port} exited with ${server.exitCode}`);
          return answers();
        },
        { timeoutMs: 30_000, intervalMs: 100, what: `the private Redis on ${port}` },
      );
    },
    async stop() {
      const server = child;
      if (!server || server.exitCode !== null || server.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
      server.kill('SIGKILL');
      await exited;
    },
    async destroy() {
      await service.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await service.start();
  return service;
}

/** Runs a PostgreSQL program as the `postgres` user when we are root (initdb and postgres refuse root). */
function pgRun(program: string, args: string[]): void {
  const bin = path.join(PG_BIN, program);
  const asRoot = process.getuid?.() === 0;
  const r = asRoot
    ? spawnSync('runuser', ['-u', 'postgres', '--', bin, ...args], { encoding: 'utf8', timeout: 60_000 })
    : spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${program} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
}

/**
 * A PostgreSQL cluster of its own (initdb in a temporary directory) on 127.0.0.1 and a held port, unix socket in the
 * same directory, trust authentication for the `selfheal` superuser, and one database `selfheal`. `stop()` is
 * `pg_ctl stop -m immediate`: every backend dies without a checkpoint, as in a crash; `start()` recovers from the WAL.
 */
export async function startPrivatePostgres(): Promise<PrivateService> {
  const port = await heldPort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfheal-pg-'));
  if (process.getuid?.() === 0) {
    const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gids = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    chownSync(dir, Number(ids.stdout.trim()), Number(gids.stdout.trim()));
  }
  const data = path.join(dir, 'data');
  pgRun('initdb', ['-D', data, '-U', 'selfheal', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  const url = `postgres://selfheal@127.0.0.1:${port}/selfheal`;
  const answers = async (database: string) => {
    const pool = createPool(`postgres://selfheal@127.0.0.1:${port}/${database}`, { max: 1 });
    try {
      await pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await pool.end();
    }
  };
  let running = false;
  const service: PrivateService = {
    port,
    url,
    async start() {
      if (running) return;
      // fsync off: the test survives a crash of the server, not of the machine, and the disk is shared.
      const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
      pgRun('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'postgres.log'), '-w', '-t', '60', 'start']);
      running = true;
      await waitFor(() => answers('postgres'), {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: `the private PostgreSQL on ${port}`,
      });
    },
    stop() {
      if (!running) return Promise.resolve();
      pgRun('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      running = false;
      return Promise.resolve();
    },
    async destroy() {
      await service.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await service.start();
  const admin = createPool(`postgres://selfheal@127.0.0.1:${port}/postgres`, { max: 1 });
  try {
    await admin.query('CREATE DATABASE selfheal');
  } finally {
    await admin.end();
  }
  return service;
}

/**
 * A test environment (as `createTestEnv` makes) on private services: the `selfheal` database of `postgres` with
 * selfheal's schema and the reference pipeline's, a fresh key prefix in `redis`. Its clients ride out an outage: they report errors while the
 * service is down and reconnect when it is back. `cleanup()` closes the clients; the services are the caller's.
 */
export async function createPrivateTestEnv(postgres: PrivateService, redisService: PrivateService): Promise<TestEnv> {
  const id = uniqueId();
  const pool = createPool(postgres.url, { max: 10 });
  await migrate(pool);
  await ensurePipelineSchema(pool);
  const redis = new Redis(redisService.url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  redis.on('error', () => undefined);
  const prefix = `${id}:`;
  return {
    id,
    schema: 'public',
    databaseUrl: postgres.url,
    redisUrl: redisService.url,
    prefix,
    keys: createKeys(prefix),
    pool,
    redis,
    env: { DATABASE_URL: postgres.url, REDIS_URL: redisService.url, REDIS_KEY_PREFIX: prefix },
    async cleanup() {
      redis.disconnect();
      await pool.end();
    },
  };
}
