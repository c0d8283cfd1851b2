import type { ActionContext } from './context';
import { record } from './executed-row';
import { checkInput, invalid, STAGE_RE } from './helpers';
import type { ActionInput, ActionResult } from './types';

export function createRemoveOrphanedEntries({ pool, documentsPool, keys, scripts, priorResult }: ActionContext) {
  /** `queue` of an entry: a stage name, or `queue:<stage>` with or without the key prefix. */
  function queueKeyOf(queue: unknown): string {
    if (typeof queue !== 'string') invalid(`remove_orphaned_entries: bad queue ${JSON.stringify(queue)}`);
    let stage = queue;
    if (keys.prefix && stage.startsWith(keys.prefix)) stage = stage.slice(keys.prefix.length);
    if (stage.startsWith('queue:')) stage = stage.slice('queue:'.length);
    if (!STAGE_RE.test(stage)) invalid(`remove_orphaned_entries: bad queue ${JSON.stringify(queue)}`);
    return keys.queue(stage);
  }

  /**
   * Removes exactly the observed queue entries, after re-reading Postgres: entries of a completed, dead or missing
   * document go (up to the observed count); of a document still queued in that stage only the extra copies go
   * (one stays). Anything else is left. Written after the removals; a retry in the window removes nothing more than
   * the observed counts that are still present.
   */
  async function removeOrphanedEntries(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'remove_orphaned_entries');
    const entries = plan.params.entries;
    if (!Array.isArray(entries) || entries.length === 0) {
      invalid('remove_orphaned_entries: params.entries must list entries');
    }
    const parsed = entries.map((e) => {
      if (typeof e?.id !== 'string' || e.id.length === 0 || e.id.length > 64) {
        invalid(`remove_orphaned_entries: malformed entry ${JSON.stringify(e)}`);
      }
      const count = Number.isSafeInteger(e.count) && e.count > 0 ? e.count : 1;
      const key = queueKeyOf(e.queue);
      return { key, stage: key.slice(keys.queue('').length), id: e.id, count };
    });
    const prior = await priorResult('remove_orphaned_entries', input.idempotencyKey);
    if (prior) return prior;

    const numeric = parsed.map((e) => e.id).filter((id) => /^\d{1,15}$/.test(id));
    const { rows } = await documentsPool.query<{ id: number; stage: string; status: string }>(
      'SELECT id, stage, status FROM documents WHERE id = ANY($1::bigint[])',
      [numeric.map(Number)],
    );
    const byId = new Map(rows.map((r) => [String(r.id), r]));
    const removed: { queue: string; id: string; removed: number; why: string }[] = [];
    const kept: { queue: string; id: string; why: string }[] = [];
    for (const e of parsed) {
      const doc = byId.get(e.id);
      let why: string;
      let keepOne = false;
      if (!doc) why = 'missing';
      else if (doc.status === 'completed' || doc.status === 'dead') why = doc.status;
      else if (doc.status === 'queued' && doc.stage === e.stage && e.count > 1) {
        why = 'duplicate';
        keepOne = true;
      } else {
        kept.push({ queue: e.key, id: e.id, why: `${doc.status} in ${doc.stage}` });
        continue;
      }
      const n = Number(await scripts.removeEntries([e.key], [e.id, e.count, keepOne ? '1' : '0']));
      if (n > 0) removed.push({ queue: e.key, id: e.id, removed: n, why });
      else kept.push({ queue: e.key, id: e.id, why: `${why}, but no longer in the queue` });
    }
    const result: ActionResult = {
      action: 'remove_orphaned_entries',
      outcome: removed.length > 0 ? 'done' : 'nothing_to_do',
      details: { observed: parsed.length, removed, kept },
    };
    await record(pool, input, result);
    return result;
  }

  return { removeOrphanedEntries };
}
