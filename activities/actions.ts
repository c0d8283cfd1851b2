/**
 * The remediation actions (docs/ARCHITECTURE.md, Actions). They run on the selfheal-actions task queue, whose worker is the only
 * process with a Docker client.
 *
 * Every action:
 * - takes `{ plan, idempotencyKey }` and returns a JSON `ActionResult`;
 * - first looks for the `executed` row of its idempotency key in `healing_log` and, when there is one, returns the
 *   recorded result without acting again;
 * - re-reads the live state before acting, and does nothing when the problem is gone;
 * - writes the `executed` row itself, where it acts: for the Postgres actions in the same transaction as the change
 *   (a crash can neither act twice nor record without acting) when `healing_log` and `documents` share a database;
 *   when they do not (SELFHEAL_DATABASE_URL set), the change commits first and its row right after, inside the
 *   row's transaction (see inTransaction); for Docker and Redis actions right after the call returns (the remaining
 *   window is described at each of them).
 *
 * Permanent failures are `ApplicationFailure.nonRetryable(message, type)` with a type of `ActionErrorType`;
 * transient ones (a database or engine that does not answer) throw plain errors, so Temporal retries them.
 */
import { createActionContext } from './actions/context';
import { createClearStaleLocks } from './actions/clear-stale-locks';
import { createEscalate } from './actions/escalate';
import { createQuarantineDocument } from './actions/quarantine-document';
import { createRemoveOrphanedEntries } from './actions/remove-orphaned-entries';
import { createRequeueDocuments } from './actions/requeue-documents';
import { createRestartWorker } from './actions/restart-worker';
import type { ActionDeps } from './actions/types';

export { httpStatus } from './actions/restart-worker';
export {
  ActionErrorType,
  ActionOutcome,
  type ActionConfig,
  type ActionDeps,
  type ActionInput,
  type ActionResult,
} from './actions/types';

export function createActionActivities(deps: ActionDeps) {
  const ctx = createActionContext(deps);
  const { restartWorker } = createRestartWorker(ctx);
  const { requeueDocuments } = createRequeueDocuments(ctx);
  const { clearStaleLocks } = createClearStaleLocks(ctx);
  const { escalateToHuman, requestApproval } = createEscalate(ctx);
  const { quarantineDocument } = createQuarantineDocument(ctx);
  const { removeOrphanedEntries } = createRemoveOrphanedEntries(ctx);

  return {
    restartWorker,
    requeueDocuments,
    clearStaleLocks,
    escalateToHuman,
    requestApproval,
    quarantineDocument,
    removeOrphanedEntries,
  };
}
