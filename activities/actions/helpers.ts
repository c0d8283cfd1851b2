import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Plan } from '../../core/plan';
import type { ActionType } from '../../core/types';
import { ActionErrorType, type ActionInput } from './types';

export const STAGE_RE = /^[A-Za-z0-9_.-]+$/;
export const WORKER_RE = /^[A-Za-z0-9_.-]+$/;

export function invalid(message: string): never {
  throw ApplicationFailure.nonRetryable(message, ActionErrorType.invalid_input);
}

/** Workflow id, run id and activity id of the running activity: the executed row names the run that acted. */
export function activityRun(): { workflowId: string; runId: string; activityId: string } {
  const info = Context.current().info;
  const run = info.workflowExecution;
  if (!run) invalid('actions run only as activities of a workflow');
  return { workflowId: run.workflowId, runId: run.runId, activityId: info.activityId };
}

export function checkInput(input: ActionInput, action: ActionType): Plan {
  const plan = input?.plan;
  if (!plan || typeof plan !== 'object') invalid(`${action}: no plan`);
  if (plan.action !== action) invalid(`${action} called with a plan for ${String(plan.action)}`);
  if (typeof input.idempotencyKey !== 'string' || input.idempotencyKey.length === 0) {
    invalid(`${action}: an idempotency key is required`);
  }
  return plan;
}

export function documentIdsOf(plan: Plan): number[] {
  const ids = plan.params.documentIds;
  if (!Array.isArray(ids) || ids.length === 0) invalid(`${plan.action}: params.documentIds must list documents`);
  for (const id of ids) {
    if (!Number.isSafeInteger(id) || id <= 0) invalid(`${plan.action}: bad document id ${JSON.stringify(id)}`);
  }
  return [...new Set(ids)];
}
