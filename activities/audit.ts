import { ApplicationFailure, Context } from '@temporalio/activity';
import type pg from 'pg';
import { withTransaction } from './actions/executed-row';

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

/** An audit row written by `appendHealingLogs`: `key` names it within its run (retries of it write it once). */
export type KeyedAuditEntry = AuditEntry & { key: string };

const INSERT = `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                                  confidence, outcome, error, idempotency_key, activity_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (run_id, activity_id) DO NOTHING
         RETURNING id`;

function values(run: { workflowId: string; runId: string }, entry: AuditEntry, activityId: string): unknown[] {
  return [
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
    activityId,
  ];
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
      const { rows } = await pool.query<{ id: number }>(INSERT, values(run, entry, info.activityId));
      if (rows[0]) return rows[0].id;
      // A retry of a write that already committed: return the existing row.
      const existing = await pool.query<{ id: number }>(
        'SELECT id FROM healing_log WHERE run_id = $1 AND activity_id = $2',
        [run.runId, info.activityId],
      );
      return existing.rows[0]!.id;
    },

    /**
     * Writes consecutive rows of one run in one transaction, in order, and returns their ids. A healing runs it as a
     * local activity, whose activity id changes when a retry waits on a timer: each row is named by its `key`
     * (unique within the run, given by the workflow), so a retry of a write that committed returns the row it wrote.
     */
    async appendHealingLogs(entries: KeyedAuditEntry[]): Promise<number[]> {
      const run = Context.current().info.workflowExecution;
      if (!run) throw ApplicationFailure.nonRetryable('appendHealingLogs runs only inside a workflow', 'invalid_input');
      return withTransaction(pool, async (client) => {
        const ids: number[] = [];
        for (const entry of entries) {
          const { rows } = await client.query<{ id: number }>(INSERT, values(run, entry, entry.key));
          ids.push(
            rows[0]?.id ??
              (
                await client.query<{ id: number }>(
                  'SELECT id FROM healing_log WHERE run_id = $1 AND activity_id = $2',
                  [run.runId, entry.key],
                )
              ).rows[0]!.id,
          );
        }
        await client.query('COMMIT');
        return ids;
      });
    },
  };
}
