import type { Queryable } from './executed-row';
import type { ActionContext } from './context';
import { checkInput, documentIdsOf } from './helpers';
import type { ActionInput, ActionResult } from './types';

/** Dead-letters `ids` (status `dead`, error = `reason`) unless completed or dead already; the ids it changed. */
export async function quarantineRows(db: Queryable, ids: number[], reason: string): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `UPDATE documents SET status = 'dead', error = $2, updated_at = now()
      WHERE id = ANY($1::bigint[]) AND status NOT IN ('completed', 'dead')
     RETURNING id`,
    [ids, reason],
  );
  return rows.map((r) => Number(r.id)).sort((a, b) => a - b);
}

export function createQuarantineDocument({ config, inTransaction }: ActionContext) {
  /** Dead-letters the documents (status `dead`, error = the reason) unless completed or dead already. */
  async function quarantineDocument(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'quarantine_document');
    const requested = documentIdsOf(plan);
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const reason = `quarantined by selfheal: ${plan.params.reason?.slice(0, 500) ?? `${plan.anomalyType} on ${plan.target}`}`;
    const { result } = await inTransaction(input, 'quarantine_document', async (db) => {
      const quarantined = await quarantineRows(db, ids, reason);
      return {
        result: {
          action: 'quarantine_document',
          outcome: quarantined.length === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details: { requested: requested.length, quarantined, skipped: ids.length - quarantined.length, deferred },
        },
      };
    });
    return result;
  }

  return { quarantineDocument };
}
