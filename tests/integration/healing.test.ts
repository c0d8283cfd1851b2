/**
 * Healing end to end against the real pipeline, Postgres, Redis, Docker and a Temporal dev server, with selfheal
 * running as `selfheal up --no-pipeline` and faults injected with `selfheal chaos`:
 * - auto-fix on: fault, detection, healing, verified healed, with the time each took, per seed fault class;
 * - escalate-only: approval through `selfheal approve`, `temporal workflow signal` and
 *   `temporal workflow update execute` (the real binary), and rejection through `selfheal reject`.
 */
import { execFileSync } from 'node:child_process';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { generateDocuments } from '../../pipeline/generator';
import type { RunningWorker } from '../../pipeline/runner';
import { findTemporalCli } from '../../starter/temporal-local';
import { healingWorkflowId, statusQuery } from '../../workflows/definitions';
import type { HealingStatus } from '../../workflows/healing';
import { type TestEnv, waitFor } from '../helpers/env';
import { startStack } from '../helpers/stack';
import { endedRun, recordHistories } from '../helpers/temporal';
import type { WebhookReceiver } from '../helpers/webhook-receiver';

/**
 * The LLM is down for these tests: every plan is the runbook's (the analyzer has its own tests). With `receiver`,
 * escalations go to a webhook receiver.
 */
async function setup(autoFix: boolean, receiver = false) {
  const stack = await startStack({
    ollama: { replies: [{ kind: 'status', status: 500 }] },
    receiver,
    pipeline: {
      work: { minMs: 5, maxMs: 15 },
      workers: [
        { stage: 'extract', kind: 'container', count: 2 },
        { stage: 'evaluate', count: 1 },
      ],
    },
    env: (p) => ({
      OLLAMA_HOST: p.ollama.url,
      HEALTH_TARGETS: p.runner!.healthTargets(),
      AUTO_FIX_ENABLED: String(autoFix),
      // Stalled queue's runbook restart (0.6) may act; error-rate and slowdown restarts of an outlier worker (0.8)
      // would pass the default 0.8 too, and their stage-wide plans (0.5) are escalations anyway.
      MIN_CONFIDENCE: '0.6',
      VERIFY_DELAY: '3',
      RESTART_COOLDOWN: '0',
      MAX_ACTIONS_PER_HOUR: '100',
      CONTAINER_ALLOWLIST: 'pipeline-*',
      ...(p.receiver ? { ESCALATION_WEBHOOK_URL: p.receiver.url } : {}),
    }),
  });
  return {
    ...stack,
    async teardown() {
      try {
        await recordHistories(stack.client);
      } finally {
        await stack.stop();
      }
    },
  };
}

/** The result of the run of `workflowId` started at or after `since` (epoch ms): ids are reused once a run closed. */
async function result(client: Client, workflowId: string, timeoutMs = 90_000, since = 0): Promise<HealingStatus> {
  return (await endedRun(client, workflowId, { since, timeoutMs })).status;
}

/** New documents at a steady rate (40/s by default) until stopped: the rates and means need traffic. */
function startTraffic(t: TestEnv, perTick = 10, tickMs = 250) {
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      await generateDocuments({ pool: t.pool, redis: t.redis, keys: t.keys, count: perTick });
      await new Promise((r) => setTimeout(r, tickMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

const startedAt = async (docker: Docker, name: string) =>
  Date.parse((await docker.getContainer(name).inspect()).State.StartedAt);

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

  /** `chaos`: the arguments of `selfheal chaos`, or a function that injects the fault itself. */
  async function faultToHeal(
    name: string,
    chaos: string[] | (() => Promise<void>),
    type: string,
    target: string,
    action: string,
  ): Promise<HealingStatus> {
    const injectedAt = Date.now();
    if (typeof chaos === 'function') await chaos();
    else {
      const r = s.selfheal.cli(['chaos', ...chaos]);
      expect(r.status, r.stderr).toBe(0);
    }
    const id = healingWorkflowId(type, target);
    const status = await result(s.client, id, 90_000, injectedAt);
    const why = async () =>
      JSON.stringify({
        history: status.history,
        verification: status.verification,
        actions: status.actions,
        faults: await s.t.redis.hgetall(s.t.keys.pipelineFaults()),
      });
    expect(status.phase, await why()).toBe('healed');
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
    return status;
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

  describe('with traffic', () => {
    let traffic: ReturnType<typeof startTraffic>;
    const extract = () => s.workers.filter((w) => w.stage === 'extract' && w.kind === 'container');
    beforeAll(async () => {
      traffic = startTraffic(s.t);
      // Baseline: the slowdown detector needs SLOWDOWN_MIN_SAMPLES cycles of normal timings before its window.
      await new Promise((r) => setTimeout(r, 12_000));
    }, 30_000);
    afterAll(async () => {
      await traffic?.stop();
      s.selfheal.cli(['chaos', 'clear']);
    });
    // A test that failed half-way leaves its fault behind: the next one starts from a healthy pipeline all the same.
    afterEach((ctx) => {
      if (ctx.task.result?.state === 'fail') s.selfheal.cli(['chaos', 'clear']);
    });

    /** Restarted exactly the one container, by a healed workflow; its peers kept running untouched. */
    async function expectOnlyRestarted(status: HealingStatus, victim: string, before: Map<string, number>) {
      const restarts = status.actions.filter((a) => a.action === 'restart_worker');
      expect(restarts).toHaveLength(1);
      expect(status.plan?.params.container).toBe(victim);
      for (const [name, t0] of before) {
        const t1 = await startedAt(s.docker, name);
        if (name === victim) expect(t1).toBeGreaterThan(t0);
        else expect(t1).toBe(t0);
      }
    }
    const startTimes = async () =>
      new Map(
        await Promise.all(extract().map(async (w) => [w.container!, await startedAt(s.docker, w.container!)] as const)),
      );

    it('error-rate spike of one worker (its peer fine): that worker is restarted, healed', async () => {
      const [peer, victim] = extract() as [RunningWorker, RunningWorker];
      const before = await startTimes();
      const status = await faultToHeal(
        'error_rate_spike (one worker)',
        ['error-rate', 'extract', '0.9', victim.worker],
        'error_rate_spike',
        'extract',
        'restart_worker',
      );
      expect(status.anomaly.evidence.suspects).toEqual([victim.worker]);
      expect(status.plan?.confidence).toBeGreaterThanOrEqual(0.8);
      await expectOnlyRestarted(status, victim.container!, before);
      expect(peer.container).not.toBe(victim.container);
      // The fault belonged to the process: the restarted worker took it away.
      expect(await s.t.redis.hget(s.t.keys.pipelineFaults(), `error-rate@${victim.worker}`)).toBeNull();
    });

    it('processing-time anomaly of one worker (its peer fine): that worker is restarted, healed', async () => {
      const [, victim] = extract() as [RunningWorker, RunningWorker];
      const before = await startTimes();
      const status = await faultToHeal(
        'processing_time_anomaly (one worker)',
        ['slow', 'extract', '25', victim.worker],
        'processing_time_anomaly',
        'extract',
        'restart_worker',
      );
      expect(status.anomaly.evidence.suspects).toEqual([victim.worker]);
      await expectOnlyRestarted(status, victim.container!, before);
    });

    it('stalled queue (every extract worker silently hung, /health still 200): a restart gets it moving, healed; the other hung worker is found on its own and restarted', async () => {
      const [a, b] = extract() as [RunningWorker, RunningWorker];
      const before = await startTimes();
      const injectedAt = Date.now();
      // Both at the same instant (the field `selfheal chaos hang-worker <worker> silent` sets): one after the other,
      // the first would be a hung worker beside a working peer, found on its own before the queue stalls.
      const status = await faultToHeal(
        'stalled_queue (silent hang)',
        async () => {
          await s.t.redis.hset(s.t.keys.pipelineFaults(), `hang:${a.worker}`, 'silent', `hang:${b.worker}`, 'silent');
        },
        'stalled_queue',
        'extract',
        'restart_worker',
      );
      const victim = status.plan!.params.container!;
      const other = [a, b].find((w) => w.container !== victim)!;
      expect(status.actions.filter((x) => x.action === 'restart_worker')).toHaveLength(1);
      expect(await startedAt(s.docker, victim)).toBeGreaterThan(before.get(victim)!);
      const victimStarted = await startedAt(s.docker, victim);
      // The other worker is still silently hung (its /health answers 200, its heartbeat lives). While its peer keeps
      // up with the traffic it cannot be told from an idle worker; with a backlog its peer works through (the one the
      // stall left, and a burst in case that is gone), it can: it is its own anomaly, restarted on its own.
      await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 1500 });
      const hung = await result(
        s.client,
        healingWorkflowId('unhealthy_container', other.container!),
        90_000,
        injectedAt,
      );
      // On failure: the run's timeline and every restart permit of that container (the breaker counts them).
      const permits = await s.t.pool.query(
        `SELECT workflow_id, reserved_at_ms, finished_at_ms, outcome FROM action_permits
          WHERE action = 'restart_worker' AND target = $1 ORDER BY reserved_at_ms`,
        [other.container],
      );
      expect(hung.phase, JSON.stringify({ history: hung.history, permits: permits.rows })).toBe('healed');
      expect(hung.anomaly.evidence).toMatchObject({ source: 'progress', worker: other.container, stage: 'extract' });
      expect(hung.anomaly.summary).toMatch(
        /took and finished no document for \d+ s while queue:extract held \d+ .*\(hung behind a working health check\)/,
      );
      expect(hung.plan?.params).toEqual({ container: other.container, hung: true });
      expect(
        hung.actions.filter((x) => x.action === 'restart_worker').map((x) => x.outcome),
        JSON.stringify({ history: hung.history, verification: hung.verification }),
      ).toEqual(['done']);
      expect(await startedAt(s.docker, other.container!)).toBeGreaterThan(before.get(other.container!)!);
      // The restarted process took the fault away with it; the first victim was not restarted again, and no other
      // restart ran.
      expect(await s.t.redis.hget(s.t.keys.pipelineFaults(), `hang:${other.worker}`)).toBeNull();
      expect(await startedAt(s.docker, victim)).toBe(victimStarted);
      const { rows } = await s.t.pool.query<{ container: string; n: number }>(
        `SELECT params->'request'->>'container' AS container, count(*)::int AS n FROM healing_log
          WHERE step = 'executed' AND action = 'restart_worker' AND created_at >= to_timestamp($1 / 1000.0)
          GROUP BY 1 ORDER BY 1`,
        [injectedAt],
      );
      expect(rows).toEqual([victim, other.container!].sort().map((container) => ({ container, n: 1 })));
      timings['unhealthy_container (the second silent hang)'] = {
        detectS: Number(((hung.anomaly.detectedAt - injectedAt) / 1000).toFixed(1)),
        healS: Number(((hung.verification!.at - injectedAt) / 1000).toFixed(1)),
        action: 'restart_worker',
      };
    });

    it('error-rate spike of the whole stage: escalated, no container restarted', async () => {
      const before = await startTimes();
      const injectedAt = Date.now();
      const r = s.selfheal.cli(['chaos', 'error-rate', 'extract', '0.9']);
      expect(r.status, r.stderr).toBe(0);
      const id = healingWorkflowId('error_rate_spike', 'extract');
      const status = await result(s.client, id, 90_000, injectedAt);
      expect(status.phase, JSON.stringify(status.history)).toBe('escalated');
      expect(status.anomaly.evidence.suspects).toEqual([]);
      expect(status.actions.map((a) => a.action)).toEqual(['escalate_to_human']);
      for (const [name, t0] of before) expect(await startedAt(s.docker, name)).toBe(t0);
      const { rows } = await s.t.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM healing_log WHERE step = 'executed' AND action = 'restart_worker' AND created_at >= to_timestamp($1 / 1000.0)",
        [injectedAt],
      );
      expect(rows[0]!.n).toBe(0);
      timings['error_rate_spike (stage-wide): escalated'] = {
        detectS: Number(((status.anomaly.detectedAt - injectedAt) / 1000).toFixed(1)),
        healS: Number(((status.history.at(-1)!.at - injectedAt) / 1000).toFixed(1)),
        action: 'escalate_to_human',
      };
      expect(s.selfheal.cli(['chaos', 'clear']).status).toBe(0);
    });
  });

  // The faults above leave a backlog behind (the bursts that made the hung workers visible): these 50 documents
  // queue behind it, and how long it takes to drain depends on the machine's load. Flowing is a condition, not a
  // time: every one of them is completed in the end, and the pipeline never stops finishing documents (none finished
  // for 30 s fails at once, with the documents' states).
  it('documents keep flowing afterwards', async () => {
    const ids = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 50 });
    let finished = -1;
    let progressAt = Date.now();
    await waitFor(
      async () => {
        const { rows } = await s.t.pool.query<{ status: string; mine: number; all: number }>(
          `SELECT status, count(*) FILTER (WHERE id = ANY($1))::int AS mine, count(*)::int AS all
             FROM documents GROUP BY status`,
          [ids],
        );
        const all = rows.filter((r) => r.status === 'completed').reduce((n, r) => n + r.all, 0);
        if (all > finished) [finished, progressAt] = [all, Date.now()];
        else if (Date.now() - progressAt > 30_000) {
          throw new Error(`no document finished for 30 s; the 50 by state: ${JSON.stringify(rows)}`);
        }
        return rows.find((r) => r.status === 'completed')?.mine === 50;
      },
      { timeoutMs: 280_000, what: '50 new documents completed' },
    );
  }, 300_000);
});

describe('healing end to end, escalate-only (auto-fix off)', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  let receiver: WebhookReceiver;
  beforeAll(async () => {
    s = await setup(false, true);
    receiver = s.receiver!;
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
        const st = await h.query(statusQuery).catch(() => undefined);
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

  it('a healing awaiting approval notifies with the commands bound to its plan, and that exact command approves', async () => {
    const id = await awaitingApproval(injectStaleLock());
    const status = await s.client.workflow.getHandle(id).query(statusQuery);
    const notice = await waitFor(
      () => receiver.bodies.find((b) => b.workflowId === id && b.event === 'approval_requested'),
      { what: `the approval notice of ${id}` },
    );
    const commands = notice.commands as { approve: string; reject: string };
    expect(commands.approve).toBe(`selfheal approve ${id} --by NAME --plan ${status.plan!.id}`);
    expect((notice.plan as { id: string; action: string }).action).toBe('clear_stale_locks');
    const [, ...args] = commands.approve.replace('NAME', 'dave').split(' ');
    const run = s.selfheal.cli(args);
    expect(run.status, run.stderr).toBe(0);
    const result = (await s.client.workflow.getHandle(id).result()) as HealingStatus;
    expect(result.phase).toBe('healed');
    expect(result.decision).toMatchObject({ decision: 'approve', by: 'dave', planId: status.plan!.id });
    const { rows } = await s.t.pool.query<{ outcome: string }>(
      "SELECT outcome FROM healing_log WHERE workflow_id = $1 AND step = 'notified'",
      [id],
    );
    expect(rows).toEqual([{ outcome: 'delivered' }]);
  });

  it('approval through selfheal approve, temporal workflow signal, temporal workflow update execute; rejection through selfheal reject', async () => {
    const ids: string[] = [];
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
    const mine = rows.filter((r) => ids.includes(r.workflow_id));
    expect(
      mine
        .filter((r) => r.step === 'approved')
        .map((r) => r.decided_by)
        .sort(),
    ).toEqual(['alice', 'bob', 'carol']);
    expect(mine.filter((r) => r.step === 'executed')).toHaveLength(3);
    const healings = JSON.parse(s.selfheal.cli(['healings', '--json']).stdout) as {
      workflowId: string;
      phase: string;
    }[];
    expect(healings.find((h) => h.workflowId === rejected)?.phase).toBe('rejected');
  }, 240_000);
});
