/**
 * Signed approvals (APPROVAL_SECRET). With the secret set, a decision counts only when it carries an HMAC-SHA256 of
 * the workflow id, the plan id, the decision and the approver, made with the secret. The secret lives only where
 * decisions are made (`selfheal approve|reject`) and where they are checked (this activity, on the healing worker):
 * never in workflow input or history, so write access to the Temporal namespace alone cannot approve anything.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Context } from '@temporalio/activity';

export interface SignedDecision {
  workflowId: string;
  planId: string;
  decision: 'approve' | 'reject';
  by: string;
}

/** The signed text: versioned, one field per line (none of them can hold a newline that matters: see below). */
export function approvalMessage(d: SignedDecision): string {
  // JSON-encode each field so that no value can forge the separator of another.
  return ['selfheal-approval-v1', d.workflowId, d.planId, d.decision, d.by].map((f) => JSON.stringify(f)).join('\n');
}

/** Hex HMAC-SHA256 of the decision with the secret. */
export function signApproval(secret: string, d: SignedDecision): string {
  return createHmac('sha256', secret).update(approvalMessage(d)).digest('hex');
}

function check(
  secret: string | undefined,
  workflowId: string | undefined,
  input: Omit<SignedDecision, 'workflowId'> & { signature?: string },
): { valid: boolean; why?: string } {
  if (!secret) return { valid: false, why: 'APPROVAL_SECRET is not set on the healing worker' };
  if (!workflowId) return { valid: false, why: 'not called from a workflow' };
  if (typeof input.signature !== 'string' || !/^[0-9a-f]{64}$/.test(input.signature)) {
    return { valid: false, why: 'no signature, or not a hex HMAC-SHA256' };
  }
  const expected = Buffer.from(signApproval(secret, { ...input, workflowId }), 'hex');
  const given = Buffer.from(input.signature, 'hex');
  return timingSafeEqual(expected, given) ? { valid: true } : { valid: false, why: 'signature does not match' };
}

export function createApprovalActivities({ secret }: { secret?: string }) {
  return {
    /**
     * Whether `signature` signs this decision for the calling workflow (its id is taken from the activity context,
     * not from the input). Without a configured secret nothing verifies: fail closed.
     */
    verifyApproval(
      input: Omit<SignedDecision, 'workflowId'> & { signature?: string },
    ): Promise<{ valid: boolean; why?: string }> {
      const workflowId = Context.current().info.workflowExecution?.workflowId;
      return Promise.resolve(check(secret, workflowId, input));
    },
  };
}
