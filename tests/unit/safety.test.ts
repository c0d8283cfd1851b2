import { describe, expect, it } from 'vitest';
import type { Plan } from '../../core/plan';
import { containerAllowed, evaluateSafety, globMatch, restartBackoffMs, type SafetyContext } from '../../core/safety';

const NOW = 1_800_000_000_000;
const MIN = 60_000;

const ctx = (over: Partial<SafetyContext> = {}): SafetyContext => ({
  now: NOW,
  autoFix: true,
  minConfidence: 0.8,
  allowlist: ['pipeline-*'],
  denylist: ['*postgres*', '*redis*', '*temporal*', '*ollama*', 'selfheal-*'],
  cooldownSeconds: 600,
  breakerRestarts: 3,
  breakerWindowSeconds: 3600,
  requeueCap: 100,
  recentRestartsOfTarget: [],
  restartsInFlightInStage: 0,
  targetHealthy: false,
  healthyWorkersInStage: 1,
  ...over,
});

const plan = (over: Partial<Plan> = {}): Plan => ({
  id: 'p1',
  anomalyType: 'unhealthy_container',
  action: 'restart_worker',
  target: 'pipeline-extract-1',
  params: { container: 'pipeline-extract-1' },
  reasoning: 'health check failing',
  confidence: 0.9,
  source: 'runbook',
  rung: 0,
  ...over,
});

describe('globMatch', () => {
  it.each([
    ['pipeline-*', 'pipeline-extract-1', true],
    ['pipeline-*', 'xpipeline-extract-1', false],
    ['*postgres*', 'selfheal-postgres-1', true],
    ['worker-?', 'worker-1', true],
    ['worker-?', 'worker-12', false],
    ['worker-[12]', 'worker-2', true],
    ['worker-[12]', 'worker-3', false],
    ['a.b', 'aXb', false],
    ['pipeline-(x)', 'pipeline-(x)', true],
  ])('%s ~ %s = %s', (pattern, name, want) => expect(globMatch(pattern, name)).toBe(want));

  it('deny wins over allow', () => {
    expect(containerAllowed('pipeline-postgres', ['pipeline-*'], ['*postgres*']).ok).toBe(false);
    expect(containerAllowed('redis', ['*'], ['*redis*']).ok).toBe(false);
    expect(containerAllowed('other-1', ['pipeline-*'], []).ok).toBe(false);
  });

  it('a scope label (selfheal.enable=true, autoheal=true) puts a container in scope; the deny list still wins', () => {
    expect(containerAllowed('web-1', ['pipeline-*'], [], 'autoheal=true')).toEqual({
      ok: true,
      why: 'container web-1 in scope by its label autoheal=true',
    });
    expect(containerAllowed('web-postgres', ['pipeline-*'], ['*postgres*'], 'selfheal.enable=true')).toEqual({
      ok: false,
      why: 'container web-postgres is on the deny list (*postgres*)',
    });
    expect(containerAllowed('web-1', ['pipeline-*'], []).why).toBe(
      'container web-1 matches no allow-list pattern and carries no scope label',
    );
  });
});

describe('crash-loop backoff', () => {
  it('RESTART_COOLDOWN, doubling with each restart in the window, capped', () => {
    expect([0, 1, 2, 3, 4, 30].map((n) => restartBackoffMs(n, 10, 300) / 1000)).toEqual([10, 10, 20, 40, 80, 300]);
    // The cap never undercuts the cooldown itself.
    expect(restartBackoffMs(3, 600, 300)).toBe(600_000);
  });

  it('the wait says when to look again', () => {
    const v = evaluateSafety(plan(), ctx({ recentRestartsOfTarget: [NOW - 5 * MIN] }));
    expect(v).toMatchObject({ decision: 'wait', needsPermit: true, retryAt: NOW - 5 * MIN + 10 * MIN });
  });
});

describe('evaluateSafety', () => {
  const cases: { name: string; plan: Plan; ctx: SafetyContext; decision: string; reason?: RegExp }[] = [
    { name: 'restart within policy, auto-fix on: allow', plan: plan(), ctx: ctx(), decision: 'allow' },
    {
      name: 'auto-fix off: every action waits for approval',
      plan: plan(),
      ctx: ctx({ autoFix: false }),
      decision: 'needs_approval',
      reason: /auto-fix is off/,
    },
    {
      name: 'confidence under the floor waits for approval',
      plan: plan({ confidence: 0.79 }),
      ctx: ctx(),
      decision: 'needs_approval',
      reason: /under the floor/,
    },
    {
      name: 'confidence exactly at the floor is enough',
      plan: plan({ confidence: 0.8 }),
      ctx: ctx(),
      decision: 'allow',
    },
    {
      name: 'NaN confidence never passes',
      plan: plan({ confidence: Number.NaN }),
      ctx: ctx(),
      decision: 'needs_approval',
    },
    {
      name: 'denied container (postgres): escalate, whatever the approval',
      plan: plan({ params: { container: 'selfheal-postgres-1' } }),
      ctx: ctx({ autoFix: false }),
      decision: 'escalate',
      reason: /deny list/,
    },
    {
      name: 'container outside the allow list: escalate',
      plan: plan({ params: { container: 'billing-api' } }),
      ctx: ctx(),
      decision: 'escalate',
      reason: /no allow-list/,
    },
    { name: 'restart without a container: escalate', plan: plan({ params: {} }), ctx: ctx(), decision: 'escalate' },
    {
      name: 'cooldown: restarted 5 min ago with a 10 min cooldown: waits (crash-loop backoff), does not give up',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 5 * MIN] }),
      decision: 'wait',
      reason: /crash loop: 1 restart of pipeline-extract-1 in the last 60 min, the last 300 s ago; backing off 600 s/,
    },
    {
      name: 'cooldown over: restarted 11 min ago',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 11 * MIN] }),
      decision: 'allow',
    },
    {
      name: 'the backoff doubles: two restarts in the hour, the last 15 min ago, wait 20 min',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 40 * MIN, NOW - 15 * MIN] }),
      decision: 'wait',
      reason: /backing off 1200 s/,
    },
    {
      name: 'the backoff doubled is over: two restarts in the hour, the last 21 min ago',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 40 * MIN, NOW - 21 * MIN] }),
      decision: 'allow',
    },
    {
      name: 'breaker open, but the document the worker died on is quarantined first: allowed',
      plan: plan({ params: { container: 'pipeline-extract-1', quarantineFirst: [42] } }),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 59 * MIN, NOW - 48 * MIN, NOW - 27 * MIN] }),
      decision: 'allow',
      reason: /circuit breaker open: 3 restarts .*, but the document it died on \(42\) are quarantined first/,
    },
    {
      name: 'circuit breaker: 3 restarts within the hour',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 50 * MIN, NOW - 35 * MIN, NOW - 20 * MIN] }),
      decision: 'escalate',
      reason: /circuit breaker/,
    },
    {
      name: 'a permit that found nothing to do is no restart for the breaker: two restarts and one no-op in the hour',
      plan: plan(),
      ctx: ctx({
        recentRestartsOfTarget: [NOW - 59 * MIN, NOW - 50 * MIN, NOW - 41 * MIN],
        noopRestartsOfTarget: [NOW - 41 * MIN],
      }),
      decision: 'allow',
    },
    {
      name: 'the same three permits all restarts: the breaker opens',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 59 * MIN, NOW - 50 * MIN, NOW - 41 * MIN] }),
      decision: 'escalate',
      reason: /circuit breaker open: 3 restarts/,
    },
    {
      name: 'breaker closed again once the oldest restart is past the hour',
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 61 * MIN, NOW - 35 * MIN, NOW - 20 * MIN] }),
      decision: 'allow',
    },
    {
      name: "Docker's restart policy restarts count: one by selfheal 40 min ago, one by Docker 15 min ago, wait 20 min",
      plan: plan(),
      ctx: ctx({ recentRestartsOfTarget: [NOW - 40 * MIN], dockerRestartsOfTarget: [NOW - 15 * MIN] }),
      decision: 'wait',
      reason:
        /crash loop: 2 restarts of pipeline-extract-1 \(1 by Docker's restart policy\) .* the last 900 s ago; backing off 1200 s/,
    },
    {
      name: "circuit breaker: three restarts by Docker's restart policy within the hour",
      plan: plan(),
      ctx: ctx({ dockerRestartsOfTarget: [NOW - 50 * MIN, NOW - 35 * MIN, NOW - 20 * MIN] }),
      decision: 'escalate',
      reason: /circuit breaker open: 3 restarts of pipeline-extract-1 \(3 by Docker's restart policy\)/,
    },
    {
      name: "Docker's restarts past the breaker window are forgotten",
      plan: plan(),
      ctx: ctx({ dockerRestartsOfTarget: [NOW - 90 * MIN, NOW - 70 * MIN, NOW - 61 * MIN] }),
      decision: 'allow',
    },
    {
      name: 'another restart in flight in the stage: wait for it',
      plan: plan(),
      ctx: ctx({ restartsInFlightInStage: 1 }),
      decision: 'wait',
      reason: /in flight/,
    },
    {
      name: 'never the last healthy worker of a stage',
      plan: plan(),
      ctx: ctx({ targetHealthy: true, healthyWorkersInStage: 1 }),
      decision: 'escalate',
      reason: /last healthy/,
    },
    {
      name: 'a healthy worker with healthy peers may be restarted',
      plan: plan(),
      ctx: ctx({ targetHealthy: true, healthyWorkersInStage: 2 }),
      decision: 'allow',
    },
    {
      name: 'the last healthy replica of a compose service is not restarted either',
      plan: plan(),
      ctx: ctx({ targetHealthy: true, healthyWorkersInStage: 1, targetGroup: 'compose service' }),
      decision: 'escalate',
      reason: /last healthy worker of its compose service/,
    },
    {
      name: 'a container in no stage and no compose service: the last-healthy rule does not apply',
      plan: plan(),
      ctx: ctx({ targetHealthy: true, healthyWorkersInStage: undefined }),
      decision: 'allow',
    },
    {
      name: 'a container outside the allow list is in scope by its label',
      plan: plan({ params: { container: 'web-1' } }),
      ctx: ctx({ targetScopeLabel: 'selfheal.enable=true' }),
      decision: 'allow',
      reason: /in scope by its label selfheal.enable=true/,
    },
    {
      name: 'an unhealthy worker may be restarted even if no other is healthy',
      plan: plan(),
      ctx: ctx({ targetHealthy: false, healthyWorkersInStage: 0 }),
      decision: 'allow',
    },
    {
      name: 'requeue beyond the cap is refused',
      plan: plan({
        action: 'requeue_documents',
        params: { documentIds: Array.from({ length: 101 }, (_, i) => i), stage: 'extract' },
      }),
      ctx: ctx(),
      decision: 'escalate',
      reason: /exceed the cap/,
    },
    {
      name: 'requeue within the cap',
      plan: plan({ action: 'requeue_documents', params: { documentIds: [1, 2, 3], stage: 'extract' } }),
      ctx: ctx(),
      decision: 'allow',
    },
    {
      name: 'requeue of nothing',
      plan: plan({ action: 'requeue_documents', params: {} }),
      ctx: ctx(),
      decision: 'escalate',
    },
    {
      name: 'clear locks without observed locks',
      plan: plan({ action: 'clear_stale_locks', params: {} }),
      ctx: ctx(),
      decision: 'escalate',
    },
    {
      name: 'escalation is always allowed, no permit',
      plan: plan({ action: 'escalate_to_human', params: {} }),
      ctx: ctx({ autoFix: false }),
      decision: 'allow',
    },
  ];
  it.each(cases)('$name', (c) => {
    const v = evaluateSafety(c.plan, c.ctx);
    expect(v.decision).toBe(c.decision);
    if (c.reason) expect(v.reasons.join('; ')).toMatch(c.reason);
  });

  it('escalations and no_action need no permit; actions do', () => {
    expect(evaluateSafety(plan({ action: 'escalate_to_human' }), ctx()).needsPermit).toBe(false);
    expect(evaluateSafety(plan({ action: 'no_action' }), ctx()).needsPermit).toBe(false);
    expect(evaluateSafety(plan(), ctx()).needsPermit).toBe(true);
    expect(evaluateSafety(plan(), ctx({ autoFix: false })).needsPermit).toBe(true);
  });
});
