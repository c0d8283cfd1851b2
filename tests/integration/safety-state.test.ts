/**
 * The safety policy with its state in Postgres and Redis: cooldown and circuit breaker from the restart permits,
 * one restart in flight per stage, never the last healthy worker (from the latest cycle record), and the atomic
 * permit budget under concurrent reservations; the gate before an action (silence, permit, recheck in one call) and
 * the first check it stops at.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGateActivities, type GateInput } from '../../activities/gate';
import {
  createSafetyActivities,
  type CheckSafetyInput,
  type ReserveInput,
  type SafetyPolicy,
} from '../../activities/safety';
import { addSilence, createSilenceActivities, removeSilence } from '../../activities/silences';
import type { Plan } from '../../core/plan';
import type { CycleRecord } from '../../core/snapshot';
import { createTestEnv, type TestEnv } from '../helpers/env';
import { snapshot } from '../helpers/snapshots';

const NOW = 1_800_000_000_000;
const MIN = 60_000;

const policy: SafetyPolicy = {
  autoFix: true,
  minConfidence: 0.5,
  allowlist: ['pipeline-*'],
  denylist: ['*postgres*'],
  cooldownSeconds: 600,
  breakerRestarts: 3,
  breakerWindowSeconds: 3600,
  requeueCap: 100,
};

const restart = (container: string): Plan => ({
  id: `p-${container}`,
  anomalyType: 'unhealthy_container',
  action: 'restart_worker',
  target: container,
  params: { container },
  reasoning: 'test',
  confidence: 0.9,
  source: 'runbook',
  rung: 0,
});

describe('safety state', () => {
  let t: TestEnv;
  let safety: ReturnType<typeof createSafetyActivities>;
  // Plain functions of the activity factory (they read no activity context): called directly.
  const check = (input: CheckSafetyInput) => safety.checkSafety(input);
  const reserve = (input: ReserveInput) => safety.reservePermit(input);

  beforeAll(async () => {
    t = await createTestEnv();
    safety = createSafetyActivities({ pool: t.pool, redis: t.redis, keys: t.keys });
    // The latest cycle: extract has a and b (b is failing its health check), evaluate has only c, healthy.
    const record: CycleRecord = {
      snapshot: snapshot(NOW, {
        containers: [
          { name: 'pipeline-a', state: 'running', running: true, restartCount: 0, stage: 'extract' },
          { name: 'pipeline-b', state: 'running', running: true, restartCount: 0, stage: 'extract' },
          { name: 'pipeline-c', state: 'running', running: true, restartCount: 0, stage: 'evaluate' },
        ],
        health: [
          { container: 'pipeline-a', url: 'http://127.0.0.1:1/health', ok: true, status: 200, latencyMs: 1 },
          { container: 'pipeline-b', url: 'http://127.0.0.1:2/health', ok: false, status: 503, latencyMs: 1 },
          { container: 'pipeline-c', url: 'http://127.0.0.1:3/health', ok: true, status: 200, latencyMs: 1 },
        ],
      }),
      candidates: [],
      active: [],
    };
    await t.redis.xadd(t.keys.metricsStream(), '*', 'record', JSON.stringify(record));
  });
  afterAll(async () => {
    await t.cleanup();
  });

  async function permit(key: string, container: string, at: number, outcome: string | null, stage = 'extract') {
    await t.pool.query(
      `INSERT INTO action_permits (idempotency_key, workflow_id, action, target, stage, reserved_at_ms, finished_at_ms, outcome)
       VALUES ($1, 'wf-other', 'restart_worker', $2, $3, $4, $5, $6)`,
      [key, container, stage, at, outcome === null ? null : at + 1000, outcome],
    );
  }

  it('allows a restart of an unhealthy worker with a healthy peer', async () => {
    const r = await check({ plan: restart('pipeline-b'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('allow');
    expect(r.stage).toBe('extract');
  });

  it('never the last healthy worker of a stage', async () => {
    const r = await check({ plan: restart('pipeline-c'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('escalate');
    expect(r.verdict.reasons.join(';')).toMatch(/last healthy worker/);
  });

  it('fails closed for a container the last cycle does not know', async () => {
    const r = await check({ plan: restart('pipeline-zz'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('escalate');
  });

  it('cooldown from a recent restart permit (also one that found nothing to do): wait until it is over', async () => {
    await permit('k-cool', 'pipeline-b', NOW - 5 * MIN, 'nothing_to_do');
    const r = await check({ plan: restart('pipeline-b'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('wait');
    expect(r.verdict.reasons.join(';')).toMatch(/crash loop: 1 restart of pipeline-b .* backing off 600 s/);
    expect(r.verdict.retryAt).toBe(NOW - 5 * MIN + 10 * MIN);
    // Past the cooldown: allowed again; a refused permit never counts.
    const later = await check({
      plan: restart('pipeline-b'),
      policy,
      workflowId: 'wf1',
      now: NOW + 6 * MIN,
    });
    expect(later.verdict.decision).toBe('allow');
  });

  it('circuit breaker after 3 restarts of one target within the hour', async () => {
    await permit('k-b1', 'pipeline-a', NOW - 50 * MIN, 'done');
    await permit('k-b2', 'pipeline-a', NOW - 40 * MIN, 'done');
    await permit('k-b3', 'pipeline-a', NOW - 30 * MIN, 'done');
    const r = await check({ plan: restart('pipeline-a'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('escalate');
    expect(r.verdict.reasons.join(';')).toMatch(/circuit breaker open: 3 restarts/);
  });

  it('a restart permit that found nothing to do is no restart for the circuit breaker', async () => {
    await t.pool.query('DELETE FROM action_permits');
    await permit('k-n1', 'pipeline-b', NOW - 59 * MIN, 'done');
    await permit('k-n2', 'pipeline-b', NOW - 50 * MIN, 'done');
    await permit('k-n3', 'pipeline-b', NOW - 41 * MIN, 'nothing_to_do');
    const r = await check({ plan: restart('pipeline-b'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.reasons.join(';')).not.toMatch(/circuit breaker/);
    expect(r.verdict.decision).toBe('allow');
    // Done, all three: the breaker opens.
    await t.pool.query(`UPDATE action_permits SET outcome = 'done' WHERE idempotency_key = 'k-n3'`);
    const open = await check({ plan: restart('pipeline-b'), policy, workflowId: 'wf1', now: NOW });
    expect(open.verdict.decision).toBe('escalate');
    expect(open.verdict.reasons.join(';')).toMatch(/circuit breaker open: 3 restarts/);
  });

  it('one restart in flight per stage (the other waits); a permit abandoned long ago stops counting', async () => {
    await t.pool.query('DELETE FROM action_permits');
    await permit('k-fly', 'pipeline-a', NOW - 1 * MIN, null);
    const r = await check({ plan: restart('pipeline-b'), policy, workflowId: 'wf1', now: NOW });
    expect(r.verdict.decision).toBe('wait');
    expect(r.verdict.reasons.join(';')).toMatch(/in flight/);
    const much = await check({
      plan: restart('pipeline-b'),
      policy: { ...policy, cooldownSeconds: 0 },
      workflowId: 'wf1',
      now: NOW + 20 * MIN,
    });
    expect(much.verdict.decision).toBe('allow');
  });

  it('two restarts of one stage holding permits: the later waits for the earlier, never both for each other', async () => {
    await t.pool.query('DELETE FROM action_permits');
    const insert = (key: string, wf: string, at: number) =>
      t.pool.query(
        `INSERT INTO action_permits (idempotency_key, workflow_id, action, target, stage, reserved_at_ms)
         VALUES ($1, $2, 'restart_worker', 'pipeline-b', 'extract', $3)`,
        [key, wf, at],
      );
    await insert('k-early', 'wf-early', NOW - 2_000);
    await insert('k-late', 'wf-late', NOW - 1_000);
    const p = { ...policy, cooldownSeconds: 0 };
    const early = await check({
      plan: restart('pipeline-b'),
      policy: p,
      workflowId: 'wf-early',
      now: NOW,
      ownPermitKey: 'k-early',
    });
    const late = await check({
      plan: restart('pipeline-b'),
      policy: p,
      workflowId: 'wf-late',
      now: NOW,
      ownPermitKey: 'k-late',
    });
    expect(early.verdict.decision).not.toBe('wait');
    expect(late.verdict.decision).toBe('wait');
    // Without a permit of its own, every unfinished restart of the stage counts.
    const none = await check({ plan: restart('pipeline-b'), policy: p, workflowId: 'wf-new', now: NOW });
    expect(none.verdict.decision).toBe('wait');
    // The earlier one done: the later goes.
    await t.pool.query(
      `UPDATE action_permits SET finished_at_ms = $1, outcome = 'done' WHERE idempotency_key = 'k-early'`,
      [NOW],
    );
    const after = await check({
      plan: restart('pipeline-b'),
      policy: p,
      workflowId: 'wf-late',
      now: NOW,
      ownPermitKey: 'k-late',
    });
    expect(after.verdict.decision).not.toBe('wait');
  });

  it('of two restarts of one stage, the one reserved second waits, even when its workflow clock is earlier', async () => {
    await t.pool.query('DELETE FROM action_permits');
    const p = { ...policy, cooldownSeconds: 0 };
    // pipeline-b fails its health check; pipeline-a answers it but is hung (so not protected as the last healthy).
    const plans: Record<string, Plan> = {
      'k-first': restart('pipeline-b'),
      'k-second': { ...restart('pipeline-a'), params: { container: 'pipeline-a', hung: true } },
    };
    const go = async (key: string, at: number) => {
      const plan = plans[key]!;
      const r = await reserve({
        idempotencyKey: key,
        workflowId: `wf-${key}`,
        plan,
        stage: 'extract',
        now: at,
        maxPerWindow: 10,
        windowMs: 3_600_000,
      });
      expect(r.granted).toBe(true);
      return check({ plan, policy: p, workflowId: `wf-${key}`, now: at, ownPermitKey: key });
    };
    // The first reserves and checks before the second reserves; the second's workflow time is half a second earlier.
    expect((await go('k-first', NOW)).verdict.decision).toBe('allow');
    const second = await go('k-second', NOW - 500);
    expect(second.verdict.decision).toBe('wait');
    expect(second.verdict.reasons.join(';')).toMatch(/in flight/);
  });

  it('the permit budget holds under 20 concurrent reservations: exactly 5 granted', async () => {
    await t.pool.query('DELETE FROM action_permits');
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        reserve({
          idempotencyKey: `c-${i}`,
          workflowId: `wf-${i}`,
          plan: restart('pipeline-b'),
          now: NOW + i,
          maxPerWindow: 5,
          windowMs: 3_600_000,
        }),
      ),
    );
    expect(results.filter((r) => r.granted)).toHaveLength(5);
    const refused = results.filter((r): r is { granted: false; nextFreeAt: number; used: number } => !r.granted);
    for (const r of refused) expect(r.nextFreeAt).toBeGreaterThan(NOW + 3_600_000 - 1);
    // Idempotent: the same key again returns its permit, no new row.
    const again = await reserve({
      idempotencyKey: 'c-0',
      workflowId: 'wf-0',
      plan: restart('pipeline-b'),
      now: NOW,
      maxPerWindow: 5,
      windowMs: 3_600_000,
    });
    const { rows } = await t.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM action_permits');
    expect(rows[0]!.n).toBe(5);
    expect(again.granted).toBe(results[0]!.granted);
    if (again.granted && results[0]!.granted) expect(again.permitId).toBe(results[0]!.permitId);
  });

  describe('the gate before an action', () => {
    const gate = () => createGateActivities({ safety, silences: createSilenceActivities({ pool: t.pool }) });
    const input = (key: string, over: Partial<GateInput> = {}): GateInput => ({
      anomalyType: 'unhealthy_container',
      target: 'pipeline-b',
      plan: restart('pipeline-b'),
      idempotencyKey: key,
      workflowId: `wf-${key}`,
      stage: 'extract',
      policy,
      maxPerWindow: 10,
      windowMs: 3_600_000,
      now: NOW,
      ...over,
    });
    const permits = async (key: string) =>
      (await t.pool.query('SELECT 1 FROM action_permits WHERE idempotency_key = $1', [key])).rows.length;

    it('passes with its permit reserved, once per key', async () => {
      await t.pool.query('DELETE FROM action_permits');
      expect(await gate().gateAction(input('g-pass'))).toEqual({ pass: true });
      expect(await gate().gateAction(input('g-pass'))).toEqual({ pass: true });
      expect(await permits('g-pass')).toBe(1);
    });

    it('stops at a silence before reserving anything', async () => {
      await t.pool.query('DELETE FROM action_permits');
      const now = Date.now();
      const silence = await addSilence(t.pool, {
        anomalyType: 'unhealthy_container',
        targetGlob: 'pipeline-b',
        startsAt: now - MIN,
        endsAt: now + 10 * MIN,
        reason: 'maintenance',
        createdBy: 'test',
      });
      try {
        expect(await gate().gateAction(input('g-silenced', { now }))).toEqual({ pass: false, at: 'silence' });
        expect(await permits('g-silenced')).toBe(0);
      } finally {
        await removeSilence(t.pool, silence.id, 'test');
      }
    });

    it('stops at a spent budget', async () => {
      await t.pool.query('DELETE FROM action_permits');
      expect(await gate().gateAction(input('g-spent', { maxPerWindow: 0 }))).toEqual({ pass: false, at: 'permit' });
      expect(await permits('g-spent')).toBe(0);
    });

    it("stops at the policy's recheck (here a cooldown: wait), its permit kept for the steps that take over", async () => {
      await t.pool.query('DELETE FROM action_permits');
      await permit('g-cool-before', 'pipeline-b', NOW - 5 * MIN, 'done');
      expect(await gate().gateAction(input('g-cool'))).toEqual({ pass: false, at: 'policy' });
      expect(await permits('g-cool')).toBe(1);
    });
  });
});
