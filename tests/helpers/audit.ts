/** What selfheal's audit (`healing_log`) says about a healing, for assertions. */
import type { TestEnv } from './env';

export interface AuditRow {
  step: string;
  action: string | null;
  target: string;
  decided_by: string | null;
  outcome: string | null;
  confidence: number | null;
  params: Record<string, unknown>;
}

/** The audit rows of one run, or of every run of one workflow id, in order. */
export async function auditLog(t: TestEnv, of: { runId: string } | { workflowId: string }): Promise<AuditRow[]> {
  const [column, value] = 'runId' in of ? ['run_id', of.runId] : ['workflow_id', of.workflowId];
  const { rows } = await t.pool.query<AuditRow>(
    `SELECT step, action, target, decided_by, outcome, confidence, params FROM healing_log WHERE ${column} = $1
      ORDER BY id`,
    [value],
  );
  return rows;
}
