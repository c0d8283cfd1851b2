/**
 * Running the reference pipeline in integration tests: a runner bound to a test environment (its schema, its Redis
 * prefix, container names unique to it), and the queries tests assert with.
 */
import net from 'node:net';
import path from 'node:path';
import Docker from 'dockerode';
import type { Stage } from '../../core/keys';
import {
  createPipelineRunner,
  PIPELINE_LABEL,
  PREFIX_LABEL,
  PROJECT_ROOT,
  stopAllPipelineWorkers,
  type PipelineRunner,
  type PipelineRunnerOptions,
} from '../../pipeline/runner';
import { waitFor, type TestEnv } from './env';

export function testDocker(): Docker {
  return new Docker({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
}

/** Where a test environment's pipeline workers log. */
export function pipelineLogDir(t: TestEnv): string {
  return path.join(PROJECT_ROOT, '.data', 'test-runs', 'pipeline', t.id);
}

/** A runner for the test environment. Container names are `pipeline-<envid>-<stage>-<n>` (still `pipeline-*`). */
export function createTestRunner(
  t: TestEnv,
  opts: Partial<Omit<PipelineRunnerOptions, 'connection' | 'redis' | 'keys'>> = {},
): PipelineRunner {
  return createPipelineRunner({
    connection: { databaseUrl: t.databaseUrl, redisUrl: t.redisUrl, prefix: t.prefix },
    redis: t.redis,
    keys: t.keys,
    containerPrefix: `pipeline-${t.id}`,
    logDir: pipelineLogDir(t),
    ...opts,
  });
}

/** Stops everything of the environment, including workers respawned by chaos and containers it labelled. */
export async function stopTestPipeline(t: TestEnv, runner: PipelineRunner | undefined, docker?: Docker): Promise<void> {
  await runner?.stop();
  await stopAllPipelineWorkers({ redis: t.redis, keys: t.keys, docker });
  if (docker) {
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`${PIPELINE_LABEL}=true`, `${PREFIX_LABEL}=${t.prefix}`] },
    });
    await Promise.all(left.map((c) => docker.getContainer(c.Id).remove({ force: true })));
  }
}

/**
 * Waits until every id is `completed` in the last stage (or has failed, when `allowFailed`). On a timeout the error
 * says where the unfinished documents are (status, stage, worker) and what Redis holds, so a failure can be explained.
 */
export async function waitForDocuments(
  t: TestEnv,
  ids: number[],
  { timeoutMs = 60_000, allowFailed = false } = {},
): Promise<void> {
  const done = allowFailed ? ['completed', 'failed'] : ['completed'];
  try {
    await waitFor(
      async () => {
        const { rows } = await t.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND status = ANY($2::text[])`,
          [ids, done],
        );
        return rows[0]!.n === ids.length || undefined;
      },
      { timeoutMs, intervalMs: 100, what: `${ids.length} documents to finish` },
    );
  } catch (e) {
    const { rows } = await t.pool.query<{ id: string; status: string; stage: string; worker_id: string | null }>(
      `SELECT id, status, stage, worker_id FROM documents
        WHERE id = ANY($1::bigint[]) AND NOT status = ANY($2::text[]) ORDER BY id LIMIT 20`,
      [ids, done],
    );
    const state = await redisState(t).catch((err: unknown) => String(err));
    throw new Error(
      `${(e as Error).message}\nunfinished (first 20): ${JSON.stringify(rows)}\nredis: ${JSON.stringify(state)}`,
      { cause: e },
    );
  }
}

/** Lengths of every queue and non-empty processing list, and the number of lease keys, of the environment. */
export async function redisState(t: TestEnv): Promise<{
  queues: Record<string, number>;
  processing: Record<string, number>;
  locks: number;
}> {
  const queues: Record<string, number> = {};
  for (const stage of ['extract', 'evaluate'] as Stage[]) queues[stage] = await t.redis.llen(t.keys.queue(stage));
  const processing: Record<string, number> = {};
  for (const key of await scanAll(t, t.keys.processingPattern())) {
    const n = await t.redis.llen(key);
    if (n > 0) processing[key] = n;
  }
  return { queues, processing, locks: (await scanAll(t, t.keys.lockPattern())).length };
}

export async function scanAll(t: TestEnv, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await t.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...found);
  } while (cursor !== '0');
  return out;
}

/** HTTP status of a GET, or 0 when nothing answered within the timeout (the actions' own probe). */
export { httpStatus } from '../../activities/actions';

/** The JSON body of a worker's /health. */
export async function healthBody(url: string): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    return (await res.json()) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Completed/failed events per worker (optionally for some documents or a stage). */
export async function eventsByWorker(
  t: TestEnv,
  where: { ids?: number[]; stage?: Stage; outcome?: 'completed' | 'failed' } = {},
): Promise<Record<string, number>> {
  const { rows } = await t.pool.query<{ worker_id: string; n: number }>(
    `SELECT worker_id, count(*)::int AS n FROM document_events
      WHERE ($1::bigint[] IS NULL OR document_id = ANY($1::bigint[]))
        AND ($2::text IS NULL OR stage = $2) AND ($3::text IS NULL OR outcome = $3)
      GROUP BY worker_id`,
    [where.ids ?? null, where.stage ?? null, where.outcome ?? null],
  );
  return Object.fromEntries(rows.map((r) => [r.worker_id, r.n]));
}

/**
 * A TCP proxy on 127.0.0.1 to a local service, which a test can cut (every connection dropped, the port closed)
 * and restore on the same port: a real outage of Redis or Postgres as one client sees it, without touching the
 * shared service.
 */
export async function tcpProxy(
  targetPort: number,
): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const make = () =>
    net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  const listen = (server: net.Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
  let server = make();
  const port = await listen(server, 0);
  return {
    port,
    async cut() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    async restore() {
      server = make();
      await listen(server, port);
    },
  };
}

/** The URL with its port replaced. */
export function withPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}
