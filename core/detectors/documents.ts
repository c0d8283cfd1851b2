/** Document detectors: stuck, locked by a dead owner, lost between queues, or killing the workers that take it. */
import { anomaly, EVIDENCE_ID_CAP, groupBy, LOCK_EVIDENCE_CAP, type Detector } from './common';
import type { Snapshot } from '../snapshot';
import type { Anomaly } from '../types';

export const detectStuckDocuments: Detector = (snapshot, _history, t, now) => {
  const live = new Set(snapshot.liveWorkers);
  const cutoff = now - t.stuckDocumentSeconds * 1000;
  const byStage = new Map<string, { ids: number[]; count: number; oldest: number; deadOwners: Set<string> }>();
  for (const doc of snapshot.processing) {
    const since = doc.startedAt ?? doc.updatedAt;
    const ownerDead = doc.workerId === null || !live.has(doc.workerId);
    if (since >= cutoff && !ownerDead) continue;
    const entry = byStage.get(doc.stage) ?? { ids: [], count: 0, oldest: since, deadOwners: new Set<string>() };
    entry.count++;
    if (entry.ids.length < EVIDENCE_ID_CAP) entry.ids.push(doc.id);
    entry.oldest = Math.min(entry.oldest, since);
    if (ownerDead && doc.workerId) entry.deadOwners.add(doc.workerId);
    byStage.set(doc.stage, entry);
  }
  return [...byStage.entries()].map(([stage, e]) =>
    anomaly(
      'stuck_documents',
      stage,
      e.count >= 10 ? 'critical' : 'warning',
      `stuck_documents on ${stage}: ${e.count} document${e.count === 1 ? '' : 's'}`,
      {
        count: e.count,
        documentIds: e.ids,
        oldestSince: e.oldest,
        stuckForSeconds: Math.round((now - e.oldest) / 1000),
        deadOwners: [...e.deadOwners].sort(),
        capped: snapshot.processing.length < snapshot.processingTotal,
      },
      now,
    ),
  );
};

export const detectStaleLocks: Detector = (snapshot, _history, _t, now) => {
  const byOwner = groupBy(snapshot.staleLocks, (lock) => lock.owner);
  return [...byOwner.entries()].map(([owner, locks]) =>
    anomaly(
      'stale_locks',
      owner,
      'warning',
      `${locks.length}${snapshot.staleLockTotal > snapshot.staleLocks.length ? '+' : ''} document locks held by ${owner}, which has no heartbeat`,
      {
        owner,
        documentIds: locks.slice(0, EVIDENCE_ID_CAP).map((l) => l.documentId),
        // The exact tokens observed: clear_stale_locks compare-and-deletes these and nothing else.
        locks: locks
          .slice(0, LOCK_EVIDENCE_CAP)
          .map((l) => ({ documentId: l.documentId, owner: l.owner, token: l.token })),
        count: locks.length,
        totalStale: snapshot.staleLockTotal,
      },
      now,
    ),
  );
};

/** Lost document ids in evidence: as many as one requeue takes by default (REQUEUE_CAP), so one healing does it. */
export const LOST_EVIDENCE_CAP = 1_000;

export const detectLostDocuments: Detector = (snapshot, _history, _t, now) => {
  const rec = snapshot.reconcile;
  if (!rec || rec.error || rec.lost.length === 0) return [];
  const byStage = groupBy(rec.lost, (d) => d.stage);
  return [...byStage.entries()].map(([stage, docs]) => {
    const oldest = Math.min(...docs.map((d) => d.queuedSince));
    return anomaly(
      'lost_documents',
      stage,
      docs.length >= 100 ? 'critical' : 'warning',
      `${stage}: ${docs.length} queued documents are in no queue or processing list (oldest queued ${Math.round((now - oldest) / 1000)} s ago)`,
      {
        stage,
        count: docs.length,
        documentIds: docs.slice(0, LOST_EVIDENCE_CAP).map((d) => d.id),
        oldestQueuedSince: oldest,
        candidatesChecked: rec.lostCandidates,
      },
      now,
    );
  });
};

/**
 * Verification of a `lost_documents` healing: whether the documents it was started for are lost still. `current` is
 * what the detector sees now. Documents lost after the anomaly was detected (younger than LOST_DOCUMENT_THRESHOLD
 * then, so not in its evidence) are a new occurrence, for a healing of their own (the monitoring cycle fires the
 * anomaly again, `refiredAfterGone`): counting them kept a healing that had requeued every document it saw from
 * ending healed, and its next rung escalated. When either list is cut short (over LOST_EVIDENCE_CAP), which documents
 * are new cannot be told: the anomaly counts as still there.
 */
export function lostStill(reported: Anomaly, current: Anomaly | undefined): Anomaly | undefined {
  if (!current) return undefined;
  // Ids as numbers or digit strings (an anomaly may come from elsewhere than this detector); anything else: unknown.
  const complete = (a: Anomaly): string[] | undefined => {
    const ids = a.evidence.documentIds;
    if (!Array.isArray(ids) || typeof a.evidence.count !== 'number' || a.evidence.count > ids.length) return undefined;
    const out = (ids as unknown[]).map((id) => (typeof id === 'number' && Number.isSafeInteger(id) ? String(id) : id));
    return out.every((id): id is string => typeof id === 'string' && /^\d{1,15}$/.test(id)) ? out : undefined;
  };
  const before = complete(reported);
  const now = complete(current);
  if (!before || before.length === 0 || !now) return current;
  const reportedIds = new Set(before);
  const still = now.filter((id) => reportedIds.has(id));
  if (still.length === 0) return undefined;
  return {
    ...current,
    summary: `${current.target}: ${still.length} of the ${before.length} documents reported lost are in no queue or processing list still`,
  };
}

/**
 * Deaths of worker processes observed while they were processing a document: in a snapshot, a processing row whose
 * worker is a container that is not running or has no heartbeat; between two snapshots, a container that started
 * again (a restart in between) while it had the row. Keyed by document, then by `worker@incarnation` (the
 * container's start time), so one death seen over many cycles counts once.
 */
export function deathsByDocument(records: Snapshot[]): Map<number, Set<string>> {
  const deaths = new Map<number, Set<string>>();
  const add = (id: number, who: string) => deaths.set(id, (deaths.get(id) ?? new Set()).add(who));
  let prev: Snapshot | undefined;
  for (const s of records) {
    const containers = new Map(s.containers.map((c) => [c.name, c]));
    const live = new Set(s.liveWorkers);
    for (const d of s.processing) {
      if (!d.workerId) continue;
      const c = containers.get(d.workerId);
      if (c ? !c.running : !live.has(d.workerId)) add(d.id, `${d.workerId}@${c?.startedAt ?? 'process'}`);
    }
    if (prev) {
      const before = new Map(prev.containers.map((c) => [c.name, c]));
      for (const d of prev.processing) {
        if (!d.workerId) continue;
        const was = before.get(d.workerId);
        const is = containers.get(d.workerId);
        if (was?.startedAt !== undefined && is?.startedAt !== undefined && is.startedAt !== was.startedAt) {
          add(d.id, `${d.workerId}@${was.startedAt}`);
        }
      }
    }
    prev = s;
  }
  return deaths;
}

export const detectPoisonDocument: Detector = (snapshot, history, t, now) => {
  const threshold = t.poisonCrashes ?? 3;
  const deaths = deathsByDocument([...history.map((r) => r.snapshot), snapshot]);
  const out: Anomaly[] = [];
  // Only a document that is still being processed (by a live or a dead worker): once quarantined it is gone.
  for (const d of snapshot.processing) {
    const seen = deaths.get(d.id);
    if (!seen || seen.size < threshold) continue;
    const workers = [...new Set([...seen].map((k) => k.slice(0, k.lastIndexOf('@'))))].sort();
    out.push(
      anomaly(
        'poison_document',
        String(d.id),
        'critical',
        `document ${d.id} (${d.stage}) was being processed when ${seen.size} worker processes died (${workers.join(', ')})`,
        {
          stage: d.stage,
          documentIds: [d.id],
          crashes: seen.size,
          deaths: [...seen].sort().slice(0, EVIDENCE_ID_CAP),
          workers,
          threshold,
        },
        now,
      ),
    );
  }
  return out;
};
