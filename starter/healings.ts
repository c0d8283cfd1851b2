/** The operator's commands on healing workflows and the audit: healings, show, approve, reject, audit. */
import { Client, Connection, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { signApproval } from '../activities/approval';
import { selfhealDatabaseUrl, type Config } from '../core/config';
import { createPool } from '../db/pool';
import { decideUpdate, SearchAttr, statusQuery, WorkflowType } from '../workflows/definitions';
import type { HealingStatus } from '../workflows/healing';

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
      throw new Error(
        `cannot reach Temporal at ${config.TEMPORAL_ADDRESS}: ${err instanceof Error ? err.message : String(err)}`,
      );
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
  return { status: described.status.name, healing: healing as HealingStatus };
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

/** `30s`, `15m`, `2h`, `7d` to milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (!m)
    throw new CliError(`duration: expected a number and s, m, h or d (e.g. 30m, 24h), got "${text}"`, 'invalid_input');
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

export interface AuditRow {
  id: number;
  created_at: Date;
  workflow_id: string;
  run_id: string;
  step: string;
  anomaly_type: string;
  target: string;
  action: string | null;
  params: Record<string, unknown>;
  decided_by: string | null;
  confidence: number | null;
  outcome: string | null;
  error: string | null;
  idempotency_key: string | null;
}

export async function readAudit(
  config: Config,
  opts: { sinceMs: number; workflowId?: string; limit?: number },
): Promise<AuditRow[]> {
  const pool = createPool(selfhealDatabaseUrl(config), { max: 1, application: 'selfheal-audit' });
  try {
    const { rows } = await pool.query<AuditRow>(
      `SELECT id, created_at, workflow_id, run_id, step, anomaly_type, target, action, params, decided_by, confidence,
              outcome, error, idempotency_key
         FROM healing_log
        WHERE created_at > now() - make_interval(secs => $1) AND ($2::text IS NULL OR workflow_id = $2)
        ORDER BY id LIMIT $3`,
      [opts.sinceMs / 1000, opts.workflowId ?? null, opts.limit ?? 1000],
    );
    return rows;
  } finally {
    await pool.end();
  }
}
