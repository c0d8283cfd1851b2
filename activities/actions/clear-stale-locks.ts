import type { ActionContext } from './context';
import { record } from './executed-row';
import { checkInput, invalid, WORKER_RE } from './helpers';
import type { ActionInput, ActionResult } from './types';

/** Locks per Redis script call of clearStaleLocks. */
const LOCK_SCRIPT_CHUNK = 1_000;

export function createClearStaleLocks({ pool, keys, scripts, priorResult }: ActionContext) {
  /**
   * Deletes each observed lease only if its owner has no heartbeat and it still holds exactly the observed value
   * (one script per batch: check and delete are atomic). A lease re-acquired meanwhile, or whose owner came back,
   * survives. Written after the script returns; a retry in the window re-runs compare-and-deletes that no longer
   * match anything, so it changes nothing.
   */
  async function clearStaleLocks(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'clear_stale_locks');
    const locks = plan.params.locks;
    if (!Array.isArray(locks) || locks.length === 0) invalid('clear_stale_locks: params.locks must list locks');
    for (const l of locks) {
      if (
        typeof l?.documentId !== 'string' ||
        !/^[A-Za-z0-9_.-]+$/.test(l.documentId) ||
        typeof l.owner !== 'string' ||
        !WORKER_RE.test(l.owner) ||
        typeof l.token !== 'string' ||
        l.token.length === 0
      ) {
        invalid(`clear_stale_locks: malformed lock ${JSON.stringify(l)}`);
      }
    }
    const prior = await priorResult('clear_stale_locks', input.idempotencyKey);
    if (prior) return prior;

    const codes: number[] = [];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < locks.length; i += LOCK_SCRIPT_CHUNK) {
      const chunk = locks.slice(i, i + LOCK_SCRIPT_CHUNK);
      calls.push(
        scripts
          .clearStaleLocks(
            chunk.flatMap((l) => [keys.lock(l.documentId), keys.heartbeat(l.owner)]),
            chunk.map((l) => `${l.owner}:${l.token}`),
          )
          .then((r) => (r as number[]).forEach((code, j) => (codes[i + j] = code))),
      );
    }
    await Promise.all(calls);
    const pick = (code: number) => locks.filter((_, i) => codes[i] === code).map((l) => l.documentId);
    const cleared = pick(1);
    const result: ActionResult = {
      action: 'clear_stale_locks',
      outcome: cleared.length > 0 ? 'done' : 'nothing_to_do',
      details: { observed: locks.length, cleared, ownerAlive: pick(-1), changedOrGone: pick(0) },
    };
    await record(pool, input, result);
    return result;
  }

  return { clearStaleLocks };
}
