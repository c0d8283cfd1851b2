import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { handleAlertmanager } from './alertmanager';
import { bearerToken, decideOverHttp, sameSecret, showHealing, type HttpAnswer } from './http-approvals';
import { ollamaState } from './ollama-probe';
import { temporalAnswers } from './temporal-connection';
import type { createMetricsState } from './metrics-state';
import { parseWebhook } from '../core/alertmanager';
import { errorFirstLine, errorMessage } from '../core/errors';
import type { MonitoringInput } from '../workflows/definitions';

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
  /**
   * The Temporal side (POST /webhooks/alertmanager, /healings/...): a client of the namespace (connected on first
   * use), the healing input the monitor uses, WEBHOOK_TOKEN and APPROVAL_SECRET. Without it those paths are 404.
   */
  healings?: {
    client: () => Promise<Client>;
    monitoring: MonitoringInput;
    webhookToken?: string;
    approvalSecret?: string;
  };
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

/** Largest request body read (Alertmanager's notifications are far smaller); more is answered 413. */
export const MAX_BODY_BYTES = 1024 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The request's JSON body: 415 when it is not JSON, 413 over MAX_BODY_BYTES, 400 when it does not parse. */
async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new HttpError(415, 'expected content-type application/json');
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) {
    throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (err) {
    throw new HttpError(400, `bad JSON: ${errorFirstLine(err)}`);
  }
}

/** One line, whatever went wrong: a Temporal that cannot be reached is a 503 (Alertmanager retries those). */
function failure(err: unknown): HttpAnswer {
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message } };
  return { status: 503, body: { error: `temporal: ${errorFirstLine(err).slice(0, 300)}` } };
}

const HEALING_PATH = /^\/healings\/([A-Za-z0-9:._-]{1,255})(?:\/(approve|reject))?$/;

/** POST /webhooks/alertmanager, GET /healings/{id}, POST /healings/{id}/approve|reject; undefined for other paths. */
function healingRoute(
  deps: NonNullable<HttpServerDeps['healings']>,
  req: http.IncomingMessage,
  path: string,
): Promise<HttpAnswer> | undefined {
  if (path === '/webhooks/alertmanager') {
    if (req.method !== 'POST') return Promise.resolve({ status: 405, body: { error: 'method not allowed: POST' } });
    return (async () => {
      if (deps.webhookToken) {
        const token = bearerToken(req.headers.authorization);
        if (!token || !sameSecret(token, deps.webhookToken)) {
          return { status: 401, body: { error: 'expected Authorization: Bearer <WEBHOOK_TOKEN>' } };
        }
      }
      const parsed = parseWebhook(await readJson(req));
      if (!parsed.ok) return { status: 400, body: { error: parsed.error } };
      return handleAlertmanager(await deps.client(), deps.monitoring, parsed.value, Date.now());
    })().catch(failure);
  }
  const m = HEALING_PATH.exec(path);
  if (!m) return undefined;
  const [, workflowId, decision] = m as unknown as [string, string, 'approve' | 'reject' | undefined];
  if (!decision) {
    if (req.method !== 'GET') return Promise.resolve({ status: 405, body: { error: 'method not allowed: GET' } });
    return deps
      .client()
      .then((client) => showHealing(client, workflowId))
      .catch(failure);
  }
  if (req.method !== 'POST') return Promise.resolve({ status: 405, body: { error: 'method not allowed: POST' } });
  return (async () => {
    const body = await readJson(req);
    const client = await deps.client();
    return decideOverHttp(
      client,
      { secret: deps.approvalSecret, authorization: req.headers.authorization },
      workflowId,
      decision,
      body,
    );
  })().catch(failure);
}

const PATHS = ['/health', '/metrics', '/metrics/prometheus'];
const HEALING_PATHS = ['POST /webhooks/alertmanager', 'GET /healings/{id}', 'POST /healings/{id}/approve|reject'];

/** The HTTP server of docs/ARCHITECTURE.md (Workers and task queues). Thin handlers; the work is in the functions above. */
export function createHttpServer(deps: HttpServerDeps): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const routed = deps.healings ? healingRoute(deps.healings, req, path) : undefined;
    if (routed) {
      void routed.then(({ status, body }) => {
        // An unread body (refused early) is drained, so the connection stays usable.
        req.resume();
        send(res, status, body);
      });
      return;
    }
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
    send(res, 404, { error: 'not found', paths: [...PATHS, ...(deps.healings ? HEALING_PATHS : [])] });
  });
}

export function listen(server: http.Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server.address() as AddressInfo));
  });
}
