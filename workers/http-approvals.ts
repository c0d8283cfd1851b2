/**
 * Healings over HTTP, for chat-ops and on-call tools: `GET /healings/{id}` (the `status` answer) and
 * `POST /healings/{id}/approve|reject` through the same validated `decide` update as `selfheal approve|reject`.
 *
 * Gated like the CLI, and more: the workflow checks APPROVERS and that the plan id is the current plan; and since
 * anyone who reaches the port could post, deciding over HTTP needs APPROVAL_SECRET. The caller either signs the
 * decision itself (`signature`: the hex HMAC the CLI computes) or proves it holds the secret
 * (`Authorization: Bearer <APPROVAL_SECRET>`), in which case the server signs for it. The healing worker verifies
 * the signature either way.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { z } from 'zod';
import { signApproval } from '../activities/approval';
import { errorFirstLine } from '../core/errors';
import { decideUpdate, statusQuery, WorkflowType, type HealingStatus } from '../workflows/definitions';

export interface HttpAnswer {
  status: number;
  body: unknown;
}

const fail = (status: number, error: string): HttpAnswer => ({
  status,
  body: { error: error.replace(/\s+/g, ' ').slice(0, 500) },
});

/** True when `given` equals `expected`, compared in constant time (over digests: lengths may differ). */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return m?.[1];
}

const decisionBody = z.object({
  by: z.string().trim().min(1, { error: 'by must name who decides' }).max(200),
  planId: z.string().trim().min(1, { error: 'planId is required: the plan you reviewed' }).max(200),
  reason: z.string().max(1_000).optional(),
  signature: z
    .string()
    .regex(/^[0-9a-f]{64}$/, { error: 'signature must be a hex HMAC-SHA256' })
    .optional(),
});

/** A healing's state: its `status` query while it runs, its result once it completed. */
export async function showHealing(client: Client, workflowId: string): Promise<HttpAnswer> {
  const handle = client.workflow.getHandle(workflowId);
  let described;
  try {
    described = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return fail(404, `no workflow ${workflowId}`);
    throw err;
  }
  if (described.type !== WorkflowType.healing) return fail(404, `${workflowId} is not a healing workflow`);
  const state = described.status.name;
  if (state !== 'RUNNING' && state !== 'COMPLETED') {
    return { status: 200, body: { workflowId, runId: described.runId, status: state } };
  }
  const healing = state === 'RUNNING' ? await handle.query(statusQuery) : ((await handle.result()) as HealingStatus);
  return { status: 200, body: { workflowId, runId: described.runId, status: state, healing } };
}

/** HTTP status of each typed refusal of the `decide` update (workflows/healing/approval.ts). */
const REFUSAL_STATUS: Record<string, number> = {
  not_awaiting_approval: 409,
  not_approver: 403,
  decision_refused: 403,
  signature_required: 403,
  invalid_input: 400,
};

/**
 * Approves or rejects the plan awaiting approval. 200 with the workflow's answer; 400 bad body; 401 no way to sign;
 * 403 not an approver or a refused signature; 404 no such healing; 409 nothing awaits approval, already decided, or
 * another plan than the current one. A 409 changes nothing.
 */
export async function decideOverHttp(
  client: Client,
  opts: { secret?: string; authorization?: string },
  workflowId: string,
  decision: 'approve' | 'reject',
  body: unknown,
): Promise<HttpAnswer> {
  if (!opts.secret) {
    return fail(403, 'deciding over HTTP needs APPROVAL_SECRET on selfheal: use selfheal approve or reject');
  }
  const parsed = decisionBody.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return fail(400, `${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  const { by, planId, reason, signature: given } = parsed.data;
  if (decision === 'reject' && !reason?.trim()) return fail(400, 'reason: a rejection says why');
  let signature = given;
  if (signature) {
    // Checked here too: a healing started while APPROVAL_SECRET was unset does not check signatures itself, and a
    // made-up one must not pass through this port.
    if (!sameSecret(signature.toLowerCase(), signApproval(opts.secret, { workflowId, planId, decision, by }))) {
      return fail(403, 'signature refused: it does not sign this workflow, plan, decision and approver');
    }
  } else {
    const token = bearerToken(opts.authorization);
    if (!token || !sameSecret(token, opts.secret)) {
      return fail(401, 'a decision needs a signature, or Authorization: Bearer <APPROVAL_SECRET>');
    }
    signature = signApproval(opts.secret, { workflowId, planId, decision, by });
  }
  let described;
  try {
    described = await client.workflow.getHandle(workflowId).describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return fail(404, `no workflow ${workflowId}`);
    throw err;
  }
  if (described.type !== WorkflowType.healing) return fail(404, `${workflowId} is not a healing workflow`);
  if (described.status.name !== 'RUNNING') {
    return fail(409, `${workflowId} is not awaiting approval (${described.status.name.toLowerCase()})`);
  }
  try {
    const answer = await client.workflow
      .getHandle(workflowId)
      .executeUpdate(decideUpdate, { args: [{ decision, by, planId, signature, ...(reason ? { reason } : {}) }] });
    return { status: 200, body: { workflowId, planId, by, decision: answer } };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return fail(409, `${workflowId} is not awaiting approval (closed)`);
    if (!(err instanceof WorkflowUpdateFailedError)) throw err;
    const cause = err.cause as { type?: string; message?: string } | undefined;
    const status = REFUSAL_STATUS[cause?.type ?? ''] ?? 409;
    return fail(status, `${workflowId} refused the decision: ${errorFirstLine(cause?.message ?? String(err.cause))}`);
  }
}
