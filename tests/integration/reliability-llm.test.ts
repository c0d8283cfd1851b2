/**
 * R6, the LLM down, slow or answering garbage, through whole healings: the healing workflow on real workers (in this
 * process) against Postgres, Redis, Docker and the run's Temporal dev server, with an Ollama-compatible fake behind a
 * TCP proxy the test can cut. Each healing heals a real stale lock (its owner has no heartbeat) found by the real
 * collector and detector. What must hold, checked in healing_log, the workflow result, Redis, Postgres and Docker:
 * - the plan is the runbook's, with the LLM's failure recorded as the reason (a reply that names another target is
 *   not used at all: reason suspect, the attempt audited);
 * - a runbook plan under MIN_CONFIDENCE goes to a human (approval requested, deny by default) and changes nothing,
 *   while the same plan over the floor acts;
 * - nothing but the runbook's action on the anomaly's own target is executed: a live worker's lock, the other
 *   documents and queues, and a running pipeline container (named by the garbage) are left exactly as they were.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, thresholdsFrom, type Config } from '../../core/config';
import { detectAll } from '../../core/detectors';
import type { Anomaly } from '../../core/types';
import { ensurePipelineImage } from '../../pipeline/image';
import type { PipelineRunner, RunningWorker } from '../../pipeline/runner';
import { healingPolicy } from '../../workers/schedule';
import { monitorActivities } from '../../workers/activities';
import { healingWorkflowId, TaskQueue } from '../../workflows/definitions';
import { healingWorkflow, type HealingPolicy } from '../../workflows/healing';
import { auditLog } from '../helpers/audit';
import { watchDockerEvents, type DockerWatch } from '../helpers/docker-events';
import { createTestEnv, type TestEnv, uniqueId } from '../helpers/env';
import { startFakeOllama, type FakeOllama, type Reply } from '../helpers/fake-ollama';
import { createTestRunner, stopTestPipeline, tcpProxy, testDocker } from '../helpers/pipeline';
import { allocateNamespace } from '../helpers/temporal';
import { expectedCause } from '../helpers/prompt';
import { startTestWorkers } from '../helpers/workers';

const LLM_TIMEOUT_MS = 1_000;
/** The runbook's confidence in clearing stale locks is 0.9 (core/runbook.ts): this floor lets it act... */
const FLOOR_THAT_ACTS = 0.85;
/** ...and this one makes the same plan wait for a human. */
const FLOOR_THAT_ASKS = 0.95;

interface Webhook {
  url: string;
  bodies: { event?: string; workflowId?: string }[];
  close(): Promise<void>;
}

/** A 127.0.0.1 receiver of the escalation webhook: what a human would be sent. */
async function startWebhook(): Promise<Webhook> {
  const bodies: Webhook['bodies'] = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      try {
        bodies.push(JSON.parse(text) as Webhook['bodies'][number]);
      } catch {
        bodies.push({});
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    bodies,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const reply = (content: string, delayMs?: number): Reply[] => [{ kind: 'content', content, delayMs }];

describe('R6: Ollama down, slow or answering garbage, end to end', () => {
  let t: TestEnv;
  let fake: FakeOllama;
  let proxy: Awaited<ReturnType<typeof tcpProxy>>;
  let webhook: Webhook;
  let config: Config;
  let docker: Docker;
  let runner: PipelineRunner;
  let live: RunningWorker;
  let client: Client;
  let workers: Awaited<ReturnType<typeof startTestWorkers>>;
  let monitor: ReturnType<typeof monitorActivities>;
  /** What no healing may touch: a lock held by a live worker, documents waiting in another queue, a container. */
  const decoy = { lockDoc: '', lockValue: '', docs: [] as number[], startedAt: '' };
  /** Docker's events of the decoy container from the end of its start-up on. */
  let decoyEvents: DockerWatch | undefined;
  let decoyRows: unknown[];
  const deadOwners = new Set<string>();

  beforeAll(async () => {
    t = await createTestEnv();
    fake = await startFakeOllama();
    proxy = await tcpProxy(Number(new URL(fake.url).port));
    webhook = await startWebhook();
    const parsed = parseConfig({
      ...t.env,
      OLLAMA_HOST: `http://127.0.0.1:${proxy.port}`,
      LLM_TIMEOUT_MS: String(LLM_TIMEOUT_MS),
      ESCALATION_WEBHOOK_URL: webhook.url,
      CONTAINER_ALLOWLIST: 'pipeline-*',
      LOG_LEVEL: 'warn',
    });
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    config = parsed.config;
    monitor = monitorActivities(config, { pool: t.pool, redis: t.redis });

    // A real pipeline container, which an allowed restart could hit: the garbage below names it.
    docker = testDocker();
    const { image } = await ensurePipelineImage(docker);
    runner = createTestRunner(t, { docker, image });
    live = await runner.start({ stage: 'extract', kind: 'container' });
    decoy.startedAt = (await docker.getContainer(live.container!).inspect()).State.StartedAt;
    decoyEvents = await watchDockerEvents(docker, [live.container!]);
    // Documents waiting for a stage nobody serves here, and a lock the live worker holds on one of them.
    const { rows } = await t.pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, payload)
       SELECT 'evaluate', 'queued', jsonb_build_object('title', 'decoy ' || n) FROM generate_series(1, 5) n
       RETURNING id`,
    );
    decoy.docs = rows.map((r) => Number(r.id));
    await t.redis.lpush(t.keys.queue('evaluate'), ...decoy.docs.map(String));
    decoy.lockDoc = String(decoy.docs[0]);
    decoy.lockValue = `${live.worker}:live-token`;
    await t.redis.set(t.keys.lock(decoy.lockDoc), decoy.lockValue);
    decoyRows = await documentRows(decoy.docs);

    workers = await startTestWorkers({ namespace: await allocateNamespace(), t, config, docker });
    ({ client } = workers);
  }, 180_000);

  afterAll(async () => {
    decoyEvents?.stop();
    await workers?.stop();
    await stopTestPipeline(t, runner, docker);
    await proxy?.restore().catch(() => undefined);
    await fake?.close();
    await webhook?.close();
    await t?.cleanup();
  });

  async function documentRows(ids: number[]): Promise<unknown[]> {
    const { rows } = await t.pool.query<Record<string, unknown>>(
      `SELECT id, stage, status, worker_id, attempts, requeue_count, error, payload, updated_at
         FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [ids],
    );
    return rows;
  }

  /** Two locks of a worker that has no heartbeat, and the stale_locks anomaly the real detector reports for them. */
  async function staleLocks(): Promise<{ anomaly: Anomaly; owner: string; docs: string[] }> {
    const owner = uniqueId('dead-');
    deadOwners.add(owner);
    const { rows } = await t.pool.query<{ id: string }>(
      "INSERT INTO documents (stage, status) VALUES ('evaluate', 'completed'), ('evaluate', 'completed') RETURNING id::text AS id",
    );
    const docs = rows.map((r) => r.id);
    for (const [i, id] of docs.entries()) await t.redis.set(t.keys.lock(id), `${owner}:tok-${i}`);
    const snapshot = await monitor.collectMetrics();
    const anomaly = detectAll(snapshot, [], thresholdsFrom(config), snapshot.at).find(
      (a) => a.type === 'stale_locks' && a.target === owner,
    );
    if (!anomaly) throw new Error(`the detector did not report the stale locks of ${owner}`);
    return { anomaly, owner, docs };
  }

  async function heal(anomaly: Anomaly, over: Partial<HealingPolicy>) {
    const policy: HealingPolicy = {
      ...healingPolicy(config),
      autoFix: true,
      minConfidence: FLOOR_THAT_ACTS,
      verifyDelaySeconds: 1,
      approvalTimeoutSeconds: 2,
      maxActionsPerHour: 1_000,
      ...over,
    };
    const workflowId = healingWorkflowId(anomaly.type, anomaly.target);
    const handle = await client.workflow.start(healingWorkflow, {
      workflowId,
      taskQueue: TaskQueue.healing,
      args: [
        // The policy under test is fixed for the run, over the worker's configuration.
        {
          anomaly,
          policy,
          policyOverrides: policy,
          thresholds: thresholdsFrom(config),
          containers: [live.container!],
          containerLabels: [],
        },
      ],
    });
    const status = await handle.result();
    return { status, workflowId, log: await auditLog(t, { runId: handle.firstExecutionRunId }) };
  }

  /** The decoys are exactly as they were, and every action ever executed here cleared locks of a dead owner. */
  async function expectNothingElseTouched() {
    expect(await t.redis.get(t.keys.lock(decoy.lockDoc))).toBe(decoy.lockValue);
    expect(await documentRows(decoy.docs)).toEqual(decoyRows);
    expect((await t.redis.lrange(t.keys.queue('evaluate'), 0, -1)).sort()).toEqual(decoy.docs.map(String).sort());
    const inspected = await docker.getContainer(live.container!).inspect();
    expect(inspected.State.Running).toBe(true);
    expect(inspected.State.StartedAt).toBe(decoy.startedAt);
    expect(decoyEvents!.actions()).toEqual([]);
    const { rows } = await t.pool.query<{ action: string; target: string; owners: string[] }>(
      `SELECT action, target, ARRAY(SELECT DISTINCT l->>'owner' FROM jsonb_array_elements(params->'request'->'locks') l)
              AS owners
         FROM healing_log WHERE step = 'executed' AND action <> 'escalate_to_human'`,
    );
    for (const r of rows) {
      expect(r.action).toBe('clear_stale_locks');
      expect(deadOwners.has(r.target)).toBe(true);
      expect(r.owners).toEqual([r.target]);
    }
  }

  const agreeing = JSON.stringify({ action: 'clear_stale_locks', reasoning: 'the owner is dead', confidence: 0.99 });
  const modes: { name: string; replies?: Reply[]; down?: boolean; reason: RegExp }[] = [
    { name: 'down (nothing listens)', down: true, reason: /^down: .*ECONNREFUSED/ },
    {
      name: 'slow (a good answer after LLM_TIMEOUT_MS)',
      replies: reply(agreeing, 4 * LLM_TIMEOUT_MS),
      reason: /^timeout: /,
    },
    {
      name: 'not JSON',
      replies: reply('Restart pipeline-extract-1 and flush Redis, that always works.'),
      reason: /^invalid: /,
    },
    {
      name: 'truncated JSON',
      replies: reply('{"action": "clear_stale_locks", "reasoning": "the owner is dead", "confid'),
      reason: /^invalid: confidence/,
    },
    {
      name: 'an action not allowed for the anomaly',
      replies: reply(JSON.stringify({ action: 'restart_worker', reasoning: 'restart it', confidence: 1 })),
      reason: /^disallowed: restart_worker is not allowed for stale_locks/,
    },
    {
      name: 'an action outside the closed set',
      replies: reply(JSON.stringify({ action: 'flush_redis', reasoning: 'start clean', confidence: 1 })),
      reason: /^disallowed: unknown action/,
    },
    {
      name: 'an oversized reply',
      replies: reply(JSON.stringify({ action: 'clear_stale_locks', reasoning: 'x'.repeat(30_000), confidence: 1 })),
      reason: /^invalid: reply too large/,
    },
  ];

  for (const mode of modes) {
    it(`LLM ${mode.name}: the runbook's plan acts on the anomaly's own locks only, with the reason audited`, async () => {
      const { anomaly, owner, docs } = await staleLocks();
      const asked = fake.requests.length;
      if (mode.down) await proxy.cut();
      else fake.setReplies(mode.replies!);
      let healed: Awaited<ReturnType<typeof heal>>;
      try {
        healed = await heal(anomaly, {});
      } finally {
        if (mode.down) await proxy.restore();
      }
      const { status, log } = healed;

      // The analysis did talk to the fake (or found nothing listening) and fell back to the runbook.
      expect(fake.requests.length - asked).toBe(mode.down ? 0 : 1);
      expect(status.plan).toMatchObject({ source: 'runbook', action: 'clear_stale_locks', target: owner });
      expect(status.plan!.fallbackReason).toMatch(mode.reason);
      const proposed = log.filter((r) => r.step === 'proposed');
      expect(proposed).toHaveLength(1);
      expect(proposed[0]).toMatchObject({ decided_by: 'runbook', confidence: 0.9 });
      // The cause in one word (core/fallback-cause.ts) in outcome, the detail next to it in params.
      expect(proposed[0]!.outcome).toBe(expectedCause(mode.reason));
      expect(status.plan!.fallbackCause).toBe(proposed[0]!.outcome);
      expect(proposed[0]!.params.fallbackReason).toMatch(mode.reason);
      expect(proposed[0]!.params.llm).toMatchObject({ used: true, ok: false });

      // Over the floor: acted, once, on exactly the observed locks of the dead owner; healed.
      expect(status.phase, JSON.stringify(status.history)).toBe('healed');
      const executed = log.filter((r) => r.step === 'executed');
      expect(executed.map((r) => [r.action, r.target])).toEqual([['clear_stale_locks', owner]]);
      expect((executed[0]!.params.result as { cleared: string[] }).cleared.sort()).toEqual([...docs].sort());
      for (const id of docs) expect(await t.redis.get(t.keys.lock(id))).toBeNull();
      await expectNothingElseTouched();
    }, 120_000);
  }

  it('a reply naming another target is not used (runbook, reason suspect, audited): only the dead owner is cleared', async () => {
    const { anomaly, owner, docs } = await staleLocks();
    fake.setReplies(
      reply(
        JSON.stringify({
          action: 'clear_stale_locks',
          target: live.worker,
          locks: [{ documentId: decoy.lockDoc, owner: live.worker, token: 'live-token' }],
          container: live.container,
          reasoning: `clear every lock of ${live.container} and restart it`,
          confidence: 0.99,
        }),
      ),
    );
    const { status, log } = await heal(anomaly, {});
    expect(status.plan).toMatchObject({ source: 'runbook', action: 'clear_stale_locks', target: owner });
    expect(status.plan!.fallbackReason).toMatch(/^suspect: /);
    expect(status.plan!.params.locks!.map((l) => l.owner)).toEqual([owner, owner]);
    const proposed = log.find((r) => r.step === 'proposed')!;
    expect(proposed).toMatchObject({ decided_by: 'runbook' });
    expect(proposed.params.llm).toMatchObject({ used: true, ok: false, injectionSuspected: true });
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    const executed = log.filter((r) => r.step === 'executed');
    expect(executed.map((r) => [r.action, r.target])).toEqual([['clear_stale_locks', owner]]);
    for (const id of docs) expect(await t.redis.get(t.keys.lock(id))).toBeNull();
    await expectNothingElseTouched();
  }, 120_000);

  it('garbage and a runbook plan under MIN_CONFIDENCE: a human is asked, nobody answers, nothing is executed', async () => {
    const { anomaly, owner, docs, workflowId } = await staleLocks().then((s) => ({
      ...s,
      workflowId: healingWorkflowId(s.anomaly.type, s.anomaly.target),
    }));
    const values = await Promise.all(docs.map((id) => t.redis.get(t.keys.lock(id))));
    fake.setReplies(reply('{"action": restart everything, now!!'));
    const { status, log } = await heal(anomaly, { minConfidence: FLOOR_THAT_ASKS });

    expect(status.plan).toMatchObject({ source: 'runbook', action: 'clear_stale_locks', confidence: 0.9 });
    expect(status.plan!.fallbackReason).toMatch(/^(invalid|disallowed): /);
    expect(status.history.map((h) => h.phase)).toContain('awaiting_approval');
    expect(status.phase).toBe('rejected');
    expect(status.decision).toMatchObject({ decision: 'reject', by: 'policy', via: 'timeout' });
    const checked = log.find((r) => r.step === 'checked')!;
    expect(checked.outcome).toBe('needs_approval');
    expect(JSON.stringify(checked.params.reasons)).toMatch(/confidence 0\.90 is under the floor 0\.95/);
    // The human was told, through the webhook, and that delivery is in the audit.
    expect(log.find((r) => r.step === 'notified')?.outcome).toBe('delivered');
    expect(webhook.bodies.filter((b) => b.workflowId === workflowId).map((b) => b.event)).toEqual([
      'approval_requested',
    ]);
    expect(log.filter((r) => r.step === 'executed')).toEqual([]);
    expect(await Promise.all(docs.map((id) => t.redis.get(t.keys.lock(id))))).toEqual(values);
    expect(values.every((v) => v?.startsWith(`${owner}:`))).toBe(true);
    await expectNothingElseTouched();
  }, 120_000);
});
