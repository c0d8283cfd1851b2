/**
 * The checks right before an action, in one local activity where they were five (one marker and one workflow
 * activation instead of five): no silence holds the anomaly, a permit of the budget is reserved, the policy still
 * allows the plan. It stops at the first check that does not pass and says which; the healing then takes its
 * step-by-step path (workflows/healing/phases.ts) from that point, which waits, audits and escalates as before: from
 * the silence, from the permit (none was reserved), or, when the recheck stopped it, with the permit it holds (a
 * silence then gives it back, as after any permit).
 */
import type { Plan } from '../core/plan';
import type { SafetyPolicy } from '../core/safety';
import type { createSafetyActivities } from './safety';
import type { createSilenceActivities } from './silences';

export interface GateInput {
  anomalyType: string;
  target: string;
  plan: Plan;
  /** The permit's idempotency key (also the action's). */
  idempotencyKey: string;
  workflowId: string;
  /** Stage of the target, for restarts (at most one in flight per stage). */
  stage?: string;
  policy: SafetyPolicy;
  /** The budget: permits per rolling window. */
  maxPerWindow: number;
  windowMs: number;
  /** Workflow time, epoch ms. */
  now: number;
}

/** `pass`: the permit is reserved and the policy allows the plan; else the first check that did not pass. */
export type GateResult = { pass: true } | { pass: false; at: 'silence' | 'permit' | 'policy' };

export function createGateActivities(deps: {
  safety: Pick<ReturnType<typeof createSafetyActivities>, 'checkSafety' | 'reservePermit'>;
  silences: ReturnType<typeof createSilenceActivities>;
}) {
  return {
    async gateAction(input: GateInput): Promise<GateResult> {
      const { plan, now, workflowId, idempotencyKey } = input;
      // A retried attempt gets its first attempt's input: the silences are those of now, not of then.
      const silenceAt = Math.max(now, Date.now());
      if (await deps.silences.activeSilence({ anomalyType: input.anomalyType, target: input.target, now: silenceAt })) {
        return { pass: false, at: 'silence' };
      }
      const permit = await deps.safety.reservePermit({
        idempotencyKey,
        workflowId,
        plan,
        stage: input.stage,
        now,
        maxPerWindow: input.maxPerWindow,
        windowMs: input.windowMs,
      });
      if (!permit.granted) return { pass: false, at: 'permit' };
      const { verdict } = await deps.safety.checkSafety({
        plan,
        policy: input.policy,
        workflowId,
        now,
        ownPermitKey: idempotencyKey,
      });
      if (verdict.decision === 'wait' || verdict.decision === 'escalate') return { pass: false, at: 'policy' };
      return { pass: true };
    },
  };
}
