/**
 * Escalation webhooks against a real HTTP receiver on 127.0.0.1 that answers from a script (a status, with headers,
 * or a connection reset), and escalateToHuman end to end (real Postgres for the detected and executed rows).
 * Back-off is checked by the order and count of the waits asked for, never by the clock.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { LogLevel, LogMetadata } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import Docker from 'dockerode';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createActionActivities, type ActionConfig, type ActionResult } from '../../activities/actions';
import { postJsonWithRetry } from '../../activities/notify';
import { ESCALATION_SCHEMA, type EscalationJson, type SlackBody } from '../../core/notify';
import type { Plan } from '../../core/plan';
import { createTestEnv, uniqueId, type TestEnv } from '../helpers/env';

type Answer = { status: number; headers?: Record<string, string> } | 'reset';

interface Received {
  method: string;
  path: string;
  contentType: string | undefined;
  raw: string;
  body: unknown;
}

/** An HTTP receiver answering each request with the next scripted answer (the last one repeats). */
async function receiver(script: Answer[]) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d: Buffer) => (raw += d.toString()));
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      received.push({ method: req.method!, path: req.url!, contentType: req.headers['content-type'], raw, body });
      const answer = script[Math.min(received.length, script.length) - 1]!;
      // A connection reset (RST), as a crashing proxy gives it.
      if (answer === 'reset') return void req.socket.resetAndDestroy();
      res.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers }).end('answer');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    received,
    /** A URL whose path is a secret, as Slack webhook URLs are. */
    url: `${base}/services/T000/B000/XXXXsecretXXXX`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A `sleep` that records what it was asked to wait and does not wait. */
function recordingSleep() {
  const waits: number[] = [];
  return {
    waits,
    sleep: (ms: number) => {
      waits.push(ms);
      return Promise.resolve();
    },
  };
}

const BODY = { text: 'hello', n: 1 };

describe('postJsonWithRetry against a real receiver', () => {
  const open: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((r) => r.close()));
  });
  async function scripted(script: Answer[]) {
    const r = await receiver(script);
    open.push(r);
    return r;
  }

  it('503, then a connection reset, then 200: three POSTs of the same body, waits 0.5 s then 1 s', async () => {
    const r = await scripted([{ status: 503 }, 'reset', { status: 200 }]);
    const { waits, sleep } = recordingSleep();
    const d = await postJsonWithRetry(r.url, BODY, { sleep });
    expect(d).toMatchObject({ webhook: 'delivered', attempts: 3, status: 200 });
    expect(d.tries).toEqual([
      { attempt: 1, status: 503, retryInMs: 500 },
      { attempt: 2, error: expect.stringMatching(/ECONNRESET|socket|closed/i), retryInMs: 1_000 },
      { attempt: 3, status: 200 },
    ]);
    expect(waits).toEqual([500, 1_000]);
    expect(r.received).toHaveLength(3);
    for (const req of r.received) {
      expect(req).toMatchObject({ method: 'POST', contentType: 'application/json', body: BODY });
    }
    // The secret path of the URL is in no error text.
    expect(JSON.stringify(d)).not.toContain('XXXXsecretXXXX');
  });

  it('a 400 is final: one POST, no wait', async () => {
    const r = await scripted([{ status: 400 }, { status: 200 }]);
    const { waits, sleep } = recordingSleep();
    const d = await postJsonWithRetry(r.url, BODY, { sleep });
    expect(d).toMatchObject({ webhook: 'failed', attempts: 1, status: 400, error: 'HTTP 400' });
    expect(d.tries).toEqual([{ attempt: 1, status: 400, final: 'client error: not retried' }]);
    expect(waits).toEqual([]);
    expect(r.received).toHaveLength(1);
  });

  it('bounded: four attempts in all, waits doubling 0.5, 1, 2 s, the last status recorded', async () => {
    const r = await scripted([{ status: 502 }, { status: 500 }, { status: 503 }, { status: 504 }, { status: 200 }]);
    const { waits, sleep } = recordingSleep();
    const d = await postJsonWithRetry(r.url, BODY, { sleep });
    expect(d).toMatchObject({ webhook: 'failed', attempts: 4, status: 504, error: 'HTTP 504' });
    expect(d.tries.map((t) => t.status)).toEqual([502, 500, 503, 504]);
    expect(waits).toEqual([500, 1_000, 2_000]);
    expect(r.received).toHaveLength(4);
  });

  it('429 with Retry-After: waits what the receiver asks when longer than the back-off; stops when it asks too much', async () => {
    const r = await scripted([
      { status: 429, headers: { 'retry-after': '3' } },
      { status: 429, headers: { 'retry-after': '0' } },
      { status: 200 },
    ]);
    const { waits, sleep } = recordingSleep();
    const d = await postJsonWithRetry(r.url, BODY, { sleep });
    expect(d).toMatchObject({ webhook: 'delivered', attempts: 3, status: 200 });
    expect(waits).toEqual([3_000, 1_000]);

    const far = await scripted([{ status: 503, headers: { 'retry-after': '3600' } }, { status: 200 }]);
    const w2 = recordingSleep();
    const d2 = await postJsonWithRetry(far.url, BODY, { sleep: w2.sleep });
    expect(d2).toMatchObject({ webhook: 'failed', attempts: 1, status: 503 });
    expect(d2.tries[0]!.final).toBe('Retry-After 3600 s exceeds the 10 s bound');
    expect(w2.waits).toEqual([]);
    expect(far.received).toHaveLength(1);
  });

  it('nothing listening: network errors are retried, then failed without the URL in the error', async () => {
    const r = await receiver([{ status: 200 }]);
    await r.close();
    const { waits, sleep } = recordingSleep();
    const d = await postJsonWithRetry(r.url, BODY, { sleep, attempts: 3 });
    expect(d).toMatchObject({ webhook: 'failed', attempts: 3, error: expect.stringMatching(/ECONNREFUSED/) });
    expect(d).not.toHaveProperty('status');
    expect(waits).toEqual([500, 1_000]);
    expect(JSON.stringify(d)).not.toContain('XXXXsecretXXXX');
  });

  it('a receiver that does not answer in time: each attempt times out and is retried', async () => {
    const sockets = new Set<Socket>();
    const server = http.createServer(() => undefined); // never answers
    server.on('connection', (s) => sockets.add(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const { waits, sleep } = recordingSleep();
      const d = await postJsonWithRetry(url, BODY, { sleep, attempts: 2, timeoutMs: 200 });
      expect(d).toMatchObject({ webhook: 'failed', attempts: 2, error: 'timeout' });
      expect(waits).toEqual([500]);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('escalateToHuman with the webhook (real Postgres)', () => {
  let t: TestEnv;
  const docker = new Docker();
  const silent = pino({ level: 'silent' });

  beforeAll(async () => {
    t = await createTestEnv();
  });
  afterAll(async () => {
    await t.cleanup();
  });

  const baseConfig: ActionConfig = {
    maxRequeues: 3,
    requeueCap: 1000,
    restartStopTimeoutSeconds: 5,
    healthTargets: [],
    containerAllowlist: ['pipeline-*'],
    containerDenylist: [],
    webhookBackoffMs: 1,
    temporalUiUrl: 'http://127.0.0.1:8233/',
  };

  function escalationPlan(reason: string): Plan {
    return {
      id: `plan-${uniqueId()}`,
      anomalyType: 'stale_locks',
      action: 'escalate_to_human',
      target: 'worker-7',
      params: { reason },
      reasoning: 'the lock owner could not be proven dead',
      confidence: 1,
      source: 'runbook',
      rung: 1,
    };
  }

  /** Runs escalateToHuman as an activity of a fake run with a `detected` row; returns the result and the SDK log. */
  async function escalate(config: Partial<ActionConfig>, plan: Plan) {
    const workflowId = `heal-stale_locks-worker-7-${t.id}-${uniqueId()}`;
    const runId = randomUUID();
    await t.pool.query(
      `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, params, activity_id)
       VALUES ($1, $2, 'detected', 'stale_locks', 'worker-7', $3, 'detected-1')`,
      [
        workflowId,
        runId,
        JSON.stringify({
          severity: 'warning',
          summary: '2 locks held by worker-7, which has no heartbeat',
          evidence: { locks: [{ documentId: '41', owner: 'worker-7', token: 'tok-deadbeef' }], count: 2 },
        }),
      ],
    );
    const actions = createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker,
      config: { ...baseConfig, ...config },
      log: silent,
    });
    const sdkLog: { level: LogLevel; message: string; meta?: LogMetadata }[] = [];
    const logger = new DefaultLogger('TRACE', (e) => sdkLog.push({ level: e.level, message: e.message, meta: e.meta }));
    const env = new MockActivityEnvironment(
      { activityId: '9', workflowExecution: { workflowId, runId }, namespace: 'selfheal-ns' },
      { logger },
    );
    const key = uniqueId();
    const result: ActionResult = await env.run(actions.escalateToHuman, { plan, idempotencyKey: key });
    const { rows } = await t.pool.query<{ outcome: string; params: { result: Record<string, unknown> } }>(
      `SELECT outcome, params FROM healing_log WHERE step = 'executed' AND idempotency_key = $1`,
      [key],
    );
    return { workflowId, runId, result, row: rows[0], sdkLog };
  }

  it('slack: delivered on the third attempt (503, reset, 200); the outcome is in the result and the executed row', async () => {
    const r = await receiver([{ status: 503 }, 'reset', { status: 200 }]);
    try {
      const plan = escalationPlan('owner alive? password=hunter2 <!channel>');
      const { workflowId, runId, result, row, sdkLog } = await escalate(
        { escalationWebhookUrl: r.url, escalationWebhookFormat: 'slack' },
        plan,
      );
      expect(result).toMatchObject({
        action: 'escalate_to_human',
        outcome: 'done',
        details: { logged: true, webhook: 'delivered', format: 'slack', attempts: 3, status: 200 },
      });
      expect((result.details.tries as { status?: number; error?: string }[]).map((x) => x.status ?? 'error')).toEqual([
        503,
        'error',
        200,
      ]);
      expect(row).toMatchObject({
        outcome: 'done',
        params: { result: { webhook: 'delivered', attempts: 3, status: 200, format: 'slack' } },
      });
      expect(r.received).toHaveLength(3);
      const body = r.received[2]!.body as SlackBody;
      expect(Object.keys(body).sort()).toEqual(['blocks', 'text']);
      const shown = JSON.stringify(body.blocks);
      expect(shown).toContain('*Severity*\\nwarning');
      expect(shown).toContain('*Target*\\nworker-7');
      // The healing ended escalated: the show command, no approve or reject command (nothing waits for one).
      expect(shown).toContain(`selfheal show ${workflowId}`);
      expect(shown).toContain('nothing waits for approval');
      expect(shown).not.toContain('selfheal approve');
      expect(shown).toContain(`http://127.0.0.1:8233/namespaces/selfheal-ns/workflows/${workflowId}/${runId}/history`);
      expect(shown).toContain('&lt;!channel&gt;');
      for (const req of r.received) {
        expect(req.raw).not.toContain('hunter2');
        expect(req.raw).not.toContain('tok-deadbeef');
        expect(req.raw).not.toContain('<!channel>');
      }
      // The webhook URL is a secret: not in the result, not in the audit row.
      expect(JSON.stringify(result)).not.toContain('XXXXsecretXXXX');
      expect(JSON.stringify(row)).not.toContain('XXXXsecretXXXX');
      // Each attempt is logged through the activity logger, so the line names the run.
      const attempts = sdkLog.filter((l) => /escalation webhook/.test(l.message));
      expect(attempts.map((l): unknown[] => [l.level, l.meta?.webhookAttempt, l.meta?.attempt])).toEqual([
        ['WARN', 1, 1],
        ['WARN', 2, 1],
        ['INFO', 3, 1],
      ]);
      for (const l of attempts) expect(l.meta).toMatchObject({ workflowId, workflowRunId: runId });
    } finally {
      await r.close();
    }
  });

  it('json: the documented object with severity and evidence from the detected row; a 400 is partial, not retried', async () => {
    const r = await receiver([{ status: 400 }, { status: 200 }]);
    try {
      const plan = escalationPlan('refused by policy: container not on the allow list');
      const { workflowId, runId, result, row } = await escalate({ escalationWebhookUrl: r.url }, plan);
      expect(result).toMatchObject({
        outcome: 'partial',
        details: { webhook: 'failed', format: 'json', attempts: 1, status: 400, error: 'HTTP 400' },
      });
      expect(row).toMatchObject({ outcome: 'partial', params: { result: { webhook: 'failed', attempts: 1 } } });
      expect(r.received).toHaveLength(1);
      const body = r.received[0]!.body as EscalationJson;
      expect(body).toMatchObject({
        schema: ESCALATION_SCHEMA,
        event: 'escalation',
        workflowId,
        runId,
        namespace: 'selfheal-ns',
        anomalyType: 'stale_locks',
        target: 'worker-7',
        severity: 'warning',
        summary: '2 locks held by worker-7, which has no heartbeat',
        reason: 'refused by policy: container not on the allow list',
        plan,
        evidence: { locks: [{ documentId: '41', owner: 'worker-7', token: '[REDACTED]' }], count: 2 },
        commands: { approve: null, reject: null, show: `selfheal show ${workflowId}` },
        webUiUrl: `http://127.0.0.1:8233/namespaces/selfheal-ns/workflows/${workflowId}/${runId}/history`,
      });
      expect(body.text).toContain('selfheal needs a human: stale_locks on worker-7 (warning)');
      expect(typeof body.at).toBe('number');
    } finally {
      await r.close();
    }
  });
});
