/** Faults of the pipeline's state in Redis and Postgres: stale locks, stuck documents, a flush, duplicates, poison. */
import { STAGES, type Stage } from '../core/keys';
import {
  ChaosError,
  chaosKey,
  checkCount,
  checkStage,
  hex,
  llmKey,
  type ChaosContext,
  type ChaosResult,
} from './chaos-context';

export function dataFaults(ctx: ChaosContext) {
  const { pool, redis, keys, record } = ctx;
  const stuckAge = ctx.opts.stuckAgeSeconds ?? 3_600;
  const lockTtl = ctx.opts.staleLockTtlSeconds ?? 3_600;

  /**
   * Leases on finished documents (completed, failed or dead), newest first, as a worker that died between its
   * commit and its release would leave them: the documents are real and nothing else about them is wrong, so the
   * only anomaly is the lock itself. The owner is a fresh worker id that never had a heartbeat or registration.
   */
  async function staleLocks(n: number): Promise<ChaosResult> {
    checkCount('stale-lock', n);
    const owner = `chaos-dead-${hex()}`;
    const { rows } = await pool.query<{ id: number }>(
      `SELECT id FROM documents WHERE status IN ('completed', 'failed', 'dead') ORDER BY id DESC LIMIT $1`,
      // Room to skip documents already locked (by earlier stale-lock faults or live workers).
      [n * 3 + 200],
    );
    const locks: { id: number; key: string; value: string }[] = [];
    for (const { id } of rows) {
      if (locks.length >= n) break;
      const key = keys.lock(id);
      const value = `${owner}:${hex()}${hex()}`;
      // NX: never overwrite a live lease.
      if ((await redis.set(key, value, 'EX', lockTtl, 'NX')) === 'OK') locks.push({ id, key, value });
    }
    if (locks.length > 0) await record({ fault: 'stale-lock', at: Date.now(), owner, locks });
    if (locks.length < n) {
      throw new ChaosError(
        'not_enough_documents',
        `stale-lock: locked ${locks.length} of ${n} documents: stale locks are put on finished documents, and only ` +
          `${locks.length} unlocked ones exist; let the pipeline finish some documents first` +
          (locks.length > 0 ? ' (the locks made are recorded; `clear` removes them)' : ''),
      );
    }
    return {
      fault: 'stale-lock',
      owner,
      ownerHeartbeat: null,
      documents: locks.map((l) => l.id),
      keys: locks.map((l) => l.key),
      ttlSeconds: lockTtl,
    };
  }

  /**
   * New documents left as a crash leaves them: `processing`, owned by a worker id that has no heartbeat and no
   * registration, started `stuckAgeSeconds` ago, their ids in that worker's processing list, no lease (it would
   * have expired long ago). New rows, so no live worker's document is disturbed.
   */
  async function stuckDocuments(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('stuck-documents', n);
    checkStage(stage);
    const owner = `chaos-dead-${hex()}`;
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, worker_id, attempts, payload, created_at, started_at, updated_at)
       SELECT $1, 'processing', $2, 1,
              jsonb_build_object('title', 'stuck document ' || n, 'chaos', 'stuck-documents'),
              now() - make_interval(secs => $3 + 60), now() - make_interval(secs => $3),
              now() - make_interval(secs => $3)
         FROM generate_series(1, $4::int) AS n ORDER BY n RETURNING id`,
      [stage, owner, stuckAge, n],
    );
    const ids = rows.map((r) => r.id);
    await redis.lpush(keys.processing(stage, owner), ...ids);
    await record({ fault: 'stuck-documents', at: Date.now(), owner, stage, ids });
    return {
      fault: 'stuck-documents',
      owner,
      ownerHeartbeat: null,
      stage,
      documents: ids,
      processingList: keys.processing(stage, owner),
      startedSecondsAgo: stuckAge,
    };
  }

  async function redisFlush(): Promise<ChaosResult> {
    const keep = new Set([chaosKey(keys), llmKey(keys), keys.pipelineWorkers()]);
    let deleted = 0;
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${keys.prefix}*`, 'COUNT', 1000);
      cursor = next;
      const doomed = batch.filter((k) => !keep.has(k));
      if (doomed.length > 0) deleted += await redis.unlink(...doomed);
    } while (cursor !== '0');
    await record({ fault: 'redis-flush', at: Date.now(), deleted });
    return { fault: 'redis-flush', deleted, kept: [...keep].sort() };
  }

  async function duplicateEntries(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('duplicate-entries', n);
    checkStage(stage);
    const waiting = await redis.lrange(keys.queue(stage), -n, -1);
    const { rows } = await pool.query<{ id: string }>(
      `SELECT id::text AS id FROM documents WHERE status = 'completed' ORDER BY completed_at DESC NULLS LAST LIMIT $1`,
      [n],
    );
    if (waiting.length < n || rows.length < n) {
      throw new ChaosError(
        'not_enough_documents',
        `duplicate-entries: needs ${n} entries waiting in queue:${stage} (has ${waiting.length}) and ${n} completed documents (has ${rows.length})`,
      );
    }
    const orphans = rows.map((r) => r.id);
    await redis.lpush(keys.queue(stage), ...waiting, ...orphans);
    await record({ fault: 'duplicate-entries', at: Date.now(), stage, duplicates: waiting, orphans });
    return { fault: 'duplicate-entries', stage, duplicates: waiting, orphans, queue: keys.queue(stage) };
  }

  async function poison(n: number, stage: Stage = STAGES[0]): Promise<ChaosResult> {
    checkCount('poison', n);
    checkStage(stage);
    const { rows } = await pool.query<{ id: number }>(
      `INSERT INTO documents (stage, status, payload)
       SELECT $1, 'queued', jsonb_build_object('title', 'poison document ' || n, 'chaos', 'poison')
         FROM generate_series(1, $2::int) AS n ORDER BY n RETURNING id`,
      [stage, n],
    );
    const ids = rows.map((r) => r.id);
    await redis.lpush(keys.queue(stage), ...ids);
    await record({ fault: 'poison', at: Date.now(), stage, ids });
    return { fault: 'poison', stage, documents: ids, effect: 'the worker that takes one exits with code 137' };
  }

  return { staleLocks, stuckDocuments, redisFlush, duplicateEntries, poison };
}
