/** The `GET /health` server of a pipeline worker. */
import http from 'node:http';
import { errorMessage } from '../core/errors';
import type { WorkerRuntime } from './worker-runtime';

/** Resolves with the promise's outcome, or a timeout error; never leaves a rejection unhandled. */
function settle<T>(
  promise: Promise<T>,
  timeoutMs: number,
): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ ok: true, value });
      },
      (err: unknown) => {
        clearTimeout(timer);
        resolve({ ok: false, error: errorMessage(err) });
      },
    );
  });
}

/** Starts the health server; resolves once it listens. */
export async function startHealthServer(
  rt: WorkerRuntime,
): Promise<{ server: http.Server; port: number; healthUrl: string }> {
  const { opts, redis, pool, worker, stage, stats, startedAt } = rt;
  async function health(): Promise<{ code: number; body: Record<string, unknown> }> {
    const [r, p] = await Promise.all([settle(redis.ping(), 1_000), settle(pool.query('SELECT 1'), 1_000)]);
    const problems: string[] = [];
    if (rt.state === 'hung' && !rt.faults.silentHang) problems.push('hung: not taking documents');
    if (rt.state === 'stopping') problems.push('stopping');
    if (!r.ok) problems.push(`redis: ${r.error}`);
    if (!p.ok) problems.push(`postgres: ${p.error}`);
    return {
      code: problems.length === 0 ? 200 : 503,
      body: {
        status: problems.length === 0 ? 'ok' : 'unhealthy',
        problems,
        worker,
        stage,
        kind: opts.kind,
        state: rt.state,
        redis: r.ok ? 'ok' : r.error,
        postgres: p.ok ? 'ok' : p.error,
        current: rt.current?.id ?? null,
        faults: rt.faults,
        ...stats,
        uptimeMs: Date.now() - startedAt,
      },
    };
  }

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== '/health') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    health().then(
      ({ code, body }) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
      (err: unknown) =>
        res
          .writeHead(503, { 'content-type': 'application/json' })
          .end(JSON.stringify({ status: 'unhealthy', problems: [errorMessage(err)] })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const healthUrl = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}/health`;
  return { server, port, healthUrl };
}
