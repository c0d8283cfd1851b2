/** Real faults planted in a test environment, and the anomaly the detector reports for each. */
import type { Anomaly } from '../../core/types';
import { uniqueId, type TestEnv } from './env';

/** A real stale lock (its owner has no heartbeat) and the anomaly the detector reports for it. */
export async function staleLock(
  t: TestEnv,
  { now = Date.now(), ownerPrefix = 'dead-', documentIds = 1e9 } = {},
): Promise<Anomaly> {
  const owner = uniqueId(ownerPrefix);
  const documentId = String(Math.floor(Math.random() * documentIds));
  const token = uniqueId('tok');
  await t.redis.set(t.keys.lock(documentId), `${owner}:${token}`, 'EX', 7200);
  return {
    type: 'stale_locks',
    target: owner,
    severity: 'warning',
    fingerprint: `stale_locks:${owner}`,
    summary: `1 document locks held by ${owner}, which has no heartbeat`,
    evidence: { owner, documentIds: [documentId], count: 1, totalStale: 1, locks: [{ documentId, owner, token }] },
    detectedAt: now,
  };
}
