/**
 * Reconciliation of the `documents` table with the Redis lists, part of each snapshot (docs/ARCHITECTURE.md):
 * - lost documents: `queued` in Postgres for longer than LOST_DOCUMENT_THRESHOLD and in no queue or processing list;
 * - orphaned entries: queue entries whose document is completed, dead or missing, and ids present twice in a queue.
 *
 * Bounded at any size: the lost candidates come from an indexed, capped query (oldest first) and their membership is
 * decided inside Redis by one script per batch that walks the lists from the consuming end and stops as soon as
 * every candidate is found (the ones it did not find are read again: only rows unchanged since the first read
 * count); the orphan check reads only the next ORPHAN_WINDOW entries of each queue (the ones
 * workers take next), so an orphan is found at the latest when it is about to be consumed.
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Keys } from '../core/keys';
import { defineScript } from '../core/redis-script';
import type { LostDocument, OrphanEntry } from '../core/snapshot';
import { LISTS_TO_SEARCH } from './actions-lua';

/** Lost candidates examined per cycle (the oldest first). */
export const LOST_CANDIDATE_CAP = 1_000;
/** Entries at the consuming end of each queue examined per cycle for orphans and duplicates. */
export const ORPHAN_WINDOW = 1_000;
/** Orphan entries a snapshot carries. */
export const ORPHAN_CAP = 200;

/**
 * The candidate ids (ARGV[2..]) that are in none of the lists: the stage queues (KEYS) and every processing list
 * (pattern ARGV[1]).
 */
export const NOT_IN_LISTS = `${LISTS_TO_SEARCH}
local absent = not_in_lists(lists_to_search(1, ARGV[1]), 2)
return absent`;

/** Lost candidates: queued past the threshold ($1 s), oldest first, at most $2 (the partial index on queued rows). */
export const LOST_CANDIDATES_SQL = `SELECT id::text AS id, stage, updated_at FROM documents
  WHERE status = 'queued' AND updated_at < now() - make_interval(secs => $1)
  ORDER BY updated_at LIMIT $2`;

/**
 * The candidates again, after the lists were searched: a row still queued in the same stage, not updated since the
 * first read, is lost. One that changed was taken meanwhile: a worker that finishes a document commits the row
 * before it removes the id from its processing list.
 */
export const LOST_RECHECK_SQL = `SELECT id::text AS id, stage, updated_at FROM documents
  WHERE id = ANY($1::bigint[]) AND status = 'queued'`;

/** The documents of the queue entries examined for orphans. */
export const ORPHAN_LOOKUP_SQL = 'SELECT id::text AS id, stage, status FROM documents WHERE id = ANY($1::bigint[])';

export interface ReconcileDeps {
  redis: Redis;
  pool: pg.Pool;
  keys: Keys;
  stages: string[];
  /** s a document may stay queued in no list. */
  lostDocumentSeconds: number;
}

export interface ReconcilePart {
  lost: LostDocument[];
  /** Candidates examined (queued past the threshold, capped). */
  lostCandidates: number;
  orphans: OrphanEntry[];
  /** Queue entries examined for orphans. */
  entriesChecked: number;
}

/** Lost documents and orphan entries. A candidate found in any list (queue or processing, any stage) is not lost. */
export async function reconcile(deps: ReconcileDeps): Promise<ReconcilePart> {
  const [lostPart, orphanPart] = await Promise.all([findLost(deps), findOrphans(deps)]);
  return { ...lostPart, ...orphanPart };
}

async function findLost(deps: ReconcileDeps): Promise<Pick<ReconcilePart, 'lost' | 'lostCandidates'>> {
  const { pool, redis, keys, stages } = deps;
  const { rows } = await pool.query<{ id: string; stage: string; updated_at: Date }>(LOST_CANDIDATES_SQL, [
    deps.lostDocumentSeconds,
    LOST_CANDIDATE_CAP,
  ]);
  if (rows.length === 0) return { lost: [], lostCandidates: 0 };
  const queues = stages.map((s) => keys.queue(s));
  const missing = new Set(
    (await defineScript(
      redis,
      'selfhealNotInLists',
      NOT_IN_LISTS,
    )(queues, [keys.processingPattern(), ...rows.map((r) => r.id)])) as string[],
  );
  const absent = rows.filter((r) => missing.has(r.id));
  if (absent.length === 0) return { lost: [], lostCandidates: rows.length };
  // Postgres was read before the lists: a document a worker took from its queue, finished (or failed) and removed
  // from its processing list in between is in no list by then, yet not lost. Only rows unchanged since stay.
  const { rows: again } = await pool.query<{ id: string; stage: string; updated_at: Date }>(LOST_RECHECK_SQL, [
    absent.map((r) => r.id),
  ]);
  const unchanged = new Map(again.map((r) => [r.id, r]));
  const lost = absent
    .filter((r) => {
      const now = unchanged.get(r.id);
      return now !== undefined && now.stage === r.stage && now.updated_at.getTime() === r.updated_at.getTime();
    })
    .map((r) => ({ id: Number(r.id), stage: r.stage, queuedSince: r.updated_at.getTime() }));
  return { lost, lostCandidates: rows.length };
}

async function findOrphans(deps: ReconcileDeps): Promise<Pick<ReconcilePart, 'orphans' | 'entriesChecked'>> {
  const { pool, redis, keys, stages } = deps;
  const pipe = redis.pipeline();
  for (const stage of stages) pipe.lrange(keys.queue(stage), -ORPHAN_WINDOW, -1);
  const windows = ((await pipe.exec()) ?? []).map(([err, v]) => {
    if (err) throw err;
    return v as string[];
  });
  const counts = stages.map((_, i) => {
    const c = new Map<string, number>();
    for (const id of windows[i] ?? []) c.set(id, (c.get(id) ?? 0) + 1);
    return c;
  });
  const ids = [...new Set(counts.flatMap((c) => [...c.keys()]))].filter((id) => /^\d{1,15}$/.test(id));
  const entriesChecked = windows.reduce((n, w) => n + w.length, 0);
  if (entriesChecked === 0) return { orphans: [], entriesChecked };
  const { rows } = await pool.query<{ id: string; stage: string; status: string }>(ORPHAN_LOOKUP_SQL, [ids]);
  const docs = new Map(rows.map((r) => [r.id, r]));
  const suspects: OrphanEntry[] = [];
  stages.forEach((stage, i) => {
    for (const [id, count] of counts[i]!) {
      const doc = docs.get(id);
      const reason: OrphanEntry['reason'] | undefined = !doc
        ? 'missing'
        : doc.status === 'completed' || doc.status === 'dead'
          ? doc.status
          : count > 1
            ? 'duplicate'
            : undefined;
      if (reason && suspects.length < ORPHAN_CAP) suspects.push({ queue: stage, id, count, reason });
    }
  });
  if (suspects.length === 0) return { orphans: [], entriesChecked };
  // A live entry taken (and its document finished) between the LRANGE and the query looks orphaned: count each
  // suspect again in the same window, after the query. An entry a worker took is gone by then.
  const recount = redis.pipeline();
  for (const o of suspects) recount.lpos(keys.queue(o.queue), o.id, 'RANK', -1, 'COUNT', 0, 'MAXLEN', ORPHAN_WINDOW);
  const now = ((await recount.exec()) ?? []).map(([err, v]) => {
    if (err) throw err;
    return (v as number[]).length;
  });
  const orphans = suspects
    .map((o, i) => ({ ...o, count: Math.min(o.count, now[i] ?? 0) }))
    .filter((o) => (o.reason === 'duplicate' ? o.count > 1 : o.count > 0));
  return { orphans, entriesChecked };
}
