/**
 * Reconciliation of Postgres with Redis, end to end against the real pipeline (containers), Postgres, Redis, Docker
 * and Temporal, with selfheal running as `selfheal up --no-pipeline` and faults from `selfheal chaos`:
 * - 500 queued documents, then `chaos redis-flush` (a Redis restart without persistence): with auto-fix on, every
 *   one is processed exactly once after the healing; with auto-fix off, one approval brings them all back;
 * - orphaned and duplicate queue entries are removed while the live entries of the same queue stay;
 * - a poison document that kills every worker process that takes it is quarantined, the restarts stop, and the
 *   other documents keep flowing.
 */
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDocuments } from '../../pipeline/generator';
import type { RunningWorker } from '../../pipeline/runner';
import { healingWorkflowId } from '../../workflows/definitions';
import { waitFor, type TestEnv } from '../helpers/env';
import { waitForDocuments } from '../helpers/pipeline';
import { startStack } from '../helpers/stack';
import { recordHistories, runSince } from '../helpers/temporal';

async function setup(autoFix: boolean, extract = 2) {
  const stack = await startStack({
    ollama: { replies: [{ kind: 'status', status: 500 }] },
    pipeline: {
      work: { minMs: 2, maxMs: 6 },
      workers: [
        { stage: 'extract', kind: 'container', count: extract },
        { stage: 'evaluate', kind: 'container', count: 1 },
      ],
    },
    env: ({ ollama, runner }) => ({
      OLLAMA_HOST: ollama.url,
      HEALTH_TARGETS: runner!.healthTargets(),
      AUTO_FIX_ENABLED: String(autoFix),
      VERIFY_DELAY: '3',
      RESTART_COOLDOWN: '0',
      MAX_ACTIONS_PER_HOUR: '100',
      CONTAINER_ALLOWLIST: 'pipeline-*',
      LOST_DOCUMENT_THRESHOLD: '3',
      POISON_CRASHES: '2',
      // Workers held back on purpose below must not read as a stalled queue.
      QUEUE_STALL_THRESHOLD: '3600',
    }),
  });
  const { t, docker, workers, selfheal, client } = stack;
  return {
    t,
    docker,
    workers,
    selfheal,
    client,
    chaos(...args: string[]) {
      const r = selfheal.cli(['chaos', ...args, '--json']);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    },
    async teardown() {
      try {
        await recordHistories(client);
      } finally {
        await stack.stop();
      }
    },
  };
}
type Setup = Awaited<ReturnType<typeof setup>>;

/** The run of `workflowId` started at or after `since`. */
async function healing(client: Client, workflowId: string, since: number, timeoutMs = 90_000) {
  return (await runSince(client, workflowId, { since, timeoutMs })).handle;
}

/** Every extract worker stops taking documents (its /health still 200): the queue holds what is pushed. */
async function holdExtract(s: Setup) {
  const extract = s.workers.filter((x: RunningWorker) => x.stage === 'extract');
  for (const w of extract) s.chaos('hang-worker', w.worker, 'silent');
  // Held once each worker's loop has seen the fault (its /health body says so).
  for (const w of extract) {
    await waitFor(
      async () => {
        const res = await fetch(w.healthUrl).catch(() => undefined);
        const body = (await res?.json().catch(() => undefined)) as { state?: string } | undefined;
        return res?.status === 200 && body?.state === 'hung';
      },
      { what: `${w.worker} to hold`, timeoutMs: 15_000 },
    );
  }
}

/** Each document completed once per stage: one `completed` event per (document, stage), none missing. */
async function expectExactlyOnce(t: TestEnv, ids: number[]) {
  await waitForDocuments(t, ids, { timeoutMs: 90_000 });
  const { rows } = await t.pool.query<{ stage: string; docs: number; events: number }>(
    `SELECT stage, count(DISTINCT document_id)::int AS docs, count(*)::int AS events FROM document_events
      WHERE document_id = ANY($1::bigint[]) AND outcome = 'completed' GROUP BY stage ORDER BY stage`,
    [ids],
  );
  expect(rows).toEqual([
    { stage: 'evaluate', docs: ids.length, events: ids.length },
    { stage: 'extract', docs: ids.length, events: ids.length },
  ]);
}

/** `count` (500) documents waiting in queue:extract, then every Redis key of the pipeline gone. */
async function lose500(s: Setup, count = 500): Promise<{ ids: number[]; flushedAt: number }> {
  await holdExtract(s);
  const ids = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count });
  expect(await s.t.redis.llen(s.t.keys.queue('extract'))).toBe(count);
  const flushedAt = Date.now();
  const flushed = s.chaos('redis-flush');
  expect(flushed.deleted).toBeGreaterThan(0);
  expect(await s.t.redis.llen(s.t.keys.queue('extract'))).toBe(0);
  return { ids, flushedAt };
}

describe('reconciliation, auto-fix on', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup(true, 3);
  }, 180_000);
  afterAll(async () => {
    await s?.teardown();
  });

  it('500 queued documents lost to a Redis flush are each processed exactly once after healing', async () => {
    const { ids, flushedAt } = await lose500(s);
    const handle = await healing(s.client, healingWorkflowId('lost_documents', 'extract'), flushedAt);
    const status = await handle.result();
    expect(
      status.phase,
      JSON.stringify({ history: status.history, verification: status.verification, actions: status.actions }),
    ).toBe('healed');
    expect(status.actions.map((a) => a.action)).toEqual(['requeue_documents']);
    expect(status.actions[0]!.details).toMatchObject({ lost: true, redis: { pushed: 500, alreadyInAList: 0 } });
    await expectExactlyOnce(s.t, ids);
    const { rows } = await s.t.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM documents WHERE id = ANY($1::bigint[]) AND requeue_count = 1`,
      [ids],
    );
    expect(rows[0]!.n).toBe(500);
  });

  it('documents lost again once the first are requeued: that healing is healed, a second requeues the others', async () => {
    const workflowId = healingWorkflowId('lost_documents', 'extract');
    const { ids: first, flushedAt } = await lose500(s, 100);
    const { runId, handle } = await runSince(s.client, workflowId, { since: flushedAt });
    // Its requeue has run: 40 more documents are lost now, queued past the threshold and in no list. The verification
    // (VERIFY_DELAY 3 s later) sees them, though the healing never knew them.
    await waitFor(
      async () =>
        (await s.t.pool.query(`SELECT 1 FROM healing_log WHERE run_id = $1 AND step = 'executed'`, [runId])).rows
          .length > 0,
      { what: 'the requeue of the first documents', intervalMs: 50 },
    );
    const { rows: later } = await s.t.pool.query<{ id: string }>(
      `INSERT INTO documents (stage, status, payload, updated_at)
       SELECT 'extract', 'queued', jsonb_build_object('title', 'lost later ' || n), now() - interval '1 minute'
         FROM generate_series(1, 40) AS n ORDER BY n RETURNING id`,
    );
    const second = later.map((r) => Number(r.id));
    const firstStatus = await handle.result();
    const why = (st: typeof firstStatus) =>
      JSON.stringify({ history: st.history, verification: st.verification, actions: st.actions });
    // The documents it was started for are back: healed, though documents lost since are in the detector's view.
    expect(firstStatus.phase, why(firstStatus)).toBe('healed');
    expect(firstStatus.actions[0]!.details).toMatchObject({ lost: true, redis: { pushed: 100 } });
    // The anomaly never cleared (the 40 were seen in every cycle since): it fires again, for the 40.
    const next = await runSince(s.client, workflowId, { since: firstStatus.history.at(-1)!.at });
    expect(next.runId).not.toBe(runId);
    const secondStatus = await next.handle.result();
    expect(secondStatus.phase, why(secondStatus)).toBe('healed');
    expect(secondStatus.actions.map((a) => a.action)).toEqual(['requeue_documents']);
    expect(secondStatus.actions[0]!.details).toMatchObject({ lost: true, requeued: second });
    await expectExactlyOnce(s.t, [...first, ...second]);
    const { rows: escalations } = await s.t.pool.query(
      `SELECT 1 FROM healing_log WHERE workflow_id = $1 AND created_at >= to_timestamp($2 / 1000.0)
          AND step IN ('escalated', 'failed', 'rejected')`,
      [workflowId, flushedAt],
    );
    expect(escalations).toEqual([]);
  });

  it('orphaned and duplicate entries are removed; the live entries of the same queue stay', async () => {
    await holdExtract(s);
    const live = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 20 });
    const since = Date.now();
    const injected = s.chaos('duplicate-entries', '3');
    const duplicates = (injected.duplicates as string[]).map(String);
    const orphans = (injected.orphans as string[]).map(String);
    expect(await s.t.redis.llen(s.t.keys.queue('extract'))).toBe(26);

    const handle = await healing(s.client, healingWorkflowId('orphaned_entries', 'extract'), since);
    const status = await handle.result();
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    const entries = await s.t.redis.lrange(s.t.keys.queue('extract'), 0, -1);
    // Each live document exactly once; no orphan left.
    expect([...entries].sort()).toEqual(live.map(String).sort());
    for (const id of orphans) expect(entries).not.toContain(id);
    for (const id of duplicates) expect(entries.filter((e) => e === id)).toHaveLength(1);

    expect(s.chaos('clear').fault).toBe('clear');
    await expectExactlyOnce(s.t, live);
  });

  it('a poison document is quarantined; the restarts stop; the other documents keep flowing', async () => {
    const since = Date.now();
    const injected = s.chaos('poison', '1');
    const [poisonId] = injected.documents as number[];
    const handle = await healing(s.client, healingWorkflowId('poison_document', String(poisonId)), since, 120_000);
    const status = await handle.result();
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    expect(status.actions.map((a) => a.action)).toEqual(['quarantine_document']);
    const { rows } = await s.t.pool.query<{ status: string; error: string; payload: { chaos: string } }>(
      'SELECT status, error, payload FROM documents WHERE id = $1',
      [poisonId],
    );
    // Dead with the reason, the row itself intact.
    expect(rows[0]).toMatchObject({ status: 'dead', payload: { chaos: 'poison' } });
    expect(rows[0]!.error).toMatch(/quarantined by selfheal/);

    // The loop is over: no worker takes it (and dies on it) any more, while other documents flow.
    const attempts = async () =>
      (await s.t.pool.query<{ attempts: number }>('SELECT attempts FROM documents WHERE id = $1', [poisonId])).rows[0]!
        .attempts;
    const before = await attempts();
    const docs = await generateDocuments({ pool: s.t.pool, redis: s.t.redis, keys: s.t.keys, count: 30 });
    await waitForDocuments(s.t, docs, { timeoutMs: 60_000 });
    expect(await attempts()).toBe(before);
    expect((await s.t.pool.query('SELECT status FROM documents WHERE id = $1', [poisonId])).rows[0]).toEqual({
      status: 'dead',
    });
    const deaths = status.anomaly.evidence.crashes as number;
    expect(deaths).toBeGreaterThanOrEqual(2);
    console.log('poison document:', { poisonId, deaths, workers: status.anomaly.evidence.workers });
  });
});

describe('reconciliation, auto-fix off: one approval brings the lost documents back', () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup(false);
  }, 180_000);
  afterAll(async () => {
    await s?.teardown();
  });

  it('500 lost documents wait for approval, then each is processed exactly once', async () => {
    const { ids, flushedAt } = await lose500(s);
    const id = healingWorkflowId('lost_documents', 'extract');
    const handle = await healing(s.client, id, flushedAt);
    await waitFor(async () => (await handle.describe()).searchAttributes.HealPhase?.[0] === 'awaiting_approval', {
      what: 'awaiting approval',
    });
    const approved = s.selfheal.cli(['approve', id, '--by', 'alice', '--reason', 'redis restarted']);
    expect(approved.status, approved.stderr).toBe(0);
    const status = await handle.result();
    expect(status.phase, JSON.stringify(status.history)).toBe('healed');
    expect(status.decision).toMatchObject({ decision: 'approve', by: 'alice' });
    await expectExactlyOnce(s.t, ids);
  });
});
