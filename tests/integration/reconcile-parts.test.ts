/**
 * The parts of reconciliation against real Postgres and Redis, without Temporal: what the collector reports as lost
 * and orphaned (and what it must not), and the requeue of lost documents, which pushes an id only when it is in no
 * list at that instant, exactly once whatever the retries.
 */
import { randomUUID } from 'node:crypto';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createActionActivities, type ActionInput, type ActionResult } from '../../activities/actions';
import { LOST_CANDIDATES_SQL, reconcile } from '../../activities/reconcile';
import { detectLostDocuments } from '../../core/detectors';
import type { Plan } from '../../core/plan';
import { runbookPlan } from '../../core/runbook';
import { createTestEnv, uniqueId, type TestEnv } from '../helpers/env';
import { testDocker } from '../helpers/pipeline';
import { snapshot, thresholds } from '../helpers/snapshots';

let t: TestEnv;
beforeEach(async () => {
  t = await createTestEnv();
});
afterEach(async () => {
  await t.cleanup();
});

/** `n` documents in a status, last updated `ageS` seconds ago; returns their ids in order. */
async function docs(n: number, status: string, stage = 'extract', ageS = 3_600): Promise<number[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `INSERT INTO documents (stage, status, updated_at)
     SELECT $1, $2, now() - make_interval(secs => $3) FROM generate_series(1, $4::int) ORDER BY 1 RETURNING id::text AS id`,
    [stage, status, ageS, n],
  );
  return rows.map((r) => Number(r.id));
}

const deps = () => ({
  redis: t.redis,
  pool: t.pool,
  keys: t.keys,
  stages: ['extract', 'evaluate'],
  lostDocumentSeconds: 600,
});

describe('reconcile (the collector part)', () => {
  it('lost: queued past the threshold and in no list; in a queue, in any processing list, or too young is not lost', async () => {
    const lost = await docs(3, 'queued');
    const inQueue = await docs(2, 'queued');
    const inProcessing = await docs(2, 'queued');
    const young = await docs(2, 'queued', 'extract', 5);
    const processing = await docs(2, 'processing');
    await t.redis.lpush(t.keys.queue('extract'), ...inQueue);
    await t.redis.lpush(t.keys.processing('extract', 'w-1'), inProcessing[0]!);
    await t.redis.lpush(t.keys.processing('evaluate', 'w-9'), inProcessing[1]!);
    const part = await reconcile(deps());
    expect(part.lost.map((d) => d.id).sort((a, b) => a - b)).toEqual(lost);
    expect(part.lostCandidates).toBe(lost.length + inQueue.length + inProcessing.length);
    for (const id of [...young, ...processing]) expect(part.lost.map((d) => d.id)).not.toContain(id);
  });

  it('lost: a document a worker takes and finishes between the read of Postgres and the search of the lists is not lost', async () => {
    // The race, made certain: the candidates are read while the document waits in its queue; before the lists are
    // searched, a worker takes it, finishes it (the row changes) and removes it from its processing list.
    const [taken] = await docs(1, 'queued');
    const [lostToo] = await docs(1, 'queued');
    await t.redis.lpush(t.keys.queue('extract'), taken!);
    const pool = new Proxy(t.pool, {
      get(target, prop, receiver) {
        if (prop !== 'query') return Reflect.get(target, prop, receiver) as unknown;
        return async (sql: string, params?: unknown[]) => {
          const result = await target.query(sql, params);
          if (sql === LOST_CANDIDATES_SQL) {
            await t.redis.lrem(t.keys.queue('extract'), 0, taken!);
            await target.query(
              "UPDATE documents SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = $1",
              [taken],
            );
          }
          return result;
        };
      },
    });
    const part = await reconcile({ ...deps(), pool });
    expect(part.lostCandidates).toBe(2);
    // The untouched one still is lost: the second read drops only rows that changed.
    expect(part.lost.map((d) => d.id)).toEqual([lostToo]);
  });

  it('lost: found in a 100,000-entry queue without reading it into Node, the walk stopping early when all are found', async () => {
    const queued = await docs(1_000, 'queued');
    const filler = Array.from({ length: 99_000 }, (_, i) => String(10_000_000 + i));
    for (let i = 0; i < filler.length; i += 10_000)
      await t.redis.rpush(t.keys.queue('extract'), ...filler.slice(i, i + 10_000));
    // The candidates sit at the consuming end (the tail), where the oldest entries are.
    await t.redis.rpush(t.keys.queue('extract'), ...queued.slice(10));
    const part = await reconcile(deps());
    expect(part.lost.map((d) => d.id)).toEqual(queued.slice(0, 10));
  });

  it('orphans: completed, dead and missing documents and duplicates, never a live entry', async () => {
    const live = await docs(3, 'queued');
    const [done] = await docs(1, 'completed');
    const [dead] = await docs(1, 'dead');
    await t.redis.lpush(t.keys.queue('extract'), ...live, done!, dead!, 999_999_999, live[0]!);
    const part = await reconcile(deps());
    const got = part.orphans.map((o) => [o.id, o.count, o.reason]).sort();
    expect(got).toEqual(
      [
        [String(live[0]), 2, 'duplicate'],
        [String(done), 1, 'completed'],
        [String(dead), 1, 'dead'],
        ['999999999', 1, 'missing'],
      ].sort(),
    );
    expect(part.entriesChecked).toBe(7);
  });
});

describe('requeueDocuments for lost documents', () => {
  const actions = () =>
    createActionActivities({
      pool: t.pool,
      redis: t.redis,
      keys: t.keys,
      docker: testDocker(),
      log: pino({ level: 'silent' }),
      config: {
        maxRequeues: 3,
        requeueCap: 1000,
        restartStopTimeoutSeconds: 5,
        healthTargets: [],
        containerAllowlist: [],
        containerDenylist: [],
        lostDocumentSeconds: 600,
        stages: ['extract', 'evaluate'],
      },
    });
  const run = (input: ActionInput, activityId = '1', runId = randomUUID()): Promise<ActionResult> =>
    new MockActivityEnvironment(
      { activityId, workflowExecution: { workflowId: `heal-lost_documents-extract-${uniqueId()}`, runId } },
      { logger: new DefaultLogger('ERROR') },
    ).run(actions().requeueDocuments, input);

  async function lostPlan(): Promise<{ plan: Plan; ids: number[] }> {
    const ids = await docs(6, 'queued');
    const part = await reconcile(deps());
    const [anomaly] = detectLostDocuments(snapshot(Date.now(), { reconcile: part }), [], thresholds, Date.now());
    return { plan: runbookPlan(anomaly!, 0, { containers: [] }), ids };
  }

  it('pushes each lost id once; an id that came back meanwhile, or is no longer queued, is left alone', async () => {
    const { plan, ids } = await lostPlan();
    expect(plan.action).toBe('requeue_documents');
    expect(plan.params).toMatchObject({ stage: 'extract', documentIds: ids });
    // Meanwhile: one is back in a worker's processing list, one completed.
    await t.redis.lpush(t.keys.processing('extract', 'w-2'), ids[0]!);
    await t.pool.query(`UPDATE documents SET status = 'completed' WHERE id = $1`, [ids[1]]);
    const key = `lost-${uniqueId()}`;
    const result = await run({ plan, idempotencyKey: key });
    expect(result.outcome).toBe('done');
    expect(result.details).toMatchObject({ lost: true, requeued: ids.slice(0, 1).concat(ids.slice(2)), notLost: 1 });
    expect(result.details.redis).toMatchObject({ pushed: 4, alreadyInAList: 1 });
    const queue = await t.redis.lrange(t.keys.queue('extract'), 0, -1);
    expect([...queue].sort()).toEqual(ids.slice(2).map(String).sort());

    // A retry (new attempt of the same execution) changes nothing.
    const again = await run({ plan, idempotencyKey: key }, '1');
    expect(again.details).toMatchObject({ replayed: true });
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(4);
    const { rows } = await t.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM healing_log WHERE step = 'executed' AND idempotency_key = $1",
      [key],
    );
    expect(rows[0]!.n).toBe(1);
  });

  it('a document queued recently (not lost by the threshold) is not touched', async () => {
    const { plan } = await lostPlan();
    const ids = plan.params.documentIds!;
    await t.pool.query('UPDATE documents SET updated_at = now() WHERE id = ANY($1::bigint[])', [ids]);
    const result = await run({ plan, idempotencyKey: `lost-${uniqueId()}` });
    expect(result.outcome).toBe('nothing_to_do');
    expect(await t.redis.llen(t.keys.queue('extract'))).toBe(0);
  });
});
