/**
 * Alertmanager's webhook and approvals over HTTP, against `selfheal up --no-pipeline` (its HTTP server on
 * METRICS_PORT), the run's Temporal dev server, Postgres, Redis and Docker: an Alertmanager v4 notification (the
 * fixture, in the shape of Alertmanager's webhook_config documentation) starts the healing the real `temporal workflow
 * list` shows; the same alert again signals it; a resolved one is recorded on it; a bad body, an unknown type or a
 * missing token start nothing. Auto-fix is off, so the healing (a restart of the alert's container) waits for
 * approval: an HTTP decision for another plan is a 409 that changes nothing, the right one lets it proceed.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { signApproval } from '../../activities/approval';
import { findTemporalCli } from '../../starter/temporal-local';
import { healingWorkflowId, type HealingStatus } from '../../workflows/definitions';
import { uniqueId, waitFor } from '../helpers/env';
import { startStack, type Stack } from '../helpers/stack';
import { healingStatus } from '../helpers/temporal';

const WEBHOOK_TOKEN = 'am-token-0123456789abcdef';
const APPROVAL_SECRET = 'approval-secret-0123456789';
const PUBLIC_URL = 'https://selfheal.example.org';
const FIXTURE = path.join(__dirname, '../fixtures/alertmanager/firing-v4.json');

type Payload = Record<string, unknown> & { alerts: Record<string, unknown>[] };

/** The documented v4 payload, its one alert about `target` (type `type`, status `status`). */
function notification(
  target: string,
  over: { status?: 'firing' | 'resolved'; type?: string; fingerprint?: string } = {},
) {
  const body = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Payload;
  const status = over.status ?? 'firing';
  const alert = body.alerts[0]!;
  const labels = {
    ...(alert.labels as Record<string, string>),
    selfheal_anomaly: over.type ?? 'unhealthy_container',
    selfheal_target: target,
    instance: `${target}:9100`,
  };
  body.status = status;
  body.commonLabels = labels;
  body.alerts = [
    {
      ...alert,
      status,
      labels,
      fingerprint: over.fingerprint ?? alert.fingerprint,
      ...(status === 'resolved' ? { endsAt: new Date().toISOString() } : {}),
    },
  ];
  return body;
}

describe('Alertmanager receiver and approvals over HTTP', () => {
  let s: Stack;
  let base: string;
  const temporal = findTemporalCli()!;

  function post(p: string, body: unknown, headers: Record<string, string> = {}) {
    return fetch(`${base}${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  }
  const webhook = (body: unknown, token = WEBHOOK_TOKEN) =>
    post('/webhooks/alertmanager', body, { authorization: `Bearer ${token}` });

  /** The real `temporal workflow list`: the healings of `target`, as the CLI sees them. */
  function listed(target: string): { execution: { workflowId: string; runId: string } }[] {
    const r = spawnSync(
      temporal,
      [
        'workflow',
        'list',
        '--address',
        inject('temporalAddress'),
        '--namespace',
        s.ns,
        '--query',
        `WorkflowType='healingWorkflow' AND HealTarget='${target}'`,
        '-o',
        'json',
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.trim() ? (JSON.parse(r.stdout) as { execution: { workflowId: string; runId: string } }[]) : [];
  }

  async function awaitingApproval(id: string): Promise<HealingStatus> {
    return waitFor(
      async () => {
        const st = await healingStatus(s.client, id);
        return st?.phase === 'awaiting_approval' ? st : undefined;
      },
      { timeoutMs: 60_000, what: `${id} awaiting approval` },
    );
  }

  async function stepsOf(id: string): Promise<string[]> {
    const { rows } = await s.t.pool.query<{ step: string }>(
      'SELECT step FROM healing_log WHERE workflow_id = $1 ORDER BY id',
      [id],
    );
    return rows.map((r) => r.step);
  }

  beforeAll(async () => {
    s = await startStack({
      // The LLM is down: plans are the runbook's (a restart of the alert's container, confidence 0.8).
      ollama: { replies: [{ kind: 'status', status: 500 }] },
      receiver: true,
      // Two real worker containers of one stage: a restart needs a container a cycle has seen, and one of two
      // healthy workers may be restarted (with approval).
      pipeline: {
        work: { minMs: 5, maxMs: 15 },
        workers: [{ stage: 'extract', kind: 'container', count: 2 }],
      },
      env: (p) => ({
        OLLAMA_HOST: p.ollama.url,
        HEALTH_TARGETS: p.runner!.healthTargets(),
        AUTO_FIX_ENABLED: 'false',
        CONTAINER_ALLOWLIST: 'pipeline-*',
        VERIFY_DELAY: '1',
        // The first healing's permit (it ended before acting) must not make the second one back off.
        RESTART_COOLDOWN: '0',
        APPROVERS: 'alice,bob',
        APPROVAL_SECRET,
        WEBHOOK_TOKEN,
        PUBLIC_URL,
        ESCALATION_WEBHOOK_URL: p.receiver!.url,
      }),
    });
    base = s.selfheal.metricsUrl;
  }, 180_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('a firing alert starts the healing `temporal workflow list` shows; again, it signals it; resolved, it is recorded', async () => {
    const target = s.workers[1]!.container!;
    const id = healingWorkflowId('unhealthy_container', target);
    const body = notification(target);

    const res = await webhook(body);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      receiver: 'selfheal',
      alerts: [{ fingerprint: '1a30ba71cca2921f', workflowId: id, firing: 'started' }],
    });
    const rows = await waitFor(() => (listed(target).length > 0 ? listed(target) : undefined), {
      what: `${id} in temporal workflow list`,
    });
    expect(rows.map((r) => r.execution.workflowId)).toEqual([id]);

    const st = await awaitingApproval(id);
    expect(st.anomaly).toMatchObject({
      type: 'unhealthy_container',
      target,
      severity: 'critical',
      fingerprint: `unhealthy_container:${target}`,
      summary: 'Worker pipeline-extract-1 is down',
      evidence: {
        source: 'alertmanager',
        alertname: 'PipelineWorkerDown',
        labels: (body.alerts[0] as { labels: Record<string, string> }).labels,
        annotations: (body.alerts[0] as { annotations: Record<string, string> }).annotations,
        fingerprint: '1a30ba71cca2921f',
        startsAt: body.alerts[0]!.startsAt,
      },
    });
    expect(st.plan).toMatchObject({ action: 'restart_worker', params: { container: target } });

    // Alertmanager repeats it: no second workflow, the open one is told.
    const again = await webhook(body);
    expect(await again.json()).toMatchObject({ alerts: [{ workflowId: id, firing: 'signalled' }] });
    await waitFor(async () => (await healingStatus(s.client, id))?.seen === 2, { what: `${id} seen twice` });
    expect(listed(target)).toHaveLength(1);

    // Resolved: recorded on the open run, which goes on waiting for its decision.
    const resolved = await webhook(notification(target, { status: 'resolved' }));
    expect(await resolved.json()).toMatchObject({ alerts: [{ workflowId: id, resolved: 'recorded' }] });
    const after = await waitFor(
      async () => {
        const x = await healingStatus(s.client, id);
        return x?.resolved ? x : undefined;
      },
      { what: `${id} recording the resolution` },
    );
    expect(after.resolved).toMatchObject({ fingerprint: '1a30ba71cca2921f', startsAt: body.alerts[0]!.startsAt });
    expect(after.phase).toBe('awaiting_approval');
    expect(after.history.at(-1)?.note).toBe('alert 1a30ba71cca2921f resolved in Alertmanager');

    // The approval notice links to the healing on selfheal's HTTP server and to its decision endpoints.
    const notice = await waitFor(
      () => s.receiver!.bodies.find((b) => b.workflowId === id && b.event === 'approval_requested'),
      { what: `the approval notice of ${id}` },
    );
    expect(notice.url).toBe(`${PUBLIC_URL}/healings/${id}`);
    expect(notice.endpoints).toEqual({
      approve: `${PUBLIC_URL}/healings/${id}/approve`,
      reject: `${PUBLIC_URL}/healings/${id}/reject`,
    });

    // GET /healings/{id}: the status the query answers.
    const shown = await fetch(`${base}/healings/${id}`);
    expect(shown.status).toBe(200);
    expect(await shown.json()).toMatchObject({
      workflowId: id,
      status: 'RUNNING',
      healing: { phase: 'awaiting_approval' },
    });

    // A resolved alert with no open healing is answered, and starts nothing.
    const ghost = `pipeline-am-${uniqueId()}`;
    const none = await webhook(notification(ghost, { status: 'resolved' }));
    expect(none.status).toBe(200);
    expect(await none.json()).toMatchObject({ alerts: [{ resolved: 'no open healing' }] });
    expect(listed(ghost)).toEqual([]);
    await s.client.workflow.getHandle(id).terminate('test done');
  });

  it('bad JSON is a 400, an unknown type a 422, a missing or wrong token a 401: nothing starts', async () => {
    const target = `pipeline-am-${uniqueId()}`;
    const id = healingWorkflowId('unhealthy_container', target);
    const good = JSON.stringify(notification(target));

    const broken = await webhook(good.slice(0, -7));
    expect(broken.status).toBe(400);
    const error = ((await broken.json()) as { error: string }).error;
    expect(error).toMatch(/^bad JSON: /);
    expect(error).not.toContain('\n');

    const v3 = await webhook({ ...notification(target), version: '3' });
    expect(v3.status).toBe(400);
    expect(await v3.json()).toEqual({ error: 'version: expected version "4" (Alertmanager webhook payload)' });

    const text = await post('/webhooks/alertmanager', good, {
      authorization: `Bearer ${WEBHOOK_TOKEN}`,
      'content-type': 'text/plain',
    });
    expect(text.status).toBe(415);

    // One good alert and one of a type selfheal does not know: neither starts.
    const mixed = notification(target);
    mixed.alerts.push(
      notification(`pipeline-am-${uniqueId()}`, { type: 'disk_full', fingerprint: 'ffff0000' }).alerts[0]!,
    );
    const unknown = await webhook(mixed);
    expect(unknown.status).toBe(422);
    expect(await unknown.json()).toEqual({ error: 'alert ffff0000: unknown anomaly type "disk_full"' });

    const noToken = await post('/webhooks/alertmanager', good);
    expect(noToken.status).toBe(401);
    const wrong = await webhook(good, 'not-the-token-0123456789');
    expect(wrong.status).toBe(401);

    const big = await webhook(JSON.stringify({ ...notification(target), pad: 'x'.repeat(1_100_000) }));
    expect(big.status).toBe(413);

    expect(listed(target)).toEqual([]);
    await expect(s.client.workflow.getHandle(id).describe()).rejects.toThrow();
  });

  it('HTTP approve: another plan is a 409 that acts on nothing; the right plan lets the healing proceed; a signed reject ends the next', async () => {
    const target = s.workers[0]!.container!;
    const id = healingWorkflowId('unhealthy_container', target);
    expect((await webhook(notification(target))).status).toBe(200);
    const st = await awaitingApproval(id);
    const planId = st.plan!.id;
    const bearer = { authorization: `Bearer ${APPROVAL_SECRET}` };

    const stale = await post(`/healings/${id}/approve`, { by: 'alice', planId: `${planId}x` }, bearer);
    expect(stale.status).toBe(409);
    expect(((await stale.json()) as { error: string }).error).toMatch(/is not the current plan/);

    const noAuth = await post(`/healings/${id}/approve`, { by: 'alice', planId });
    expect(noAuth.status).toBe(401);
    const notApprover = await post(`/healings/${id}/approve`, { by: 'mallory', planId }, bearer);
    expect(notApprover.status).toBe(403);
    const noPlan = await post(`/healings/${id}/approve`, { by: 'alice' }, bearer);
    expect(noPlan.status).toBe(400);
    const unknown = await post(
      `/healings/heal-unhealthy_container-nothing-${uniqueId()}/approve`,
      { by: 'alice', planId },
      bearer,
    );
    expect(unknown.status).toBe(404);

    // Nothing acted: still waiting, no decision, nothing executed.
    const still = await healingStatus(s.client, id);
    expect(still?.phase).toBe('awaiting_approval');
    expect(still?.decision).toBeNull();
    expect(await stepsOf(id)).not.toContain('executed');
    expect(await stepsOf(id)).not.toContain('approved');

    const ok = await post(`/healings/${id}/approve`, { by: 'alice', planId, reason: 'on call' }, bearer);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ workflowId: id, planId, by: 'alice', decision: 'approve' });

    const result = (await s.client.workflow.getHandle(id).result()) as HealingStatus;
    expect(result.decision).toMatchObject({ decision: 'approve', by: 'alice', planId, via: 'update' });
    // The container the alert named answers its health check: the healing ends healed before acting on it.
    expect(result.phase).toBe('healed');
    expect(await stepsOf(id)).toContain('approved');

    // Closed: a late decision is a 409; the same alert repeated does not start the healing again.
    const late = await post(`/healings/${id}/approve`, { by: 'alice', planId }, bearer);
    expect(late.status).toBe(409);
    const repeat = await webhook(notification(target));
    expect(await repeat.json()).toMatchObject({ alerts: [{ workflowId: id, firing: 'already handled' }] });
    expect(listed(target)).toHaveLength(1);
    // A new occurrence of the alert (another start) is a new healing.
    const next = notification(target);
    next.alerts[0]!.startsAt = new Date().toISOString();
    expect(await (await webhook(next)).json()).toMatchObject({ alerts: [{ workflowId: id, firing: 'started' }] });
    await waitFor(() => listed(target).length === 2, { what: `a second run of ${id}` });

    // Rejected with a signature the caller made (as the CLI does), no bearer; a forged one is refused.
    const second = await awaitingApproval(id);
    const plan2 = second.plan!.id;
    const forged = await post(`/healings/${id}/reject`, {
      by: 'bob',
      planId: plan2,
      reason: 'not now',
      signature: signApproval('another-secret-0123456789', {
        workflowId: id,
        planId: plan2,
        decision: 'reject',
        by: 'bob',
      }),
    });
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as { error: string }).error).toMatch(/signature refused/);
    const signature = signApproval(APPROVAL_SECRET, { workflowId: id, planId: plan2, decision: 'reject', by: 'bob' });
    const noReason = await post(`/healings/${id}/reject`, { by: 'bob', planId: plan2, signature });
    expect(noReason.status).toBe(400);
    const rejected = await post(`/healings/${id}/reject`, { by: 'bob', planId: plan2, reason: 'not now', signature });
    expect(rejected.status).toBe(200);
    expect(await rejected.json()).toEqual({ workflowId: id, planId: plan2, by: 'bob', decision: 'reject' });
    const end = (await s.client.workflow.getHandle(id).result()) as HealingStatus;
    expect(end.phase).toBe('rejected');
    expect(end.decision).toMatchObject({ decision: 'reject', by: 'bob', reason: 'not now', via: 'update' });
  });
});
