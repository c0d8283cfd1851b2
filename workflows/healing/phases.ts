/**
 * The phases of a healing, in the order the main loop walks them: analyze, check the policy (waiting while it says
 * so), wait for a permit of the global budget, check again before acting, act, verify. Approval is in approval.ts.
 */
import type { Anomaly } from '../../core/types';
import { log, sleep } from '@temporalio/workflow';
import { errorMessage } from '../../core/errors';
import { EVIDENCE_SKIPPED_TYPES, type AnalysisEvidence } from '../../core/evidence';
import { classifyFallback } from '../../core/fallback-cause';
import { healthDecides, type Plan } from '../../core/plan';
import { sourcesToVerify } from '../../core/detectors/common';
import { withContainers } from '../../core/snapshot';
import type { HealingInput, HealingStatus } from '../definitions';
import {
  activeSilence,
  analysisProxy,
  checkSafety,
  collectMetrics,
  finishPermit,
  gateAction,
  gatherEvidence,
  inspectContainers,
  recheckAnomaly,
  reservePermit,
  runAction,
} from './proxies';
import type { HealingRun } from './run';

const WINDOW_MS = 3_600_000;

/** 1. Analysis: evidence an SRE would read (when it can be had), then the plan, audited with its source. */
export async function analyze(run: HealingRun, rung: number): Promise<Plan> {
  const { anomaly, input, status } = run;
  run.enter('analyzing', rung === 0 ? anomaly.summary : `the fix did not work: next rung (${rung})`);
  // Evidence an SRE would read (recent document errors, the container's last log lines), when it can be had.
  let evidence: AnalysisEvidence | undefined;
  if (!EVIDENCE_SKIPPED_TYPES.includes(anomaly.type) && run.since('llm-evidence')) {
    try {
      evidence = await gatherEvidence({ anomaly, containers: input.containers });
    } catch (err) {
      log.warn('evidence not gathered', { error: errorMessage(err) });
    }
  }
  const { analyzeAnomaly } = analysisProxy(run.policy.llmTimeoutMs);
  const analysis = await analyzeAnomaly({
    anomaly,
    rung,
    context: { containers: input.containers },
    ...(evidence ? { evidence } : {}),
  });
  const plan = analysis.plan;
  status.plan = plan;
  run.pending = null;
  status.decision = null;
  await run.audit({
    step: 'proposed',
    action: plan.action,
    params: {
      planId: plan.id,
      rung,
      ...plan.params,
      reasoning: plan.reasoning,
      llm: analysis.llm,
      ...(plan.fallbackReason ? { fallbackReason: plan.fallbackReason } : {}),
      ...(evidence
        ? {
            evidence: {
              documentErrors: evidence.documentErrors.length,
              logLines: evidence.containerLog?.lines.length ?? 0,
              ...(evidence.unavailable ? { unavailable: evidence.unavailable } : {}),
            },
          }
        : {}),
    },
    decidedBy: plan.source,
    confidence: plan.confidence,
    // The runbook's plan: why, in one word; the detail is in params.fallbackReason.
    outcome:
      plan.source === 'runbook' && plan.fallbackReason
        ? (plan.fallbackCause ?? classifyFallback(plan.fallbackReason))
        : undefined,
  });
  return plan;
}

/**
 * The policy's verdict, waiting while it says `wait` on durable timers: until its `retryAt` (a crash loop's backoff),
 * else backing off from 5 s to 60 s (another restart of the stage is in flight), up to RATE_LIMIT_MAX_WAIT; past
 * that the verdict is an escalation. The first wait is audited (`rate_limited`), not every check.
 */
export async function checkSafetyWaiting(run: HealingRun, args: { plan: Plan; ownPermitKey?: string }) {
  const since = Date.now();
  let pauseMs = 5_000;
  let waited = false;
  for (;;) {
    // The policy in force now (the worker's): at the first check, and again after each wait.
    const policy = await run.readPolicy();
    const r = await checkSafety({ ...args, policy, workflowId: run.info.workflowId, now: Date.now() });
    if (r.verdict.decision !== 'wait') return r;
    const why = r.verdict.reasons.join('; ');
    const untilMs = r.verdict.retryAt !== undefined ? Math.max(1_000, r.verdict.retryAt - Date.now()) : pauseMs;
    if (Date.now() - since + untilMs > policy.maxRateLimitWaitSeconds * 1000) {
      return {
        ...r,
        verdict: {
          ...r.verdict,
          decision: 'escalate' as const,
          reasons: [...r.verdict.reasons, `still so after ${Math.round((Date.now() - since) / 1000)} s`],
        },
      };
    }
    if (!waited) {
      waited = true;
      run.enter('rate_limited', `waiting: ${why}`);
      await run.audit({
        step: 'rate_limited',
        action: args.plan.action,
        params: {
          planId: args.plan.id,
          reasons: r.verdict.reasons,
          ...(r.verdict.retryAt !== undefined ? { retryAt: r.verdict.retryAt } : {}),
        },
        decidedBy: 'policy',
        outcome: 'wait',
      });
    }
    await sleep(untilMs);
    run.waited();
    if (r.verdict.retryAt === undefined) pauseMs = Math.min(pauseMs * 2, 60_000);
  }
}

/**
 * 4. A permit of the global budget: waits on a durable timer while it is spent, up to RATE_LIMIT_MAX_WAIT. Returns
 * the escalation's status when the wait would be longer, undefined once the permit is granted.
 */
export async function waitForPermit(
  run: HealingRun,
  plan: Plan,
  stage: string | undefined,
  key: string,
): Promise<HealingStatus | undefined> {
  const waitedSince = Date.now();
  for (;;) {
    // After an approval, a silence or a wait for the budget: the budget in force now.
    const policy = await run.readPolicy();
    const permit = await reservePermit({
      idempotencyKey: key,
      workflowId: run.info.workflowId,
      plan,
      stage,
      now: Date.now(),
      maxPerWindow: policy.maxActionsPerHour,
      windowMs: WINDOW_MS,
    });
    if (permit.granted) return undefined;
    const waitMs = permit.nextFreeAt - Date.now();
    if (Date.now() + waitMs - waitedSince > policy.maxRateLimitWaitSeconds * 1000) {
      await run.audit({
        step: 'rate_limited',
        action: plan.action,
        params: { planId: plan.id, used: permit.used },
        decidedBy: 'policy',
        outcome: 'escalated',
      });
      return run.escalate(
        `the action budget (${policy.maxActionsPerHour}/h) stays spent past ${policy.maxRateLimitWaitSeconds} s`,
      );
    }
    run.enter(
      'rate_limited',
      `budget of ${policy.maxActionsPerHour}/h spent: next permit in ${Math.ceil(waitMs / 1000)} s`,
    );
    await run.audit({
      step: 'rate_limited',
      action: plan.action,
      params: { planId: plan.id, used: permit.used, nextFreeAt: permit.nextFreeAt },
      decidedBy: 'policy',
    });
    await sleep(Math.max(waitMs, 1_000));
    run.waited();
  }
}

/**
 * Before acting, after waiting for approval or a permit: the policy again (its verdict may be stale), and for a
 * restart a health check cannot justify (errors, slowness, a stall), the detector again: only while it still finds
 * the anomaly. Blind (Redis or Postgres unreadable) is not "still there": a human decides. Returns the run's end when
 * it must not act, undefined to act.
 */
export async function beforeActing(run: HealingRun, plan: Plan, key: string): Promise<HealingStatus | undefined> {
  const recheck = await checkSafetyWaiting(run, { plan, ownPermitKey: key });
  if (recheck.verdict.decision === 'escalate') {
    await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'refused' });
    await run.audit({
      step: 'refused',
      action: plan.action,
      params: { planId: plan.id, reasons: recheck.verdict.reasons, recheck: true },
      decidedBy: 'policy',
      outcome: 'escalate',
    });
    return run.escalate(`refused by policy before acting: ${recheck.verdict.reasons.join('; ')}`);
  }
  return stillThere(run, plan, key);
}

/** A restart a health check cannot justify needs its anomaly still detected (see beforeActing). */
const needsRecheck = (plan: Plan) => plan.action === 'restart_worker' && !healthDecides(plan);

/** The detector again before such a restart: the run's end when the anomaly is gone or cannot be seen. */
async function stillThere(run: HealingRun, plan: Plan, key: string): Promise<HealingStatus | undefined> {
  if (!needsRecheck(plan)) return undefined;
  const still = await verify(run.input);
  if (still.healed || still.blind) {
    await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'nothing_to_do' });
    await run.audit({
      step: 'skipped',
      action: plan.action,
      params: { planId: plan.id },
      decidedBy: 'policy',
      outcome: still.note,
    });
    if (still.blind) return run.escalate(`${plan.action} not run: ${still.note}`);
    return run.finish('healed', `gone before acting: ${still.note}`);
  }
  return undefined;
}

/**
 * Silences: while one holds the anomaly, no action runs. The hold is audited (`silenced`, with the silence's id, who
 * and why) and shown (phase `silenced`, note "silenced by #12 ..."), and waits on durable timers, re-checking every
 * SILENCE_RECHECK_INTERVAL s (a silence removed early is noticed within it) or at the silence's end. Once no silence
 * holds it, the detector is re-run: a fault gone meanwhile ends the run healed, one that cannot be seen escalates,
 * one still there goes on. Returns the run's end, or whether a silence held it.
 */
export async function holdWhileSilenced(run: HealingRun, plan: Plan): Promise<{ end?: HealingStatus; held: boolean }> {
  const recheckMs = (run.policy.silenceRecheckSeconds ?? 60) * 1000;
  const ask = () => activeSilence({ anomalyType: run.anomaly.type, target: run.anomaly.target, now: Date.now() });
  let heldBy: number | undefined;
  let heldSince = 0;
  for (let s = await ask(); s; s = await ask()) {
    if (s.id !== heldBy) {
      heldBy = s.id;
      heldSince = Date.now();
      run.enter('silenced', s.note);
      await run.audit({
        step: 'silenced',
        action: plan.action,
        params: { planId: plan.id, silenceId: s.id, reason: s.reason, silencedBy: s.createdBy, endsAt: s.endsAt },
        decidedBy: s.createdBy,
        outcome: `silenced by #${s.id}`,
      });
    }
    // At most ~200 re-checks per silence, so a long one keeps the history bounded (about 11 events each; silences
    // last at most 30 days): a silence longer than 200 x SILENCE_RECHECK_INTERVAL is re-checked every 1/200 of it.
    const periodMs = Math.max(recheckMs, Math.ceil((s.endsAt - heldSince) / 200));
    await sleep(Math.max(1_000, Math.min(s.endsAt - Date.now(), periodMs)));
    run.waited();
  }
  if (heldBy === undefined) return { held: false };
  const still = await verify(run.input);
  await run.audit({
    step: 'unsilenced',
    action: plan.action,
    params: { planId: plan.id, silenceId: heldBy },
    decidedBy: 'policy',
    outcome: still.healed ? 'gone' : still.blind ? still.note : 'still there: proceeding',
  });
  if (still.blind)
    return { held: true, end: await run.escalate(`${plan.action} not run after a silence: ${still.note}`) };
  if (still.healed) return { held: true, end: await run.finish('healed', `gone while silenced: ${still.note}`) };
  run.enter('checking', `silence #${heldBy} over and ${still.note}: ${plan.action} goes on`);
  return { held: true };
}

/**
 * Permit, checks and action, held while a silence matches: before the permit is reserved, and again once it is (a
 * silence added while the permit was awaited); then the permit is given back (outcome `refused`: it never ran and
 * is no restart for the cooldown or the breaker) and a new one is reserved after the hold.
 */
export async function actUnlessSilenced(
  run: HealingRun,
  plan: Plan,
  stage: string | undefined,
  baseKey: string,
): Promise<HealingStatus | undefined> {
  const silenced = () => activeSilence({ anomalyType: run.anomaly.type, target: run.anomaly.target, now: Date.now() });
  for (let attempt = 0; ; attempt++) {
    const key = attempt === 0 ? baseKey : `${baseKey}:s${attempt}`;
    // Whether this key's permit is reserved already (the gate got it, and the policy's recheck stopped it).
    let reserved = false;
    if (run.since('action-gate')) {
      // The usual case in one local activity: no silence, the permit, the policy's recheck. Where one does not pass,
      // the steps below take it from the same point (they wait, audit, escalate), for this same key.
      const policy = await run.readPolicy();
      const gate = await gateAction({
        anomalyType: run.anomaly.type,
        target: run.anomaly.target,
        plan,
        idempotencyKey: key,
        workflowId: run.info.workflowId,
        stage,
        policy,
        maxPerWindow: policy.maxActionsPerHour,
        windowMs: WINDOW_MS,
        now: Date.now(),
      });
      if (gate.pass) {
        const halt = await stillThere(run, plan, key);
        if (halt) return halt;
        // The detector's re-run took a while: a silence added meanwhile holds the action too.
        if (needsRecheck(plan) && (await silenced())) {
          await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'refused' });
          continue;
        }
        return execute(run, plan, key);
      }
      reserved = gate.at === 'policy';
    }
    if (!reserved) {
      // No permit is held while a silence holds the run (a hold may end it, and a permit kept through a long
      // silence would be stale: outside the budget's window when the action runs).
      const hold = await holdWhileSilenced(run, plan);
      if (hold.end) return hold.end;
      const stop = await waitForPermit(run, plan, stage, key);
      if (stop) return stop;
    }
    if (await silenced()) {
      await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'refused' });
      continue;
    }
    const halt = await beforeActing(run, plan, key);
    if (halt) return halt;
    // The checks before acting may have waited (a crash-loop backoff, a restart in flight): a silence added meanwhile
    // holds the action too. Histories from before this check replay without it.
    if (run.since('silence-before-execute') && (await silenced())) {
      await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'refused' });
      continue;
    }
    return execute(run, plan, key);
  }
}

/** 5. Act through the actions worker; the permit is closed with the outcome. Returns the run's end on a failure. */
export async function execute(run: HealingRun, plan: Plan, key: string): Promise<HealingStatus | undefined> {
  const { status } = run;
  run.enter('executing', `${plan.action}${plan.params.container ? ` ${plan.params.container}` : ''}`);
  let result: { outcome: string; details?: Record<string, unknown>; escalate?: boolean };
  try {
    result = await runAction(plan, key);
  } catch (err) {
    const message = errorMessage(err);
    await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: 'failed' });
    status.actions.push({
      action: plan.action,
      planId: plan.id,
      idempotencyKey: key,
      outcome: 'failed',
      at: Date.now(),
    });
    await run.audit({
      step: 'failed',
      action: plan.action,
      params: { planId: plan.id },
      error: message,
      idempotencyKey: key,
    });
    return run.escalate(`${plan.action} failed: ${message}`);
  }
  await finishPermit({ idempotencyKey: key, now: Date.now(), outcome: result.outcome });
  status.actions.push({
    action: plan.action,
    planId: plan.id,
    idempotencyKey: key,
    outcome: result.outcome,
    details: result.details,
    at: Date.now(),
  });
  if (result.outcome === 'refused') return run.escalate(`${plan.action} refused by the actions worker`);
  if (result.escalate) return run.escalate(`${plan.action}: ${JSON.stringify(result.details ?? {})}`);
  return undefined;
}

/**
 * 6. Verify: wait, then re-run the anomaly's detector. Rates and means over a window still hold the outcomes from
 * before the fix until the window has passed, so those wait at least the window.
 */
export async function verifyFix(run: HealingRun, plan: Plan, rung: number) {
  const { anomaly, policy, input, status } = run;
  const windowed = anomaly.type === 'error_rate_spike' || anomaly.type === 'processing_time_anomaly';
  // The runbook's delay when it sets one (it came with the plan from the analysis activity), else VERIFY_DELAY. Only
  // the timer's duration changes, not the commands: replay-safe without a patch.
  const delay = plan.verifyDelaySeconds ?? policy.verifyDelaySeconds;
  const verifyDelaySeconds = windowed ? Math.max(delay, input.thresholds.errorRateWindowSeconds) : delay;
  run.enter('verifying', `waiting ${verifyDelaySeconds} s, then re-running the ${anomaly.type} detector`);
  await sleep(verifyDelaySeconds * 1000);
  run.waited();
  const healed = await verify(input, plan.action !== 'no_action');
  status.verification = { at: Date.now(), healed: healed.healed, note: healed.note };
  // Healed: the run ends next, and its last row is written with this one.
  await run[healed.healed ? 'deferAudit' : 'audit']({
    step: 'verified',
    action: plan.action,
    params: { planId: plan.id, rung },
    outcome: healed.healed ? 'healed' : `not healed: ${healed.note}`,
  });
  return healed;
}

/**
 * Re-collects the snapshot (and the containers) and re-runs the same detector. `afterAction`: the verification of an
 * executed action, whose "gone" the monitoring cycle is told of (`monitoring:gone`), so that the anomaly back after it
 * fires again though it never cleared.
 */
async function verify(
  input: HealingInput,
  afterAction = false,
): Promise<{ healed: boolean; blind?: boolean; note: string; current?: Anomaly }> {
  const [snapshot, docker] = await Promise.all([
    collectMetrics(),
    inspectContainers({ names: input.containers, labels: input.containerLabels }),
  ]);
  const merged = withContainers(snapshot, docker);
  const r = await recheckAnomaly({
    anomaly: input.anomaly,
    snapshot: merged,
    thresholds: input.thresholds,
    ...(afterAction ? { markGone: true } : {}),
  });
  // Container anomalies cannot be verified without Docker's view of the containers.
  const needed = sourcesToVerify(input.anomaly.type);
  const blind = r.degraded.filter((s) => needed.includes(s));
  if (blind.length > 0) return { healed: false, blind: true, note: `cannot verify: ${blind.join(', ')} unreadable` };
  if (r.present) return { healed: false, note: r.current?.summary ?? 'still detected', current: r.current };
  return { healed: true, note: `${input.anomaly.type} no longer detected on ${input.anomaly.target}` };
}
