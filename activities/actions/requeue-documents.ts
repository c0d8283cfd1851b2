import { STAGES } from '../../core/keys';
import type { Plan } from '../../core/plan';
import type { ActionContext } from './context';
import { checkInput, documentIdsOf, invalid, STAGE_RE, WORKER_RE } from './helpers';
import type { ActionInput, ActionResult } from './types';

/** Ids per Redis script call of a requeue: bounds how long one script holds Redis. */
const REQUEUE_SCRIPT_CHUNK = 5_000;
/** Seconds the done-markers of requeue chunks live: longer than any retry of the activity. */
const REQUEUE_MARKER_TTL_SECONDS = 7 * 86_400;

/** The Redis work of a committed requeue, per (stage, owner) group: recorded with the commit, replayed on retry. */
interface RequeueGroup {
  stage: string;
  owner: string | null;
  push: number[];
  drop: number[];
}

export function createRequeueDocuments({ keys, config, scripts, inTransaction }: ActionContext) {
  /**
   * The Redis half of a committed requeue, exactly once per chunk whatever the retries: each chunk's script sets a
   * marker (named by the idempotency key and the chunk's index) in the same atomic step as its push, and skips
   * itself when the marker exists. Chunks are cut the same way on every replay.
   */
  async function applyRequeueInRedis(key: string, groups: RequeueGroup[]) {
    let leasesDeleted = 0;
    let processingEntriesRemoved = 0;
    let chunksApplied = 0;
    let chunksAlreadyApplied = 0;
    const calls: Promise<void>[] = [];
    let index = 0;
    for (const g of groups) {
      const all = [...g.push, ...g.drop].map(String);
      for (let i = 0; i < all.length; i += REQUEUE_SCRIPT_CHUNK) {
        const chunk = all.slice(i, i + REQUEUE_SCRIPT_CHUNK);
        const npush = Math.max(0, Math.min(g.push.length - i, chunk.length));
        const marker = `${keys.prefix}selfheal:requeue:${key}:${index++}`;
        // Issued together: ioredis pipelines them on one connection.
        calls.push(
          scripts
            .requeueChunk(
              [
                keys.queue(g.stage),
                keys.processing(g.stage, g.owner ?? '-'),
                marker,
                ...chunk.map((id) => keys.lock(id)),
              ],
              [g.owner === null ? '' : `${g.owner}:`, npush, REQUEUE_MARKER_TTL_SECONDS, ...chunk],
            )
            .then((r) => {
              const [leases, removed] = r as [number, number, number];
              if (leases < 0) {
                chunksAlreadyApplied++;
                return;
              }
              chunksApplied++;
              leasesDeleted += leases;
              processingEntriesRemoved += removed;
            }),
        );
      }
    }
    const settled = await Promise.allSettled(calls);
    const failed = settled.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    // Transient: the rows are committed, the retry replays the chunks not yet applied.
    if (failed) throw failed.reason;
    return { leasesDeleted, processingEntriesRemoved, chunksApplied, chunksAlreadyApplied };
  }

  /**
   * Requeues documents that are still stuck, exactly once each, dead-lettering those requeued MAX_REQUEUES times.
   *
   * 1. One Postgres transaction: `SELECT ... FOR UPDATE SKIP LOCKED` of the rows still `processing` (in the plan's
   *    stage), so a row that completed or moved meanwhile, or that a worker is committing right now, is left alone;
   *    one UPDATE (`queued`, requeue_count + 1, worker_id NULL; or `dead` with the reason); the executed row, which
   *    also records the Redis work per (stage, owner); COMMIT.
   * 2. Redis, per chunk of a group, one atomic script: the owner's leases deleted, the ids removed from the owner's
   *    processing list, the requeued ids pushed to `queue:<stage>`, and the chunk's done-marker set.
   *
   * Why Postgres first: a worker that pops an id checks that its row is `queued` in that stage, and its UPDATE does
   * not wait for our uncommitted change (the committed row it sees is still `processing`, so it matches nothing and
   * the entry is dropped). Pushing before COMMIT would therefore lose documents. After COMMIT the rows are `queued`
   * but in no list until step 2 runs: a crash or a Redis error there fails the activity, and its retry finds the
   * executed row, replays the recorded Redis work, and skips the chunks whose marker exists, so every id is pushed
   * exactly once. If no retry ever succeeds, the rows are `queued` in no list, which `lost_documents` reports.
   */
  async function requeueDocuments(input: ActionInput): Promise<ActionResult> {
    const plan = checkInput(input, 'requeue_documents');
    if (plan.anomalyType === 'lost_documents') return requeueLost(input, plan);
    const requested = documentIdsOf(plan);
    const stage = plan.params.stage;
    if (stage !== undefined && (typeof stage !== 'string' || !STAGE_RE.test(stage))) {
      invalid(`requeue_documents: bad stage ${JSON.stringify(stage)}`);
    }
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const reason = plan.params.reason?.slice(0, 500) ?? `stuck in processing (${plan.anomalyType} on ${plan.target})`;
    const deadError = `dead-lettered by selfheal after ${config.maxRequeues} requeues: ${reason}`;

    const { result, redo } = await inTransaction(input, 'requeue_documents', async (db) => {
      const { rows } = await db.query<{ id: number; stage: string; owner: string | null; status: string }>(
        `WITH stuck AS (
           SELECT id, worker_id, requeue_count FROM documents
            WHERE id = ANY($1::bigint[]) AND status = 'processing' AND ($2::text IS NULL OR stage = $2)
            ORDER BY id
            FOR UPDATE SKIP LOCKED)
         UPDATE documents d
            SET status        = CASE WHEN s.requeue_count + 1 > $3 THEN 'dead' ELSE 'queued' END,
                requeue_count = CASE WHEN s.requeue_count + 1 > $3 THEN d.requeue_count ELSE d.requeue_count + 1 END,
                worker_id     = CASE WHEN s.requeue_count + 1 > $3 THEN d.worker_id ELSE NULL END,
                error         = CASE WHEN s.requeue_count + 1 > $3 THEN $4 ELSE d.error END,
                updated_at    = now()
           FROM stuck s
          WHERE d.id = s.id
         RETURNING d.id, d.stage, s.worker_id AS owner, d.status`,
        [ids, stage ?? null, config.maxRequeues, deadError],
      );
      rows.sort((a, b) => a.id - b.id);
      const groups = new Map<string, RequeueGroup>();
      for (const r of rows) {
        const owner = r.owner !== null && WORKER_RE.test(r.owner) ? r.owner : null;
        const k = `${r.stage}\u0000${owner ?? ''}`;
        let g = groups.get(k);
        if (!g) groups.set(k, (g = { stage: r.stage, owner, push: [], drop: [] }));
        (r.status === 'queued' ? g.push : g.drop).push(r.id);
      }
      const requeued = rows.filter((r) => r.status === 'queued').map((r) => r.id);
      const quarantined = rows.filter((r) => r.status === 'dead').map((r) => r.id);
      const acted = requeued.length + quarantined.length;
      const details: Record<string, unknown> = {
        stage: stage ?? null,
        requested: requested.length,
        requeued,
        quarantined,
        // Completed, moved on, requeued already, or being committed by a worker right now.
        notStuck: ids.length - acted,
        deferred,
        owners: [...new Set(rows.map((r) => r.owner).filter((o): o is string => o !== null))].sort(),
        maxRequeues: config.maxRequeues,
      };
      return {
        result: {
          action: 'requeue_documents',
          outcome: acted === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details,
          ...(quarantined.length > 0 ? { escalate: true } : {}),
        },
        redo: [...groups.values()],
      };
    });
    const groups = Array.isArray(redo) ? (redo as RequeueGroup[]) : [];
    const applied = await applyRequeueInRedis(input.idempotencyKey, groups);
    return { ...result, details: { ...result.details, redis: applied } };
  }

  /**
   * Lost documents (queued in Postgres, in no list) back on their queue, exactly once each.
   *
   * 1. One transaction: the rows still `queued` in the plan's stage and not touched since the plan's evidence
   *    (`updated_at` older than LOST_DOCUMENT_THRESHOLD), `FOR UPDATE SKIP LOCKED`; requeue_count + 1 (or `dead`
   *    past MAX_REQUEUES), updated_at now; the executed row with the ids to push; COMMIT.
   * 2. Redis, per chunk, one atomic script: every list of the pipeline is checked and only the ids in none of them
   *    are pushed (never one that is already in a list), with the chunk's done-marker.
   */
  async function requeueLost(input: ActionInput, plan: Plan): Promise<ActionResult> {
    const requested = documentIdsOf(plan);
    const stage = plan.params.stage;
    if (typeof stage !== 'string' || !STAGE_RE.test(stage)) {
      invalid(`requeue_documents: lost documents need their stage, got ${JSON.stringify(stage)}`);
    }
    const ids = requested.slice(0, config.requeueCap);
    const deferred = requested.length - ids.length;
    const deadError = `dead-lettered by selfheal after ${config.maxRequeues} requeues: lost from its queue again`;
    const { result, redo } = await inTransaction(input, 'requeue_documents', async (db) => {
      const { rows } = await db.query<{ id: number; status: string }>(
        `WITH lost AS (
           SELECT id, requeue_count FROM documents
            WHERE id = ANY($1::bigint[]) AND status = 'queued' AND stage = $2
              AND updated_at < now() - make_interval(secs => $5)
            ORDER BY id
            FOR UPDATE SKIP LOCKED)
         UPDATE documents d
            SET status        = CASE WHEN l.requeue_count + 1 > $3 THEN 'dead' ELSE 'queued' END,
                requeue_count = CASE WHEN l.requeue_count + 1 > $3 THEN d.requeue_count ELSE d.requeue_count + 1 END,
                error         = CASE WHEN l.requeue_count + 1 > $3 THEN $4 ELSE d.error END,
                updated_at    = now()
           FROM lost l
          WHERE d.id = l.id
         RETURNING d.id, d.status`,
        [ids, stage, config.maxRequeues, deadError, config.lostDocumentSeconds ?? 600],
      );
      const push = rows
        .filter((r) => r.status === 'queued')
        .map((r) => r.id)
        .sort((a, b) => a - b);
      const quarantined = rows
        .filter((r) => r.status === 'dead')
        .map((r) => r.id)
        .sort((a, b) => a - b);
      const acted = push.length + quarantined.length;
      return {
        result: {
          action: 'requeue_documents',
          outcome: acted === 0 && deferred === 0 ? 'nothing_to_do' : deferred > 0 ? 'partial' : 'done',
          details: {
            stage,
            lost: true,
            requested: requested.length,
            requeued: push,
            quarantined,
            notLost: ids.length - acted,
            deferred,
            maxRequeues: config.maxRequeues,
          },
          ...(quarantined.length > 0 ? { escalate: true } : {}),
        },
        redo: { stage, push },
      };
    });
    const work = redo as { stage: string; push: number[] } | undefined;
    if (!work || work.push.length === 0) return result;
    const queues = (config.stages ?? STAGES).filter((s) => s !== work.stage).map((s) => keys.queue(s));
    let pushed = 0;
    let alreadyInAList = 0;
    let chunksAlreadyApplied = 0;
    for (let i = 0, index = 0; i < work.push.length; i += REQUEUE_SCRIPT_CHUNK, index++) {
      const chunk = work.push.slice(i, i + REQUEUE_SCRIPT_CHUNK).map(String);
      const marker = `${keys.prefix}selfheal:requeue-lost:${input.idempotencyKey}:${index}`;
      const [n, present] = (await scripts.requeueLostChunk(
        [keys.queue(work.stage), marker, ...queues],
        [REQUEUE_MARKER_TTL_SECONDS, keys.processingPattern(), ...chunk],
      )) as [number, number];
      if (n < 0) chunksAlreadyApplied++;
      else {
        pushed += n;
        alreadyInAList += present;
      }
    }
    return { ...result, details: { ...result.details, redis: { pushed, alreadyInAList, chunksAlreadyApplied } } };
  }

  return { requeueDocuments };
}
