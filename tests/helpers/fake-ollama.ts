/**
 * An Ollama-API-compatible HTTP server for tests (no model can run on these machines). It answers `/api/tags`,
 * `/api/version`, `/api/chat` and `/api/generate` like Ollama does, with replies the test scripts: recorded model
 * output, hostile text, garbage, or silence. Production code talks to it through the unchanged `ollama` client.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Reply =
  | { kind: 'content'; content: string; delayMs?: number }
  | { kind: 'status'; status: number; body?: string }
  | { kind: 'hang' }
  /** A reply chosen per request (e.g. from the JSON schema in `format`); it must not be `respond` itself. */
  | { kind: 'respond'; respond: (request: { path: string; body: Record<string, unknown> }) => Reply };

/** A model's plan: `action` for `reasoning`, with `confidence` (what a model agreeing with the runbook answers). */
export function planReply(action: string, reasoning: string, confidence = 0.95): Reply {
  return { kind: 'content', content: JSON.stringify({ action, reasoning, confidence }) };
}

export interface FakeOllama {
  url: string;
  /** Requests received on /api/chat and /api/generate, in order. */
  /** Chat and generate requests, with the Authorization header they carried (if any). */
  requests: { path: string; body: Record<string, unknown>; authorization?: string }[];
  /** Chat and generate requests open right now: received, and neither answered nor aborted by the client. */
  readonly inFlight: number;
  /** The most requests that were open at once since start (or `resetPeak`): what a concurrency cap must bound. */
  readonly peakInFlight: number;
  resetPeak(): void;
  /** Replies served in order; the last one repeats. */
  setReplies(replies: Reply[]): void;
  setModels(models: string[]): void;
  close(): Promise<void>;
}

export async function startFakeOllama(opts: { models?: string[]; replies?: Reply[] } = {}): Promise<FakeOllama> {
  let models = opts.models ?? ['llama3.2:3b'];
  let replies: Reply[] = opts.replies ?? [{ kind: 'content', content: '{}' }];
  let served = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  const requests: FakeOllama['requests'] = [];
  const hanging = new Set<http.ServerResponse>();

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (path === '/api/tags') {
        return json(200, {
          models: models.map((name) => ({
            name,
            model: name,
            modified_at: '2026-01-01T00:00:00Z',
            size: 1,
            digest: 'x',
            details: {},
          })),
        });
      }
      if (path === '/api/version') return json(200, { version: '0.0.0-fake' });
      if (path !== '/api/chat' && path !== '/api/generate') return json(404, { error: 'not found' });
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        return json(400, { error: 'invalid JSON' });
      }
      requests.push({ path, body, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
      // Counted at the server, so the figure is what Ollama would see; 'close' fires on answer and on abort alike.
      inFlight++;
      peakInFlight = Math.max(peakInFlight, inFlight);
      res.once('close', () => inFlight--);
      let reply = replies[Math.min(served, replies.length - 1)]!;
      served++;
      if (reply.kind === 'respond') reply = reply.respond({ path, body });
      if (reply.kind === 'respond') return json(500, { error: 'a respond reply returned another respond reply' });
      if (reply.kind === 'hang') {
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
        return;
      }
      if (reply.kind === 'status') {
        res.writeHead(reply.status, { 'content-type': 'application/json' });
        res.end(reply.body ?? JSON.stringify({ error: `status ${reply.status}` }));
        return;
      }
      const model = typeof body.model === 'string' ? body.model : models[0];
      const done = {
        model,
        created_at: new Date().toISOString(),
        done: true,
        done_reason: 'stop',
        total_duration: 1,
        load_duration: 1,
        prompt_eval_count: 1,
        prompt_eval_duration: 1,
        eval_count: 1,
        eval_duration: 1,
      };
      const payload =
        path === '/api/chat'
          ? { ...done, message: { role: 'assistant', content: reply.content } }
          : { ...done, response: reply.content };
      setTimeout(() => json(200, payload), reply.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get inFlight() {
      return inFlight;
    },
    get peakInFlight() {
      return peakInFlight;
    },
    resetPeak() {
      peakInFlight = inFlight;
    },
    setReplies(next) {
      replies = next;
      served = 0;
    },
    setModels(next) {
      models = next;
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
