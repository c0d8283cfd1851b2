/**
 * The safety policy: `evaluateSafety(plan, context) => Verdict`. Pure: the state it needs (recent restarts, permits,
 * healthy workers) is read by the `checkSafety` activity and passed in. Deny by default: anything the policy does not
 * positively allow either waits for a human or is escalated.
 */
import type { Plan } from './plan';

export interface SafetyContext {
  /** epoch ms (workflow time). */
  now: number;
  /** AUTO_FIX_ENABLED: when false, every action waits for approval. */
  autoFix: boolean;
  /** MIN_CONFIDENCE, 0..1. */
  minConfidence: number;
  /**
   * Set when the anomaly's runbook (RUNBOOKS_FILE) says `approval: always`: where that rule comes from (`<file>
   * runbooks[i]`). Every action then waits for a human, auto-fix or not; escalation and no_action stay allowed.
   */
  approvalAlwaysBy?: string;
  /** CONTAINER_ALLOWLIST / CONTAINER_DENYLIST globs; the deny list wins. */
  allowlist: string[];
  denylist: string[];
  /** RESTART_COOLDOWN, s: the gap after a restart before the next one of the target, doubling in a crash loop. */
  cooldownSeconds: number;
  /** Cap of the crash-loop backoff, s (default RESTART_BACKOFF_MAX_SECONDS). */
  restartBackoffMaxSeconds?: number;
  /** Restarts of this target that make the circuit breaker open within `breakerWindowSeconds`. */
  breakerRestarts: number;
  breakerWindowSeconds: number;
  /** Documents one requeue may move. */
  requeueCap: number;
  /**
   * epoch ms of the restart permits of this target in the breaker window, newest last: restarts executed or in flight,
   * and those that found nothing to do (`noopRestartsOfTarget`), which start the cooldown too.
   */
  recentRestartsOfTarget: number[];
  /**
   * epoch ms of the permits among `recentRestartsOfTarget` whose restart did not run (the check before acting found
   * the fault gone): the circuit breaker does not count them, since it counts restarts.
   */
  noopRestartsOfTarget?: number[];
  /**
   * epoch ms of the restarts Docker's restart policy made of this target in the breaker window, oldest first: a crash
   * loop is a crash loop whoever restarts it.
   */
  dockerRestartsOfTarget?: number[];
  /** Restarts in flight (reserved, not finished) for the same stage or service, other than this workflow's. */
  restartsInFlightInStage: number;
  /** For restart_worker: the label that puts the container in scope (`selfheal.enable=true`, `autoheal=true`). */
  targetScopeLabel?: string;
  /**
   * For restart_worker: is the container healthy now, and how many healthy replicas its group has: its pipeline
   * stage, else its compose service (`targetGroup` names which); undefined when it belongs to neither.
   */
  targetHealthy?: boolean;
  healthyWorkersInStage?: number;
  targetGroup?: string;
}

/** The configured part of the policy context (the rest is state the safety activities read). */
export type SafetyPolicy = Pick<
  SafetyContext,
  | 'autoFix'
  | 'minConfidence'
  | 'allowlist'
  | 'denylist'
  | 'cooldownSeconds'
  | 'restartBackoffMaxSeconds'
  | 'breakerRestarts'
  | 'breakerWindowSeconds'
  | 'requeueCap'
>;

export const VerdictDecision = {
  /** Act now (a permit is still needed). */
  allow: 'allow',
  /** Act only after a human approves this exact plan. */
  needs_approval: 'needs_approval',
  /** Do not act; escalate to a human with the reasons. */
  escalate: 'escalate',
  /**
   * Not yet: another restart of the stage is in flight, or a crash loop backs off; check again later (durable timer,
   * bounded by RATE_LIMIT_MAX_WAIT).
   */
  wait: 'wait',
} as const;
export type VerdictDecision = (typeof VerdictDecision)[keyof typeof VerdictDecision];

export interface Verdict {
  decision: VerdictDecision;
  /** Every rule that spoke, in words an approver reads. */
  reasons: string[];
  /** Whether acting needs a permit of the global budget (escalations and no_action do not). */
  needsPermit: boolean;
  /** With `wait`: when checking again makes sense (epoch ms), when the policy knows (a crash loop's backoff). */
  retryAt?: number;
}

/** Restarts back off from RESTART_COOLDOWN, doubling per restart in the breaker window, up to the cap (1 h default). */
export const RESTART_BACKOFF_MAX_SECONDS = 3600;

/** The gap a restart needs after the last one, when the breaker window holds `restarts` restarts of the target. */
export function restartBackoffMs(restarts: number, cooldownSeconds: number, maxSeconds = RESTART_BACKOFF_MAX_SECONDS) {
  const doubled = cooldownSeconds * 2 ** Math.max(0, Math.min(restarts, 20) - 1);
  return Math.min(doubled, Math.max(maxSeconds, cooldownSeconds)) * 1000;
}

/** Glob match of a container name: `*` any run, `?` one character, `[...]` a class. */
export function globMatch(pattern: string, name: string): boolean {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${pattern.slice(i + 1, end).replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`${re}$`).test(name);
}

/** Why the deny list forbids touching the container, or undefined. */
export function containerDenied(name: string, denylist: string[]): string | undefined {
  const denied = denylist.find((p) => globMatch(p, name));
  return denied ? `container ${name} is on the deny list (${denied})` : undefined;
}

/**
 * In scope for restart when no deny pattern matches and some allow pattern does, or the container carries a scope
 * label (`label`: `selfheal.enable=true` or `autoheal=true`, core/container-scope.ts). The deny list wins.
 */
export function containerAllowed(
  name: string,
  allowlist: string[],
  denylist: string[],
  label?: string,
): { ok: boolean; why: string } {
  const denied = containerDenied(name, denylist);
  if (denied) return { ok: false, why: denied };
  const allowed = allowlist.find((p) => globMatch(p, name));
  if (allowed) return { ok: true, why: `container ${name} allowed by ${allowed}` };
  if (label) return { ok: true, why: `container ${name} in scope by its label ${label}` };
  return { ok: false, why: `container ${name} matches no allow-list pattern and carries no scope label` };
}

export function evaluateSafety(plan: Plan, ctx: SafetyContext): Verdict {
  const reasons: string[] = [];
  if (plan.action === 'no_action') return { decision: 'allow', reasons: ['no action proposed'], needsPermit: false };
  if (plan.action === 'escalate_to_human') {
    return { decision: 'allow', reasons: ['escalation is always allowed'], needsPermit: false };
  }
  const escalate = (why: string): Verdict => ({ decision: 'escalate', reasons: [...reasons, why], needsPermit: false });

  if (plan.action === 'restart_worker') {
    const container = plan.params.container;
    if (!container) return escalate('restart_worker without a container');
    const allowed = containerAllowed(container, ctx.allowlist, ctx.denylist, ctx.targetScopeLabel);
    if (!allowed.ok) return escalate(allowed.why);
    reasons.push(allowed.why);
    const windowStart = ctx.now - ctx.breakerWindowSeconds * 1000;
    const byDocker = (ctx.dockerRestartsOfTarget ?? []).filter((t) => t > windowStart);
    const restarts = [...ctx.recentRestartsOfTarget, ...byDocker].sort((a, b) => a - b);
    const inWindow = restarts.filter((t) => t > windowStart);
    const dockerNote = byDocker.length > 0 ? ` (${byDocker.length} by Docker's restart policy)` : '';
    const poison = plan.params.quarantineFirst ?? [];
    const ran = inWindow.length - (ctx.noopRestartsOfTarget ?? []).filter((t) => t > windowStart).length;
    if (ran >= ctx.breakerRestarts) {
      const open = `circuit breaker open: ${ran} restarts of ${container}${dockerNote} in the last ${ctx.breakerWindowSeconds / 60} min`;
      // The loop's cause is known and removed first: the documents it died on are quarantined before this restart.
      if (poison.length === 0) return escalate(open);
      reasons.push(
        `${open}, but the document${poison.length > 1 ? 's' : ''} it died on (${poison.join(', ')}) are quarantined first`,
      );
    }
    // Among the replicas of its stage or compose service; a container that has none is not counted against.
    if (ctx.targetHealthy && ctx.healthyWorkersInStage !== undefined && ctx.healthyWorkersInStage <= 1) {
      return escalate(`${container} is the last healthy worker of its ${ctx.targetGroup ?? 'stage'}`);
    }
    // A crash loop backs off, like Kubernetes' CrashLoopBackOff: after n restarts of the target in the breaker window
    // the next one waits RESTART_COOLDOWN x 2^(n-1) after the last (capped), on durable timers, instead of giving up.
    // Not when the loop's cause is removed first (the documents it died on are quarantined): then at once.
    const last = restarts[restarts.length - 1];
    if (last !== undefined && poison.length === 0) {
      const backoffMs = restartBackoffMs(inWindow.length, ctx.cooldownSeconds, ctx.restartBackoffMaxSeconds);
      if (ctx.now - last < backoffMs) {
        const ago = Math.round((ctx.now - last) / 1000);
        return {
          decision: 'wait',
          reasons: [
            ...reasons,
            `crash loop: ${inWindow.length} restart${inWindow.length === 1 ? '' : 's'} of ${container}${dockerNote} in the last ` +
              `${ctx.breakerWindowSeconds / 60} min, the last ${ago} s ago; backing off ${Math.round(backoffMs / 1000)} s ` +
              `(RESTART_COOLDOWN ${ctx.cooldownSeconds} s, doubling)`,
          ],
          needsPermit: true,
          retryAt: last + backoffMs,
        };
      }
    }
    // One restart in flight per stage: a second dead worker of the stage waits for the first restart, it is not
    // given up on (two dead workers of one stage are both restarted, one after the other).
    if (ctx.restartsInFlightInStage > 0) {
      return {
        decision: 'wait',
        reasons: [...reasons, 'another restart is in flight in the same stage'],
        needsPermit: true,
      };
    }
  }
  if (plan.action === 'requeue_documents' || plan.action === 'quarantine_document') {
    const n = plan.params.documentIds?.length ?? 0;
    if (n === 0) return escalate(`${plan.action} without documents`);
    if (n > ctx.requeueCap) return escalate(`${n} documents exceed the cap of ${ctx.requeueCap} per action`);
  }
  if (plan.action === 'clear_stale_locks' && (plan.params.locks?.length ?? 0) === 0) {
    return escalate('clear_stale_locks without observed locks');
  }

  const approval: string[] = [];
  if (!ctx.autoFix) approval.push('auto-fix is off: every action waits for approval');
  if (ctx.approvalAlwaysBy) approval.push(`the runbook (${ctx.approvalAlwaysBy}) always asks for approval`);
  if (!(plan.confidence >= ctx.minConfidence)) {
    approval.push(`confidence ${plan.confidence.toFixed(2)} is under the floor ${ctx.minConfidence}`);
  }
  if (approval.length > 0) return { decision: 'needs_approval', reasons: [...reasons, ...approval], needsPermit: true };
  return { decision: 'allow', reasons: [...reasons, 'within policy'], needsPermit: true };
}
