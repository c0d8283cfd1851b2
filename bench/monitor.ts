/**
 * Monitoring cycle cost at several table sizes, next to its floor: one snapshot (`collectSnapshot`, no health
 * targets, Ollama refused at once) against a `documents` table of N rows with a queued backlog in Redis, and the
 * floor from the same run: one pipelined Redis round trip (every list length and the orphan windows) plus the
 * snapshot's own SQL statements run directly, in parallel, on the same pool.
 */
import { collectSnapshot, scanAll, snapshotQueries } from '../activities/metrics';
import { LOST_CANDIDATE_CAP, LOST_CANDIDATES_SQL, ORPHAN_LOOKUP_SQL, ORPHAN_WINDOW } from '../activities/reconcile';
import { createTestEnv, type TestEnv } from '../tests/helpers/env';
import { percentile, progress, round1, type Row } from './common';

const STAGES = ['extract', 'evaluate'];
const WINDOW_S = 300;
const LOST_S = 600;

export interface MonitorRow extends Row {
  documents: number;
  queued: number;
  floor_p50_ms: number;
  floor_p95_ms: number;
  snapshot_p50_ms: number;
  snapshot_p95_ms: number;
  snapshot_over_floor: number;
  reconciled_p50_ms: number;
  reconciled_p95_ms: number;
  reconciled_over_floor: number;
}

/** `docs` documents, `queued` of them queued for an hour (oldest first) and waiting in queue:extract. */
async function fill(t: TestEnv, docs: number, queued: number): Promise<void> {
  // In slices, so that a 10M-row table does not become one 10M-row transaction.
  const slice = 1_000_000;
  for (let done = 0; done < docs - queued; done += slice) {
    await t.pool.query(
      `INSERT INTO documents (stage, status, created_at, updated_at, completed_at)
       SELECT 'evaluate', 'completed', now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours'
         FROM generate_series(1, $1::int)`,
      [Math.min(slice, docs - queued - done)],
    );
    if (docs > slice) progress(`  ${Math.min(done + slice, docs - queued)} completed rows`);
  }
  const { rows } = await t.pool.query<{ id: string }>(
    `INSERT INTO documents (stage, status, created_at, updated_at)
     SELECT 'extract', 'queued', now() - interval '1 hour' + make_interval(secs => n / 1000.0),
            now() - interval '1 hour' + make_interval(secs => n / 1000.0)
       FROM generate_series(1, $1::int) AS n ORDER BY n RETURNING id::text AS id`,
    [queued],
  );
  await t.pool.query('ANALYZE documents');
  // LPUSH in id order: the oldest id ends at the tail, where workers take (and the membership walk starts).
  const ids = rows.map((r) => r.id);
  for (let i = 0; i < ids.length; i += 10_000)
    await t.redis.lpush(t.keys.queue('extract'), ...ids.slice(i, i + 10_000));
}

/** The floor of one cycle: one pipelined Redis round trip, then the same SQL run directly (in parallel). */
async function floorOnce(t: TestEnv, processingLists: string[]): Promise<number> {
  const t0 = performance.now();
  const pipe = t.redis.pipeline();
  for (const stage of STAGES) pipe.llen(t.keys.queue(stage));
  for (const list of processingLists) pipe.llen(list);
  for (const stage of STAGES) pipe.lrange(t.keys.queue(stage), -ORPHAN_WINDOW, -1);
  const replies = (await pipe.exec()) ?? [];
  const windowIds = replies
    .slice(STAGES.length + processingLists.length)
    .flatMap(([, v]) => v as string[])
    .filter((id) => /^\d{1,15}$/.test(id));
  const q = snapshotQueries(STAGES, WINDOW_S);
  await Promise.all([
    t.pool.query(q.counts),
    ...q.completedEstimates.map((e) => t.pool.query(e)),
    t.pool.query(q.window),
    t.pool.query(q.progress),
    t.pool.query(q.processing),
    t.pool.query(LOST_CANDIDATES_SQL, [LOST_S, LOST_CANDIDATE_CAP]),
    t.pool.query(ORPHAN_LOOKUP_SQL, [[...new Set(windowIds)]]),
  ]);
  return performance.now() - t0;
}

export async function benchMonitorSize(docs: number, cycles: number, lost = 0): Promise<MonitorRow & Row> {
  const queued = Math.min(100_000, Math.max(1, Math.round(docs / 10)));
  const t = await createTestEnv();
  try {
    const t0 = Date.now();
    progress(`monitor: filling ${docs} documents (${queued} queued)`);
    await fill(t, docs, queued);
    progress(`monitor: ${docs} documents set up in ${((Date.now() - t0) / 1000).toFixed(1)} s; measuring`);
    const deps = {
      redis: t.redis,
      pool: t.pool,
      keys: t.keys,
      stages: STAGES,
      healthTargets: [],
      ollamaHost: 'http://127.0.0.1:9',
      ollamaModel: 'none',
      windowSeconds: WINDOW_S,
      lostDocumentSeconds: LOST_S,
    };
    const processingLists = await scanAll(t.redis, t.keys.processingPattern());
    const run = async (f: () => Promise<unknown>) => {
      const xs: number[] = [];
      await f(); // warm-up: connections and plans
      for (let i = 0; i < cycles; i++) {
        const s0 = performance.now();
        await f();
        xs.push(performance.now() - s0);
      }
      return { p50: round1(percentile(xs, 50)), p95: round1(percentile(xs, 95)) };
    };
    // Interleaved rounds would mix caches; each series runs on its own, the floor first.
    const floorTimes: number[] = [];
    await floorOnce(t, processingLists);
    for (let i = 0; i < cycles; i++) floorTimes.push(await floorOnce(t, processingLists));
    const floor = { p50: round1(percentile(floorTimes, 50)), p95: round1(percentile(floorTimes, 95)) };
    const plain = await run(() => collectSnapshot({ ...deps, reconcile: false }));
    const full = await run(() => collectSnapshot({ ...deps, reconcile: true }));
    const row: MonitorRow & Row = {
      documents: docs,
      queued,
      floor_p50_ms: floor.p50,
      floor_p95_ms: floor.p95,
      snapshot_p50_ms: plain.p50,
      snapshot_p95_ms: plain.p95,
      snapshot_over_floor: round1(plain.p50 / floor.p50),
      reconciled_p50_ms: full.p50,
      reconciled_p95_ms: full.p95,
      reconciled_over_floor: round1(full.p50 / floor.p50),
    };
    if (lost > 0) {
      // The oldest `lost` queued ids vanish from the queue: the membership walk must cover every list.
      await t.redis.ltrim(t.keys.queue('extract'), 0, -(lost + 1));
      const withLost = await run(() => collectSnapshot({ ...deps, reconcile: true }));
      row[`reconciled_${lost}_lost_p50_ms`] = withLost.p50;
      row[`reconciled_${lost}_lost_p95_ms`] = withLost.p95;
    }
    progress(`monitor: ${docs} documents: ${JSON.stringify(row)}`);
    return row;
  } finally {
    await t.cleanup();
  }
}
