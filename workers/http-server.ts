import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { ollamaState } from './ollama-probe';
import { temporalAnswers } from './temporal-connection';
import type { createMetricsState } from './metrics-state';
import { errorMessage } from '../core/errors';

export interface HttpServerDeps {
  /** selfheal's own tables (SELFHEAL_DATABASE_URL). */
  pool: pg.Pool;
  /** The watched pipeline's database (DATABASE_URL); default `pool`. */
  pipelinePool?: pg.Pool;
  redis: Redis;
  temporalAddress: string;
  /** The model server (OLLAMA_HOST) and model (OLLAMA_MODEL): reported, never failing (the runbook stands in). */
  ollama?: { host: string; model: string };
  metrics: ReturnType<typeof createMetricsState>;
}

export interface DependencyHealth {
  name: 'postgres' | 'redis' | 'temporal' | 'ollama';
  ok: boolean;
  error?: string;
  /** Only degrades when not ok (ollama: analysis falls back to the runbook); 200 still. */
  optional?: boolean;
  /** ollama: whether the server answers and whether `/api/tags` lists OLLAMA_MODEL. */
  answers?: boolean;
  model?: string;
  modelPresent?: boolean;
}

/** The model server as /health reports it: ok when it answers and lists the model. */
async function probeOllama(host: string, model: string): Promise<DependencyHealth> {
  const state = await ollamaState(host, model, 2_000);
  const base = {
    name: 'ollama' as const,
    optional: true,
    answers: state.answers,
    model,
    modelPresent: state.modelPresent,
  };
  if (!state.answers) return { ...base, ok: false, error: `no answer at ${host}: ${state.error ?? 'no answer'}` };
  if (!state.modelPresent) return { ...base, ok: false, error: `model ${model} is not listed at ${host}` };
  return { ...base, ok: true };
}

async function probe(name: DependencyHealth['name'], check: () => Promise<unknown>): Promise<DependencyHealth> {
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout after 2000 ms')), 2_000).unref()),
    ]);
    return { name, ok: true };
  } catch (err) {
    return { name, ok: false, error: errorMessage(err) };
  }
}

/**
 * Health of selfheal's own dependencies: 200 when all the required ones answer, 503 naming each one that does not.
 * The model server is reported (`degraded`) but never fails it: without it the runbook plans.
 */
export async function checkHealth(deps: HttpServerDeps): Promise<{ status: number; body: unknown }> {
  const results = await Promise.all([
    // Both databases, when they are two: the monitor cannot see the pipeline without one, nor audit without the other.
    probe('postgres', () => {
      const pipeline = deps.pipelinePool ?? deps.pool;
      const databases: [string, pg.Pool][] =
        pipeline === deps.pool
          ? [['DATABASE_URL', pipeline]]
          : [
              ['SELFHEAL_DATABASE_URL', deps.pool],
              ['DATABASE_URL', pipeline],
            ];
      return Promise.all(
        databases.map(([name, p]) =>
          p.query('SELECT 1').catch((err: unknown) => {
            throw new Error(`${name}: ${errorMessage(err)}`);
          }),
        ),
      );
    }),
    probe('redis', () => deps.redis.ping()),
    probe('temporal', async () => {
      if (!(await temporalAnswers(deps.temporalAddress, 2_000)))
        throw new Error(`no answer at ${deps.temporalAddress}`);
    }),
    ...(deps.ollama ? [probeOllama(deps.ollama.host, deps.ollama.model)] : []),
  ]);
  const failing = results.filter((r) => !r.ok && !r.optional);
  const degraded = results.filter((r) => !r.ok && r.optional);
  return {
    status: failing.length === 0 ? 200 : 503,
    body: {
      status: failing.length > 0 ? 'unhealthy' : degraded.length > 0 ? 'degraded' : 'ok',
      failing: failing.map((r) => r.name),
      degraded: degraded.map((r) => r.name),
      dependencies: results,
    },
  };
}

function send(res: http.ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

/** The HTTP server of docs/ARCHITECTURE.md (Workers and task queues). Thin handlers; the work is in the functions above. */
export function createHttpServer(deps: HttpServerDeps): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET') return send(res, 405, { error: 'method not allowed' });
    if (path === '/health') {
      checkHealth(deps).then(
        ({ status, body }) => send(res, status, body),
        (err: unknown) => send(res, 500, { error: String(err) }),
      );
      return;
    }
    if (path === '/metrics') {
      deps.metrics.view().then(
        (view) => send(res, 200, view),
        (err: unknown) => send(res, 503, { error: errorMessage(err) }),
      );
      return;
    }
    if (path === '/metrics/prometheus') {
      deps.metrics.prometheus().then(
        (text) => send(res, 200, text, deps.metrics.registry.contentType),
        (err: unknown) => send(res, 500, { error: String(err) }),
      );
      return;
    }
    send(res, 404, { error: 'not found', paths: ['/health', '/metrics', '/metrics/prometheus'] });
  });
}

export function listen(server: http.Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server.address() as AddressInfo));
  });
}
