/**
 * Human decisions: the approve/reject signals and the `decide` update, checked one way (`stateProblem` and
 * `approverError`, plus a signature when APPROVAL_SECRET is set), and the approval phase that waits for one.
 */
import { ApplicationFailure, condition, setHandler } from '@temporalio/workflow';
import { errorMessage } from '../../core/errors';
import type { Plan } from '../../core/plan';
import type { Verdict } from '../../core/safety';
import {
  alertResolvedSignal,
  anomalySeenSignal,
  approveSignal,
  decideUpdate,
  rejectSignal,
  statusQuery,
  type AlertResolved,
  type Decision,
  type DecideInput,
  type HealingStatus,
} from '../definitions';
import { notices, verifyApproval } from './proxies';
import type { HealingRun } from './run';

type DecisionInput = Omit<Decision, 'at' | 'planId'> & { planId?: string };

/** Why no decision can apply now: nothing awaits one, one was already made, or it is for another plan. */
function stateProblem(run: HealingRun, planId: string | undefined): string | undefined {
  const { status, pending } = run;
  if (status.phase !== 'awaiting_approval' || !status.plan) return `nothing awaits approval (phase ${status.phase})`;
  if (pending) return `already decided: ${pending.decision} by ${pending.by}`;
  if (planId !== undefined && planId !== status.plan.id) {
    return `plan ${planId} is not the current plan ${status.plan.id}`;
  }
  return undefined;
}

function approverError(run: HealingRun, by: string): string | undefined {
  if (!by || !by.trim()) return 'by must name who decides';
  if (run.policy.approvers.length > 0 && !run.policy.approvers.includes(by)) return `${by} is not in APPROVERS`;
  return undefined;
}

/** Records the decision when it can apply; otherwise lists it under `ignored` and says why. */
function decide(run: HealingRun, d: DecisionInput): string | undefined {
  const problem = stateProblem(run, d.planId) ?? approverError(run, d.by);
  if (problem) {
    run.ignore(`${d.via} ${d.decision} by ${d.by || '(nobody)'}: ${problem}`);
    return problem;
  }
  run.pending = { ...d, planId: run.status.plan!.id, at: Date.now() };
  return undefined;
}

/**
 * A decision that must be signed: the usual checks, then the signature, verified by an activity (the secret stays
 * on the worker). A refused signature is listed under `ignored` and audited; the decision changes nothing.
 */
async function decideSigned(run: HealingRun, d: DecisionInput, signature: string | undefined) {
  const { status } = run;
  const planId = status.plan?.id;
  if (status.phase !== 'awaiting_approval' || !planId || run.pending) return decide(run, d);
  const check = await verifyApproval({ planId: d.planId ?? planId, decision: d.decision, by: d.by, signature });
  if (!check.valid) {
    const why = `signature refused: ${check.why ?? 'invalid'}`;
    run.ignore(`${d.via} ${d.decision} by ${d.by || '(nobody)'}: ${why}`);
    await run.audit({
      step: 'refused',
      action: status.plan?.action,
      params: { planId, decision: d.decision, via: d.via },
      decidedBy: d.by || '(nobody)',
      outcome: why,
    });
    return why;
  }
  return decide(run, d);
}

/** The query, the sighting signal, and the decision signals and update of a healing run. */
export function setHandlers(run: HealingRun): void {
  const { status } = run;
  // The policy is read when the handlers run: the worker's current one once the healing has read it (run.ts).
  setHandler(statusQuery, () => status);
  setHandler(anomalySeenSignal, () => {
    status.seen += 1;
  });
  // Alertmanager says the alert behind this run resolved: recorded (query answer only; no command, no phase change).
  setHandler(alertResolvedSignal, (r?: Partial<AlertResolved>) => {
    // Anyone with namespace access may send it: a malformed one must not fail the workflow task.
    const text = (v: unknown) => (typeof v === 'string' ? v.slice(0, 64) : '?');
    const at = Date.now();
    status.resolved = {
      fingerprint: text(r?.fingerprint),
      startsAt: text(r?.startsAt),
      ...(typeof r?.endsAt === 'string' ? { endsAt: text(r.endsAt) } : {}),
      receivedAt: at,
    };
    if (status.history.length < 200) {
      status.history.push({
        at,
        phase: status.phase,
        note: `alert ${status.resolved.fingerprint} resolved in Alertmanager`,
      });
    }
  });
  const signal = (d: DecisionInput, signature: string | undefined) => {
    if (run.policy.signedApprovals) void decideSigned(run, d, signature);
    else decide(run, d);
  };
  setHandler(approveSignal, ({ by, reason, planId, signature }) =>
    signal({ decision: 'approve', by, reason, planId, via: 'signal' }, signature),
  );
  setHandler(rejectSignal, ({ by, reason, planId, signature }) =>
    signal({ decision: 'reject', by, reason, planId, via: 'signal' }, signature),
  );
  setHandler(
    decideUpdate,
    (d: DecideInput) => {
      const decision = { decision: d.decision, by: d.by, reason: d.reason, planId: d.planId, via: 'update' as const };
      if (run.policy.signedApprovals) {
        return decideSigned(run, decision, d.signature).then((problem) => {
          if (problem) throw ApplicationFailure.nonRetryable(problem, 'decision_refused');
          return run.pending!.decision;
        });
      }
      decide(run, decision);
      return run.pending!.decision;
    },
    {
      validator: (d: DecideInput) => {
        // Typed refusals (a validator's failure is not in the history: no replay concern), so that a client such as
        // the HTTP server answers each with its status without reading the message.
        if (d.decision !== 'approve' && d.decision !== 'reject')
          throw ApplicationFailure.nonRetryable(`unknown decision: ${String(d.decision)}`, 'invalid_input');
        const who = approverError(run, d.by);
        if (who) throw ApplicationFailure.nonRetryable(who, d.by?.trim() ? 'not_approver' : 'invalid_input');
        const state = stateProblem(run, d.planId);
        if (state) throw ApplicationFailure.nonRetryable(state, 'not_awaiting_approval');
        if (run.policy.signedApprovals && !d.signature) {
          throw ApplicationFailure.nonRetryable(
            'a signed decision is required (APPROVAL_SECRET is set): use selfheal approve or reject',
            'signature_required',
          );
        }
      },
    },
  );
}

/**
 * The approval phase: tell a human (log, webhook with the commands bound to this plan; a failed notice never blocks
 * the wait), wait for a decision up to APPROVAL_TIMEOUT (none rejects), audit it. Returns the decision.
 */
export async function awaitApproval(
  run: HealingRun,
  plan: Plan,
  verdict: Verdict,
  rung: number,
  hold?: () => Promise<{ end?: HealingStatus; held: boolean }>,
): Promise<Decision | { end: HealingStatus }> {
  const { info } = run;
  run.enter('awaiting_approval', verdict.reasons.join('; '));
  let notice: string;
  try {
    const r = await notices.requestApproval({
      plan,
      idempotencyKey: `${info.workflowId}:${info.runId}:${rung}:${plan.id}:approval`,
    });
    notice = typeof r.details.webhook === 'string' ? r.details.webhook : r.outcome;
  } catch (err) {
    notice = `failed: ${errorMessage(err)}`;
  }
  await run.audit({
    step: 'notified',
    action: plan.action,
    params: { planId: plan.id, event: 'approval_requested', reasons: verdict.reasons },
    decidedBy: 'policy',
    outcome: notice,
  });
  let decided = await condition(() => run.pending !== null, run.policy.approvalTimeoutSeconds * 1000);
  run.waited();
  // A silence that holds the anomaly when the wait runs out holds the request too, not drops it: once the silence is
  // over (and the fault still there) the wait starts again, for a whole APPROVAL_TIMEOUT.
  while (!decided && hold && run.since('silence-approval')) {
    const held = await hold();
    if (held.end) return { end: held.end };
    if (!held.held) break;
    run.enter('awaiting_approval', `${verdict.reasons.join('; ')} (again, after the silence)`);
    decided = await condition(() => run.pending !== null, (await run.readPolicy()).approvalTimeoutSeconds * 1000);
    run.waited();
  }
  if (!decided) {
    run.pending = {
      decision: 'reject',
      by: 'policy',
      reason: 'approval timeout',
      planId: plan.id,
      at: Date.now(),
      via: 'timeout',
    };
  }
  const d = run.pending!;
  run.status.decision = d;
  // A rejection ends the run next: its last row is written with this one.
  await run[d.decision === 'reject' ? 'deferAudit' : 'audit']({
    step: d.decision === 'approve' ? 'approved' : 'rejected',
    action: plan.action,
    params: { planId: plan.id, via: d.via },
    decidedBy: d.by,
    confidence: plan.confidence,
    outcome: d.reason,
  });
  return d;
}
