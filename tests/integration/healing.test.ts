/**
 * Healing end to end against the real pipeline, Postgres, Redis, Docker and a Temporal dev server, with selfheal
 * running as `selfheal up --no-pipeline` and faults injected with `selfheal chaos`:
 * - auto-fix on: fault, detection, healing, verified healed, with the time each took, per seed fault class;
 * - escalate-only: approval through `selfheal approve`, `temporal workflow signal` and
 *   `temporal workflow update execute` (the real binary), and rejection through `selfheal reject`.
 */
import { execFileSync } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { generateDocuments } from '../../pipeline/generator';
import { ensurePipelineImage } from '../../pipeline/image';
import type { RunningWorker } from '../../pipeline/runner';
import { findTemporalCli } from '../../starter/temporal-local';
import { healingWorkflowId, statusQuery } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { createTestEnv, waitFor } from '../helpers/env';
import { startFakeOllama } from '../helpers/fake-ollama';
import { createTestRunner, stopTestPipeline, testDocker } from '../helpers/pipeline';
import { startSelfheal } from '../helpers/selfheal';
import { allocateNamespace, connectClient, recordHistories } from '../helpers/temporal';

/** The LLM is down for these tests: every plan is the runbook's (the analyzer has its own tests). */
async function setup(autoFix: boolean) {
  const t = await createTestEnv();
  const ns = await allocateNamespace();
  const ollama = await startFakeOllama({ replies: [{ kind: 'status', status: 500 }] });
  const docker = testDocker();
  const { image } = await ensurePipelineImage(docker);
  const runner = createTestRunner(t, { docker, image, work: { minMs: 5, maxMs: 15 } });
  const workers = await runner.startMany([
    { stage: 'extract', kind: 'container', count: 2 },
    { stage: 'evaluate', count: 1 },
  ]);
  const selfheal = await startSelfheal(t, ns, {
    OLLAMA_HOST: ollama.url,
    HEALTH_TARGETS: runner.healthTargets(),
    AUTO_FIX_ENABLED: String(autoFix),
    MIN_CONFIDENCE: '0.5',
    VERIFY_DELAY: '3',
    RESTART_COOLDOWN: '0',
    MAX_ACTIONS_PER_HOUR: '100',
    CONTAINER_ALLOWLIST: 'pipeline-*',
  });
  const { client, close } = await connectClient(ns);
  return {
    t,
    ns,
    ollama,
    docker,
    runner,
    workers,
    selfheal,
    client,
    async teardown() {
      await recordHistories(client);
      await selfheal.stop();
      await close();
      await stopTestPipeline(t, runner, docker);
      await ollama.close();
      await t.cleanup();
    },
  };
}

async function result(client: Client, workflowId: string, timeoutMs = 90_000): Promise<HealingStatus> {
  const handle = await waitFor(
    () =>
      client.workflow
        .getHandle(workflowId)
        .describe()
        .then(
          () => client.workflow.getHandle(workflowId),
          () => undefined,
        ),
    {
      timeoutMs,
      what: workflowId,
    },
  );
  return (await handle.result()) as HealingStatus;
}

describe('healing end to end, auto-fix on', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  const timings: Record<string, { detectS: number; healS: number; action: string }> = {};
  beforeAll(async () => {
    s = await setup(true);
  }, 180_000);
  afterAll(async () => {
    await s?.teardown();
    console.log('fault -> detected -> verified healed (s):', timings);
  });

  async function faultToHeal(name: string, chaos: string[], type: string, target: string, action: string) {
    const r = s.selfheal.cli(['chaos', ...chaos]);
    expect(r.status, r.stderr).toBe(0);
    const injectedAt = Date.now();
    const id = healingWorkflowId(type, target);
    const status = await result(s.client, id);
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    expect(status.actions.map((a) => a.action)).toContain(action);
    const executed = await s.t.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM healing_log WHERE workflow_id = $1 AND step = 'executed' AND action = $2",
      [id, action],
    );
    expect(executed.rows[0]!.n).toBeGreaterThanOrEqual(1);
    timings[name] = {
      detectS: Number(((status.anomaly.detectedAt - injectedAt) / 1000).toFixed(1)),
      healS: Number(((status.verification!.at - injectedAt) / 1000).toFixed(1)),
      action,
    };
  }

  it('stuck documents are requeued and processed', async () => {
    await faultToHeal(
      'stuck_documents',
      ['stuck-documents', '5', 'extract'],
      'stuck_documents',
      'extract',
      'requeue_documents',
    );
    const { rows } = await s.t.pool.query<{ status: string; requeue_count: number }>(
      'SELECT status, requeue_count FROM documents WHERE requeue_count > 0',
    );
    expect(rows).toHaveLength(5);
    await waitFor(async () => {
      const r = await s.t.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM documents WHERE requeue_count > 0 AND status = 'completed'",
      );
      return r.rows[0]!.n === 5;
    });
  });

  it('a killed container is restarted through the Docker engine', async () => {
    const victim = s.workers.find((w: RunningWorker) => w.kind === 'container')!;
    const before = await s.docker.getContainer(victim.container!).inspect();
    await faultToHeal(
      'unhealthy_container',
      ['kill-worker', victim.worker],
      'unhealthy_container',
      victim.container!,
      'restart_worker',
    );
    const after = await s.docker.getContainer(victim.container!).inspect();
    expect(after.State.Running).toBe(true);
    expect(Date.parse(after.State.StartedAt)).toBeGreaterThan(Date.parse(before.State.StartedAt));
  });

  it('stale locks are cleared', async () => {
    const r = s.selfheal.cli(['chaos', 'stale-lock', '3', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const owner = (JSON.parse(r.stdout) as { owner: string }).owner;
    const status = await result(s.client, healingWorkflowId('stale_locks', owner));
    expect(status.phase).toBe('healed');
    const left = await s.t.redis.keys(`${s.t.prefix}lock:document:*`);
    for (const key of left) expect(await s.t.redis.get(key)).not.toMatch(new RegExp(`^${owner}:`));
  });

  it('documents keep flowing afterwards', async () => {
    const ids = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 50 });
    await waitFor(async () => {
      const r = await s.t.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1) AND status = 'completed'",
        [ids],
      );
      return r.rows[0]!.n === 50;
    });
  });
});

describe('healing end to end, escalate-only (auto-fix off)', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  beforeAll(async () => {
    s = await setup(false);
    // Stale locks are put on finished documents: let some finish first.
    const ids = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 20 });
    await waitFor(async () => {
      const r = await s.t.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM documents WHERE id = ANY($1) AND status = 'completed'",
        [ids],
      );
      return r.rows[0]!.n === 20;
    });
  }, 180_000);
  afterAll(async () => {
    await s?.teardown();
  });

  async function awaitingApproval(owner: string): Promise<string> {
    const id = healingWorkflowId('stale_locks', owner);
    await waitFor(
      async () => {
        const h = s.client.workflow.getHandle(id);
        const st = (await h.query(statusQuery).catch(() => undefined)) as HealingStatus | undefined;
        return st?.phase === 'awaiting_approval';
      },
      { timeoutMs: 60_000, what: `${id} awaiting approval` },
    );
    return id;
  }

  function injectStaleLock(): string {
    const r = s.selfheal.cli(['chaos', 'stale-lock', '1', '--json']);
    expect(r.status, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { owner: string }).owner;
  }

  it('approval through selfheal approve, temporal workflow signal, temporal workflow update execute; rejection through selfheal reject', async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await awaitingApproval(injectStaleLock()));
    const [viaCli, viaSignal, viaUpdate, rejected] = ids as [string, string, string, string];

    // Not awaiting approval, or no such workflow: one error line, non-zero exit.
    const missing = s.selfheal.cli(['approve', 'heal-nope-nothing', '--by', 'alice']);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);

    const ok = s.selfheal.cli(['approve', viaCli, '--by', 'alice', '--reason', 'checked the owner']);
    expect(ok.status, ok.stderr).toBe(0);

    const temporal = findTemporalCli()!;
    const common = ['--address', inject('temporalAddress'), '--namespace', s.ns];
    execFileSync(temporal, [
      'workflow',
      'signal',
      '--workflow-id',
      viaSignal,
      '--name',
      'approve',
      '--input',
      '{"by":"bob"}',
      ...common,
    ]);
    const upd = execFileSync(
      temporal,
      [
        'workflow',
        'update',
        'execute',
        '--workflow-id',
        viaUpdate,
        '--name',
        'decide',
        '--input',
        '{"decision":"approve","by":"carol"}',
        ...common,
      ],
      { encoding: 'utf8' },
    );
    expect(upd).toMatch(/approve/);
    const rej = s.selfheal.cli(['reject', rejected, '--by', 'dave', '--reason', 'owner is coming back']);
    expect(rej.status, rej.stderr).toBe(0);

    for (const [id, by, via] of [
      [viaCli, 'alice', 'update'],
      [viaSignal, 'bob', 'signal'],
      [viaUpdate, 'carol', 'update'],
    ] as const) {
      const st = await result(s.client, id);
      expect(st.phase).toBe('healed');
      expect(st.decision).toMatchObject({ decision: 'approve', by, via });
    }
    const st = await result(s.client, rejected);
    expect(st.phase).toBe('rejected');

    // Not awaiting approval any more: a clear error.
    const late = s.selfheal.cli(['approve', viaCli, '--by', 'alice']);
    expect(late.status).not.toBe(0);
    expect(late.stderr).toMatch(/not awaiting approval/);

    const audit = s.selfheal.cli(['audit', '--since', '1h', '--json']);
    const rows = JSON.parse(audit.stdout) as { workflow_id: string; step: string; decided_by: string | null }[];
    expect(
      rows
        .filter((r) => r.step === 'approved')
        .map((r) => r.decided_by)
        .sort(),
    ).toEqual(['alice', 'bob', 'carol']);
    expect(rows.filter((r) => r.step === 'executed')).toHaveLength(3);
    const healings = JSON.parse(s.selfheal.cli(['healings', '--json']).stdout) as {
      workflowId: string;
      phase: string;
    }[];
    expect(healings.find((h) => h.workflowId === rejected)?.phase).toBe('rejected');
  }, 240_000);
});
