import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { approvalMessage, createApprovalActivities, signApproval } from '../../activities/approval';

const SECRET = 'unit-test-secret-0123456789';
const base = { workflowId: 'heal-stale_locks-w1', planId: 'p1', decision: 'approve' as const, by: 'alice' };

function verify(
  secret: string | undefined,
  input: Record<string, unknown>,
  workflowId = base.workflowId,
): Promise<{ valid: boolean; why?: string }> {
  const env = new MockActivityEnvironment(
    { workflowExecution: { workflowId, runId: 'r1' } },
    { logger: new DefaultLogger('ERROR') },
  );
  const activities = createApprovalActivities({ secret });
  return env.run((i: never) => activities.verifyApproval(i), input as never);
}

describe('approval signatures', () => {
  it('sign: hex HMAC-SHA256, stable, different for each field', () => {
    const sig = signApproval(SECRET, base);
    expect(sig).toMatch(/^[0-9a-f]{64}$/);
    expect(signApproval(SECRET, base)).toBe(sig);
    for (const change of [
      { workflowId: 'heal-x' },
      { planId: 'p2' },
      { decision: 'reject' as const },
      { by: 'mallory' },
    ]) {
      expect(signApproval(SECRET, { ...base, ...change })).not.toBe(sig);
    }
    expect(signApproval('another-secret-0123456789', base)).not.toBe(sig);
  });

  it('no field can forge the separator of another', () => {
    const a = approvalMessage({ ...base, planId: 'p1', by: 'alice' });
    const b = approvalMessage({ ...base, planId: 'p1"\n"approve', by: 'alice' });
    expect(a).not.toBe(b);
    expect(approvalMessage({ ...base, by: 'a\nb' }).split('\n')).toHaveLength(5);
  });

  const { workflowId: _w, ...decision } = base;
  it.each([
    { name: 'valid', secret: SECRET, input: { ...decision, signature: signApproval(SECRET, base) }, valid: true },
    { name: 'unsigned', secret: SECRET, input: decision, why: /no signature/ },
    { name: 'garbage', secret: SECRET, input: { ...decision, signature: 'zz' }, why: /not a hex/ },
    {
      name: 'another approver',
      secret: SECRET,
      input: { ...decision, by: 'mallory', signature: signApproval(SECRET, base) },
      why: /does not match/,
    },
    {
      name: 'another workflow (the id comes from the activity context, not the input)',
      secret: SECRET,
      input: { ...decision, signature: signApproval(SECRET, { ...base, workflowId: 'heal-other' }) },
      why: /does not match/,
    },
    {
      name: 'no secret on the worker: fail closed',
      secret: undefined,
      input: { ...decision, signature: signApproval(SECRET, base) },
      why: /not set/,
    },
  ])('verify: $name', async ({ secret, input, valid, why }) => {
    const r = await verify(secret, input);
    expect(r.valid).toBe(valid ?? false);
    if (why) expect(r.why).toMatch(why);
  });
});
