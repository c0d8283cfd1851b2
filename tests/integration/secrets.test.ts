/**
 * Secrets stay secret (S6): with a webhook URL that carries a token, an Ollama URL with a password and an approval
 * secret configured, a real healing runs through detection, approval notice, signed approval and action. None of
 * the secrets appears in `/metrics`, `/metrics/prometheus`, the workers' logs, selfheal's own output, the audit, the
 * workflow's history or the webhook body. The HTTP server listens on 127.0.0.1 by default.
 */
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../core/config';
import { healingWorkflowId } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { createTestEnv, waitFor, type TestEnv } from '../helpers/env';
import { startFakeOllama, type FakeOllama } from '../helpers/fake-ollama';
import { startSelfheal, type RunningSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient } from '../helpers/temporal';

const TOKEN = 'hook-TOKEN-7e6d5c4b3a';
const OLLAMA_PASSWORD = 'ollama-PASS-1f2e3d4c';
const APPROVAL_SECRET = 'approval-SECRET-9a8b7c6d5e';
const SECRETS = [TOKEN, OLLAMA_PASSWORD, APPROVAL_SECRET];

describe('secrets never leave their place', () => {
  let t: TestEnv;
  let ns: string;
  let ollama: FakeOllama;
  let selfheal: RunningSelfheal;
  const bodies: string[] = [];
  const receiver = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      bodies.push(raw);
      res.writeHead(200).end();
    });
  });

  beforeAll(async () => {
    t = await createTestEnv();
    ns = await allocateNamespace();
    ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as AddressInfo).port;
    const ollamaUrl = new URL(ollama.url);
    ollamaUrl.username = 'selfheal';
    ollamaUrl.password = OLLAMA_PASSWORD;
    selfheal = await startSelfheal(t, ns, {
      OLLAMA_HOST: ollamaUrl.toString(),
      ESCALATION_WEBHOOK_URL: `http://127.0.0.1:${port}/hook?token=${TOKEN}`,
      APPROVAL_SECRET,
      AUTO_FIX_ENABLED: 'false',
      VERIFY_DELAY: '2',
      LOG_LEVEL: 'debug',
    });
  }, 120_000);
  afterAll(async () => {
    await selfheal?.stop();
    await ollama?.close();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
    await t?.cleanup();
  });

  it('binds the HTTP server to 127.0.0.1 by default', () => {
    const parsed = parseConfig({ DATABASE_URL: t.env.DATABASE_URL, REDIS_URL: t.env.REDIS_URL });
    expect(parsed.ok && parsed.config.METRICS_HOST).toBe('127.0.0.1');
    // The kernel's own table: the metrics port is bound to 127.0.0.1 (0100007F), nothing wider.
    const port = Number(new URL(selfheal.metricsUrl).port).toString(16).toUpperCase().padStart(4, '0');
    const listening = readFileSync('/proc/net/tcp', 'utf8')
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1]?.endsWith(`:${port}`) && f[3] === '0A')
      .map((f) => f[1]!.split(':')[0]);
    expect(listening).toEqual(['0100007F']);
  });

  it('a healing with a notice and a signed approval leaks no secret anywhere', async () => {
    // A real stale lock on a finished document: detected, noticed, approved, cleared.
    const { rows } = await t.pool.query<{ id: string }>(
      "INSERT INTO documents (stage, status) VALUES ('evaluate', 'completed') RETURNING id::text AS id",
    );
    await t.redis.set(t.keys.lock(rows[0]!.id), 'gone-worker:tok-1');
    const id = healingWorkflowId('stale_locks', 'gone-worker');
    const { client, close } = await connectClient(ns);
    try {
      await waitFor(() => bodies.find((b) => b.includes(id) && b.includes('approval_requested')), {
        what: 'the approval notice',
        timeoutMs: 60_000,
      });
      const approved = selfheal.cli(['approve', id, '--by', 'alice']);
      expect(approved.status, approved.stderr).toBe(0);
      const status = (await client.workflow.getHandle(id).result()) as HealingStatus;
      expect(status.phase).toBe('healed');

      const places: Record<string, string> = {
        '/metrics': await (await fetch(`${selfheal.metricsUrl}/metrics`)).text(),
        '/metrics/prometheus': await (await fetch(`${selfheal.metricsUrl}/metrics/prometheus`)).text(),
        'selfheal up output': selfheal.output(),
        audit: JSON.stringify((await t.pool.query('SELECT * FROM healing_log')).rows),
        history: JSON.stringify(await client.workflow.getHandle(id).fetchHistory()),
        'webhook bodies': bodies.join('\n'),
        'approve output': `${approved.stdout}\n${approved.stderr}`,
      };
      const logDir = path.join(selfheal.env.SELFHEAL_DATA_DIR!, 'logs');
      for (const f of readdirSync(logDir)) places[`log ${f}`] = readFileSync(path.join(logDir, f), 'utf8');
      // A password-protected Ollama still works: the password went as a Basic header, not in the URL.
      const chat = ollama.requests.find((r) => r.path === '/api/chat');
      expect(chat?.authorization).toBe(`Basic ${Buffer.from(`selfheal:${OLLAMA_PASSWORD}`).toString('base64')}`);
      // The places are really there (a failing fetch or an empty log would prove nothing).
      expect(places['/metrics/prometheus']).toContain('selfheal_');
      expect(places.audit).toContain(id);
      expect(Object.keys(places).filter((k) => k.startsWith('log ')).length).toBeGreaterThanOrEqual(3);
      expect(places['log selfheal-actions.log']).toContain('approval needed');
      for (const [where, text] of Object.entries(places)) {
        for (const secret of SECRETS) expect(text.includes(secret), `${secret} in ${where}`).toBe(false);
      }
    } finally {
      await close();
    }
  }, 180_000);
});
