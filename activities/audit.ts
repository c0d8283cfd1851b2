import { ApplicationFailure, Context } from '@temporalio/activity';
import type pg from 'pg';

/** One step of a healing run, as written to `healing_log`. */
export interface AuditEntry {
  step: string;
  anomalyType: string;
  target: string;
  action?: string;
  params?: Record<string, unknown>;
  /** `policy`, `llm`, `runbook`, or the approver's name. */
  decidedBy?: string;
  confidence?: number;
  outcome?: string;
  error?: string;
  idempotencyKey?: string;
}

/**
 * Audit activities. The workflow id and run id come from the activity context, never from the caller,
 * so a row always names the run that wrote it.
 */
export function createAuditActivities({ pool }: { pool: pg.Pool }) {
  return {
    async appendHealingLog(entry: AuditEntry): Promise<number> {
      const info = Context.current().info;
      const run = info.workflowExecution;
      if (!run) throw ApplicationFailure.nonRetryable('appendHealingLog runs only inside a workflow', 'invalid_input');
      const { rows } = await pool.query<{ id: number }>(
        `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                                  confidence, outcome, error, idempotency_key, activity_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (run_id, activity_id) DO NOTHING
         RETURNING id`,
        [
          run.workflowId,
          run.runId,
          entry.step,
          entry.anomalyType,
          entry.target,
          entry.action ?? null,
          JSON.stringify(entry.params ?? {}),
          entry.decidedBy ?? null,
          entry.confidence ?? null,
          entry.outcome ?? null,
          entry.error ?? null,
          entry.idempotencyKey ?? null,
          info.activityId,
        ],
      );
      if (rows[0]) return rows[0].id;
      // A retry of a write that already committed: return the existing row.
      const existing = await pool.query<{ id: number }>(
        'SELECT id FROM healing_log WHERE run_id = $1 AND activity_id = $2',
        [run.runId, info.activityId],
      );
      return existing.rows[0]!.id;
    },
  };
}
