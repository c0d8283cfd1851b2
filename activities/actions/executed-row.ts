import { Context } from '@temporalio/activity';
import type pg from 'pg';
import type { ActionType } from '../../core/types';
import { activityRun, invalid } from './helpers';
import type { ActionInput, ActionOutcome, ActionResult } from './types';

/** Serializes executions of one idempotency key (with the key's hash) across attempts and processes. */
const ADVISORY_NAMESPACE = 0x5e1f;

export type Queryable = Pick<pg.PoolClient, 'query'>;

interface RecordedRow {
  action: string | null;
  outcome: string | null;
  params: { result?: Record<string, unknown>; escalate?: boolean; redo?: unknown };
}

/** An action's recorded result, and what it recorded beside it for finishing its work after the commit. */
export interface Recorded {
  result: ActionResult;
  redo?: unknown;
}

/**
 * `body` on a client of `pool` after BEGIN; `body` ends the transaction itself (COMMIT or ROLLBACK). When `body`
 * throws, the transaction is rolled back, and a client whose ROLLBACK fails is destroyed instead of returned to the
 * pool.
 */
export async function withTransaction<T>(pool: pg.Pool, body: (db: pg.PoolClient) => Promise<T>): Promise<T> {
  const db = await pool.connect();
  let broken = false;
  try {
    await db.query('BEGIN');
    return await body(db);
  } catch (err) {
    await db.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    db.release(broken);
  }
}

export async function recorded(db: Queryable, action: ActionType, key: string): Promise<Recorded | undefined> {
  const { rows } = await db.query<RecordedRow>(
    `SELECT action, outcome, params FROM healing_log WHERE step = 'executed' AND idempotency_key = $1`,
    [key],
  );
  const row = rows[0];
  if (!row) return undefined;
  if (row.action !== action) invalid(`idempotency key ${key} was used for ${String(row.action)}, not ${action}`);
  return {
    result: {
      action,
      outcome: (row.outcome ?? 'done') as ActionOutcome,
      details: { ...(row.params.result ?? {}), replayed: true },
      ...(row.params.escalate ? { escalate: true } : {}),
    },
    redo: row.params.redo,
  };
}

/**
 * Writes the executed row (with `redo`, the work left to do after the commit, when there is some). Returns false
 * when a row with the same idempotency key (or of the same activity of the same run) exists already.
 */
export async function record(
  db: Queryable,
  input: ActionInput,
  result: ActionResult,
  redo?: unknown,
): Promise<boolean> {
  const { plan } = input;
  const run = activityRun();
  const confidence = Number.isFinite(plan.confidence) ? Math.min(1, Math.max(0, plan.confidence)) : null;
  const { rowCount } = await db.query(
    `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                              confidence, outcome, error, idempotency_key, activity_id)
     VALUES ($1, $2, 'executed', $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11)
     ON CONFLICT DO NOTHING`,
    [
      run.workflowId,
      run.runId,
      plan.anomalyType,
      plan.target,
      result.action,
      JSON.stringify({
        planId: plan.id,
        rung: plan.rung,
        request: plan.params,
        result: result.details,
        ...(result.escalate ? { escalate: true } : {}),
        ...(redo !== undefined ? { redo } : {}),
      }),
      input.decidedBy ?? plan.source,
      confidence,
      result.outcome,
      input.idempotencyKey,
      run.activityId,
    ],
  );
  return rowCount === 1;
}

/**
 * Takes the advisory lock on the key (held to the end of the transaction), then looks for the key's executed row;
 * when there is one, ends the transaction (ROLLBACK) and returns it.
 */
async function lockAndFindRecorded(db: pg.PoolClient, action: ActionType, key: string): Promise<Recorded | undefined> {
  await db.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [ADVISORY_NAMESPACE, key]);
  const prior = await recorded(db, action, key);
  if (prior) await db.query('ROLLBACK');
  return prior;
}

/** `record`, failing for good when the activity of this run already recorded another execution. */
async function recordOnce(db: Queryable, input: ActionInput, action: ActionType, done: Recorded): Promise<void> {
  if (!(await record(db, input, done.result, done.redo))) {
    invalid(`${action}: activity ${activityRun().activityId} of this run already recorded another execution`);
  }
}

/**
 * The executed-row helpers bound to selfheal's pool (`healing_log`) and the pipeline's (`documents`), which is the
 * same pool unless SELFHEAL_DATABASE_URL names another database.
 */
export function createExecutedRows(pool: pg.Pool, documentsPool: pg.Pool) {
  /**
   * A Postgres action in one transaction with its executed row. The advisory lock on the key makes a concurrent
   * attempt with the same key wait, then find the row; the row is inserted before COMMIT, so the change and its
   * record are durable together or not at all. Returns the result (recorded or new) and its `redo`.
   *
   * With `documents` in another database than `healing_log`, there are two transactions: the one on `healing_log`
   * (advisory lock, look-up, the row) encloses the one on `documents`, which commits first. A crash between the two
   * COMMITs leaves the change without its row: the retry finds the rows changed already (no longer `processing`,
   * already `dead`), changes nothing and records that; what it cannot replay is the Redis half of a requeue, so those
   * documents are `queued` in no list, which `lost_documents` reports and repairs. Never the reverse (a row without
   * the change), and never a document changed twice.
   */
  async function inTransaction(
    input: ActionInput,
    action: ActionType,
    act: (db: pg.PoolClient) => Promise<Recorded>,
  ): Promise<Recorded> {
    if (documentsPool !== pool) return inTwoTransactions(input, action, act);
    return withTransaction(pool, async (db) => {
      const prior = await lockAndFindRecorded(db, action, input.idempotencyKey);
      if (prior) return prior;
      const done = await act(db);
      await recordOnce(db, input, action, done);
      await db.query('COMMIT');
      return done;
    });
  }

  async function inTwoTransactions(
    input: ActionInput,
    action: ActionType,
    act: (db: pg.PoolClient) => Promise<Recorded>,
  ): Promise<Recorded> {
    return withTransaction(pool, async (audit) => {
      const prior = await lockAndFindRecorded(audit, action, input.idempotencyKey);
      if (prior) return prior;
      return withTransaction(documentsPool, async (db) => {
        const done = await act(db);
        await recordOnce(audit, input, action, done);
        await db.query('COMMIT');
        await audit.query('COMMIT');
        return done;
      });
    });
  }

  /**
   * An `attempted` row: what a Docker action saw right before its call, so that a retry after a crash can tell
   * whether the call happened. One per attempt (activity id suffixed with the attempt number).
   */
  async function recordAttempt(input: ActionInput, seen: { container: string; startedAtBefore: string }) {
    const run = activityRun();
    const attempt = Context.current().info.attempt;
    await pool.query(
      `INSERT INTO healing_log (workflow_id, run_id, step, anomaly_type, target, action, params, decided_by,
                                idempotency_key, activity_id)
       VALUES ($1, $2, 'attempted', $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT DO NOTHING`,
      [
        run.workflowId,
        run.runId,
        input.plan.anomalyType,
        input.plan.target,
        input.plan.action,
        JSON.stringify({ planId: input.plan.id, attempt, ...seen }),
        input.decidedBy ?? input.plan.source,
        input.idempotencyKey,
        `${run.activityId}#attempt-${attempt}`,
      ],
    );
  }

  async function lastAttempt(
    key: string,
  ): Promise<{ container: string; startedAtBefore: string; attempt: number } | undefined> {
    const { rows } = await pool.query<{
      params: { container?: unknown; startedAtBefore?: unknown; attempt?: unknown };
    }>(`SELECT params FROM healing_log WHERE step = 'attempted' AND idempotency_key = $1 ORDER BY id DESC LIMIT 1`, [
      key,
    ]);
    const p = rows[0]?.params;
    if (!p || typeof p.container !== 'string' || typeof p.startedAtBefore !== 'string') return undefined;
    return { container: p.container, startedAtBefore: p.startedAtBefore, attempt: Number(p.attempt) };
  }

  /** For the Redis and Docker actions: the recorded result, read before acting. */
  const priorResult = async (action: ActionType, key: string) => (await recorded(pool, action, key))?.result;

  return { inTransaction, recordAttempt, lastAttempt, priorResult };
}
