/** Processing one document, and the worker's own processing list (recovery at start, sweep at shutdown). */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { errorMessage } from '../core/errors';
import { sleep } from './util';
import type { WorkerRuntime } from './worker-runtime';

/** Longest error text stored per document (errors are untrusted and may be anything). */
const MAX_ERROR_LENGTH = 2_000;

export function documentProcessing(rt: WorkerRuntime) {
  const { opts, pool, redis, keys, log, worker, stage, nextStage, queueKey, processingKey, stats } = rt;
  const { compareAndDelete, compareAndPexpire, finishDocument, giveBack } = rt.scripts;

  type RowClass = 'queued' | 'mine' | 'other';
  async function classify(id: string): Promise<RowClass> {
    if (!/^\d{1,18}$/.test(id)) return 'other';
    const { rows } = await pool.query<{ stage: string; status: string; worker_id: string | null }>(
      'SELECT stage, status, worker_id FROM documents WHERE id = $1',
      [id],
    );
    const row = rows[0];
    if (!row || row.stage !== stage) return 'other';
    if (row.status === 'queued') return 'queued';
    if (row.status === 'processing' && row.worker_id === worker) return 'mine';
    return 'other';
  }

  /** Takes the lease; a lease left by an earlier incarnation of this same worker id (a crash) is ours to replace. */
  async function acquireLease(id: string, value: string): Promise<boolean> {
    if ((await redis.set(keys.lock(id), value, 'PX', opts.lockTtlMs, 'NX')) === 'OK') return true;
    const holder = await redis.get(keys.lock(id));
    if (holder === null || !holder.startsWith(`${worker}:`)) return false;
    await compareAndDelete([keys.lock(id)], [holder]);
    return (await redis.set(keys.lock(id), value, 'PX', opts.lockTtlMs, 'NX')) === 'OK';
  }

  async function simulateWork(): Promise<void> {
    const base = opts.minMs + Math.random() * (opts.maxMs - opts.minMs);
    await sleep(base * rt.faults.slow);
    if (rt.faults.errorRate > 0 && Math.random() < rt.faults.errorRate) {
      throw new Error(`${stage} failed: simulated processing error (error-rate fault ${rt.faults.errorRate})`);
    }
  }

  /** Runs a write, retrying briefly: the work is done, losing it to a short database blip would waste it. */
  async function withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= 5) throw err;
        log.warn({ err: errorMessage(err), attempt }, `${what} failed, retrying`);
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  async function handleDocument(id: string): Promise<void> {
    if (!/^\d{1,18}$/.test(id)) {
      // Not a document id at all: nothing to process, drop the entry.
      await redis.lrem(processingKey, 1, id);
      stats.skipped++;
      return;
    }
    const lease = `${worker}:${randomBytes(8).toString('hex')}`;
    const lockKey = keys.lock(id);
    if (!(await acquireLease(id, lease))) {
      // Exactly-once guard: someone else holds the document (duplicate queue entry). Drop ours.
      await redis.lrem(processingKey, 1, id);
      stats.skipped++;
      log.debug({ id }, 'lease held by another worker; entry dropped');
      return;
    }
    let started;
    try {
      started = await pool.query(
        `UPDATE documents SET status = 'processing', worker_id = $3, attempts = attempts + 1,
                started_at = now(), updated_at = now()
          WHERE id = $1 AND stage = $2 AND status = 'queued' RETURNING payload->>'chaos' AS chaos`,
        [id, stage, worker],
      );
    } catch (err) {
      // Nothing changed in Postgres: give the entry back untouched and release the lease.
      await giveBack([processingKey, queueKey], [id]);
      await compareAndDelete([lockKey], [lease]);
      stats.givenBack++;
      throw err;
    }
    if ((started.rows[0] as { chaos?: string | null } | undefined)?.chaos === 'poison') {
      // A poison document (selfheal chaos poison): the process dies on it, as on a parser segfault or an OOM kill.
      // process.exit, not a signal: a container's PID 1 ignores the signals it sends itself.
      log.error({ id }, 'poison document: the worker process dies');
      process.exit(137);
    }
    if (started.rowCount !== 1) {
      // Exactly-once guard: already done in this stage, dead, missing, or a duplicate entry. Drop it.
      await finishDocument([processingKey, lockKey], [id, lease]);
      stats.skipped++;
      log.debug({ id }, 'row not queued in this stage; entry dropped');
      return;
    }

    rt.current = { id, since: Date.now() };
    rt.state = 'processing';
    // Renew the lease while the work runs, so a slow document is not taken over by another worker.
    const renew = setInterval(() => {
      compareAndPexpire([lockKey], [lease, opts.lockTtlMs]).then(
        (kept) => {
          if (kept !== 1) log.warn({ id }, 'lease lost while processing (expired or cleared)');
        },
        () => undefined,
      );
    }, opts.lockTtlMs / 3);
    const t0 = performance.now();
    let failure: string | undefined;
    try {
      await simulateWork();
    } catch (err) {
      failure = errorMessage(err).slice(0, MAX_ERROR_LENGTH);
    }
    const ms = Math.max(0, Math.round(performance.now() - t0));
    clearInterval(renew);

    // Crash-safety order: Postgres first, then Redis (push to the next stage, LREM, release) in one script.
    // - Crash before the commit: the row stays `processing` by us and the id stays in our processing list, which
    //   is exactly what selfheal's stuck-document detection and requeue expect (a restarted worker with the same id
    //   also takes it back, see recoverOwnList).
    // - Crash after the commit, before the script: the outcome is durable; the leftover entry in our processing
    //   list is dropped by the guard; for a non-final stage the row is `queued` in the next stage but in no queue,
    //   which `lost_documents` detects and requeue repairs; the lease expires by its TTL. Nothing is lost or done
    //   twice.
    // Pushing before committing would instead let the next stage pop an id whose row is not yet queued there and
    // drop it as a duplicate. Releasing the lease in the same script as the push means the next stage never sees
    // the id while our lease still exists.
    let sql: string;
    let params: unknown[];
    if (failure !== undefined) {
      sql = `WITH d AS (
               UPDATE documents SET status = 'failed', error = $5, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms, error)
             SELECT id, $2, $3, 'failed', $4, $5 FROM d`;
      params = [id, stage, worker, ms, failure];
    } else if (nextStage) {
      sql = `WITH d AS (
               UPDATE documents SET stage = $5, status = 'queued', worker_id = NULL, error = NULL,
                      processing_ms = $4, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms)
             SELECT id, $2, $3, 'completed', $4 FROM d`;
      params = [id, stage, worker, ms, nextStage];
    } else {
      sql = `WITH d AS (
               UPDATE documents SET status = 'completed', completed_at = now(), error = NULL,
                      processing_ms = $4, updated_at = now()
                WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3 RETURNING id)
             INSERT INTO document_events (document_id, stage, worker_id, outcome, processing_ms)
             SELECT id, $2, $3, 'completed', $4 FROM d`;
      params = [id, stage, worker, ms];
    }
    try {
      const committed = await withRetry('commit', () => pool.query(sql, params));
      const owned = committed.rowCount === 1;
      if (!owned) log.warn({ id }, 'row changed while processing (requeued or quarantined); result discarded');
      const pushTo = owned && failure === undefined && nextStage ? [keys.queue(nextStage)] : [];
      await withRetry('finish', () => finishDocument([processingKey, lockKey, ...pushTo], [id, lease]));
      if (owned && failure === undefined) stats.completed++;
      else if (owned) stats.failed++;
      log.debug({ id, ms, failure }, owned ? 'document done' : 'document discarded');
    } finally {
      rt.current = undefined;
      rt.state = 'idle';
    }
  }

  /**
   * Entries left in our processing list by an earlier incarnation (a crash): rows still queued here are processed;
   * rows we had started are reset to queued and processed again (the attempt never committed); anything else is
   * dropped.
   */
  async function recoverOwnList(): Promise<void> {
    const ids = await redis.lrange(processingKey, 0, -1);
    for (const id of ids.reverse()) {
      if (rt.stopping) return;
      const cls = await classify(id);
      if (cls === 'other') {
        await redis.lrem(processingKey, 1, id);
        continue;
      }
      if (cls === 'mine') {
        await pool.query(
          `UPDATE documents SET status = 'queued', updated_at = now()
            WHERE id = $1 AND stage = $2 AND status = 'processing' AND worker_id = $3`,
          [id, stage, worker],
        );
      }
      log.info({ id, was: cls }, 'recovering entry left in own processing list');
      await handleDocument(id);
    }
  }

  /** On shutdown: untouched entries go back to the queue, stale ones are dropped. */
  async function sweepOwnList(): Promise<void> {
    for (const id of await redis.lrange(processingKey, 0, -1)) {
      const cls = await classify(id);
      if (cls === 'queued') {
        if ((await giveBack([processingKey, queueKey], [id])) === 1) stats.givenBack++;
      } else if (cls === 'other') await redis.lrem(processingKey, 1, id);
    }
  }

  return { handleDocument, recoverOwnList, sweepOwnList };
}
