import type { Plan } from '../../core/plan';
import { escalationCommands } from '../../core/notify';
import { createNotice } from './notice';
import type { ActionContext } from './context';
import { record } from './executed-row';
import { activityRun, checkInput, invalid } from './helpers';
import type { ActionInput, ActionResult } from './types';

export function createEscalate(ctx: ActionContext) {
  const { pool, log, priorResult } = ctx;
  const notice = createNotice(ctx);

  /**
   * Tells a human: one log line, and the webhook when configured (with the commands that approve or reject).
   * `done` without a webhook; `partial` when the webhook could not be delivered. Written after the POST; a retry in
   * the window posts again (a duplicate message, never a lost one).
   */
  async function escalateToHuman(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'escalate_to_human');
    const prior = await priorResult('escalate_to_human', input.idempotencyKey);
    if (prior) return prior;
    const result: ActionResult = { action: 'escalate_to_human', ...(await tellHuman(plan, false)) };
    await record(pool, input, result);
    return result;
  }

  /**
   * Tells a human that a healing waits for a decision on `plan` (any action): a log line and the webhook, with the
   * commands that approve or reject exactly that plan. Not an action (changes nothing, writes no executed row); the
   * workflow audits the delivery. A retry after a delivered webhook may deliver it twice: receivers see the same
   * plan id.
   */
  async function requestApproval(input: ActionInput): Promise<ActionResult> {
    const plan = input?.plan;
    if (!plan || typeof plan !== 'object' || typeof plan.id !== 'string') invalid('requestApproval: no plan');
    return { action: plan.action, ...(await tellHuman(plan, true)) };
  }

  /** The log line and the webhook (retried inside, see activities/notify.ts), and what became of them. */
  async function tellHuman(plan: Plan, awaitingApproval: boolean): Promise<Omit<ActionResult, 'action'>> {
    const { workflowId, runId } = activityRun();
    const commands = escalationCommands(workflowId, awaitingApproval ? plan.id : undefined);
    log.warn(
      {
        workflowId,
        runId,
        anomalyType: plan.anomalyType,
        target: plan.target,
        planId: plan.id,
        reason: plan.params.reason ?? plan.reasoning,
        commands,
      },
      awaitingApproval ? `approval needed: ${plan.action}` : 'escalation: human attention needed',
    );
    const delivery = await notice(plan, { awaitingApproval });
    return {
      outcome: delivery.webhook === 'failed' ? 'partial' : 'done',
      details: { logged: true, ...delivery, commands },
    };
  }

  return { escalateToHuman, requestApproval };
}
