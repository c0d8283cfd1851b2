/** The operator's commands on healing workflows: healings, show, approve, reject (the audit is in audit.ts). */
import { Client, Connection, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { signApproval } from '../activities/approval';
import type { Config } from '../core/config';
import { decideUpdate, SearchAttr, statusQuery, WorkflowType } from '../workflows/definitions';
import type { HealingStatus } from '../workflows/healing';
import { errorMessage } from '../core/errors';

export class CliError extends Error {
  constructor(
    message: string,
    readonly type: 'not_found' | 'not_awaiting_approval' | 'invalid_input' | 'refused',
  ) {
    super(message);
  }
}

export async function withClient<T>(config: Config, body: (client: Client) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS, connectTimeout: 5_000 }).catch(
    (err: unknown) => {
      throw new Error(`cannot reach Temporal at ${config.TEMPORAL_ADDRESS}: ${errorMessage(err)}`);
    },
  );
  try {
    return await body(new Client({ connection, namespace: config.TEMPORAL_NAMESPACE }));
  } finally {
    await connection.close();
  }
}

export interface HealingRow {
  workflowId: string;
  runId: string;
  status: string;
  phase: string;
  action: string;
  anomalyType: string;
  target: string;
  severity: string;
  startedAt: string;
  closedAt?: string;
}

export async function listHealings(client: Client, opts: { open?: boolean; limit?: number }): Promise<HealingRow[]> {
  const query = `WorkflowType = '${WorkflowType.healing}'${opts.open ? " AND ExecutionStatus = 'Running'" : ''}`;
  const rows: HealingRow[] = [];
  for await (const wf of client.workflow.list({ query })) {
    const sa = wf.typedSearchAttributes;
    rows.push({
      workflowId: wf.workflowId,
      runId: wf.runId,
      status: wf.status.name,
      phase: sa.get(SearchAttr.HealPhase) ?? '',
      action: sa.get(SearchAttr.HealAction) ?? '',
      anomalyType: sa.get(SearchAttr.AnomalyType) ?? '',
      target: sa.get(SearchAttr.HealTarget) ?? '',
      severity: sa.get(SearchAttr.Severity) ?? '',
      startedAt: wf.startTime.toISOString(),
      closedAt: wf.closeTime?.toISOString(),
    });
    if (rows.length >= (opts.limit ?? 200)) break;
  }
  return rows;
}

/** The status of a healing workflow: its query while it runs, its result once closed. */
export async function showHealing(
  client: Client,
  workflowId: string,
): Promise<{ status: string; healing: HealingStatus }> {
  const handle = client.workflow.getHandle(workflowId);
  let described;
  try {
    described = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no workflow ${workflowId}`, 'not_found');
    throw err;
  }
  if (described.type !== WorkflowType.healing) {
    throw new CliError(`${workflowId} is a ${described.type}, not a healing workflow`, 'invalid_input');
  }
  if (described.status.name !== 'RUNNING' && described.status.name !== 'COMPLETED') {
    throw new CliError(
      `${workflowId} is ${described.status.name.toLowerCase()}: see \`selfheal audit --workflow ${workflowId}\``,
      'not_awaiting_approval',
    );
  }
  const healing =
    described.status.name === 'RUNNING' ? await handle.query(statusQuery) : ((await handle.result()) as HealingStatus);
  return { status: described.status.name, healing: healing };
}

/**
 * Approves or rejects the plan awaiting approval, through the validated `decide` update: the workflow refuses a
 * decision when nothing awaits one, for another plan, or from someone who is not an approver.
 */
export async function decideHealing(
  client: Client,
  workflowId: string,
  decision: { decision: 'approve' | 'reject'; by: string; reason?: string; planId?: string },
  /** APPROVAL_SECRET: when set, the decision is signed with it (the healing worker checks the signature). */
  secret?: string,
): Promise<{ decision: string; planId: string }> {
  const { status, healing } = await showHealing(client, workflowId);
  if (status !== 'RUNNING' || healing.phase !== 'awaiting_approval' || !healing.plan) {
    throw new CliError(
      `${workflowId} is not awaiting approval (${status.toLowerCase()}, phase ${healing.phase})`,
      'not_awaiting_approval',
    );
  }
  const planId = decision.planId ?? healing.plan.id;
  const signature = secret
    ? signApproval(secret, { workflowId, planId, decision: decision.decision, by: decision.by })
    : undefined;
  try {
    const result = await client.workflow
      .getHandle(workflowId)
      .executeUpdate(decideUpdate, { args: [{ ...decision, planId, ...(signature ? { signature } : {}) }] });
    return { decision: result, planId };
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      const cause = err.cause instanceof Error ? err.cause.message : String(err.cause);
      throw new CliError(`${workflowId} refused the decision: ${cause}`, 'refused');
    }
    throw err;
  }
}
