/**
 * The history noise control reads, against a real Redis: when the stream `monitoring:metrics` loses the records a
 * monitor wrote (a flush of the pipeline's Redis, as `selfheal chaos redis-flush` does, or a Redis restart without
 * persistence), the records that monitor remembers stand in, so a lasting anomaly is not fired again as a new one.
 * The chaos soak found it: a container dead since a poison document, its healing escalated to a human, was restarted
 * two seconds after a flush by a new healing. The gone marks (`monitoring:gone`) the flush took stand in the same way,
 * so that a fault back after its remedy still fires again.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDetectionActivities } from '../../activities/detection';
import type { Snapshot } from '../../core/snapshot';
import { createTestEnv, type TestEnv } from '../helpers/env';
import { snapshot, thresholds } from '../helpers/snapshots';

let t: TestEnv;
beforeEach(async () => {
  t = await createTestEnv();
});
afterEach(async () => {
  await t.cleanup();
});

/** A cycle's snapshot with `pipeline-extract-1` dead (Docker's fact: it fires at once). */
const dead = (at: number): Snapshot =>
  snapshot(at, {
    containers: [
      { name: 'pipeline-extract-1', state: 'exited', running: false, restartCount: 0, exitCode: 137, oomKilled: false },
    ],
  });

/** Snapshot times near now: the stream is trimmed by age against its entries' ids, which are Redis's clock. */
let T0: number;
beforeEach(() => {
  T0 = Date.now() - 60_000;
});

/** Cycles 1 s apart, as `intervalSeconds` says. */
const deps = () => ({ redis: t.redis, keys: t.keys, retentionSeconds: 3_600, historyLimit: 50, intervalSeconds: 1 });

describe('detection history', () => {
  const cycle = (d: ReturnType<typeof createDetectionActivities>, at: number, snap = dead(at)) =>
    d.detectAnomalies({ snapshot: snap, thresholds, cycleStartedAt: Date.now() });

  it('the stream flushed: a container dead all along is still active, not fired again; the stream is written on', async () => {
    const d = createDetectionActivities(deps());
    const first = await cycle(d, T0);
    expect(first.fired.map((a) => a.target)).toEqual(['pipeline-extract-1']);
    expect((await cycle(d, T0 + 1_000)).fired).toEqual([]);

    // Everything of the prefix goes, as `selfheal chaos redis-flush` does it.
    const doomed = await t.redis.keys(`${t.prefix}*`);
    expect(doomed).toContain(t.keys.metricsStream());
    await t.redis.unlink(...doomed);

    const after = await cycle(d, T0 + 2_000);
    expect(after.historyFrom).toBe('memory');
    expect(after.active.map((a) => a.target)).toEqual(['pipeline-extract-1']);
    expect(after.fired).toEqual([]);
    // The stream has this cycle's record again, and the next cycle reads it from Redis: still not fired.
    const next = await cycle(d, T0 + 3_000);
    expect(next.historyFrom).toBe('redis');
    expect(next.fired).toEqual([]);
    // Once it clears and comes back, it fires as a new occurrence, the usual way.
    const healthy = (at: number) => snapshot(at);
    for (let i = 4; i < 4 + thresholds.clearAfterCycles; i++) await cycle(d, T0 + i * 1_000, healthy(T0 + i * 1_000));
    const back = await cycle(d, T0 + 10_000);
    expect(back.fired.map((a) => a.target)).toEqual(['pipeline-extract-1']);
  });

  it("another monitor's newer record in the stream wins over what this one remembers", async () => {
    const a = createDetectionActivities(deps());
    const b = createDetectionActivities(deps());
    expect((await cycle(a, T0)).fired.map((x) => x.target)).toEqual(['pipeline-extract-1']);
    // The other monitor takes the next cycles: the container came back, and the anomaly cleared.
    for (let i = 1; i <= thresholds.clearAfterCycles; i++) {
      const r = await cycle(b, T0 + i * 1_000, snapshot(T0 + i * 1_000));
      expect(r.historyFrom).toBe('redis');
    }
    // Dead again: monitor a, whose own last record still has it active, reads the stream and fires it anew.
    const again = await cycle(a, T0 + 10_000);
    expect(again.historyFrom).toBe('redis');
    expect(again.fired.map((x) => x.target)).toEqual(['pipeline-extract-1']);
  });

  it('what this monitor remembers is not used once older than ANOMALY_CLEAR_CYCLES intervals: the anomaly may have cleared since', async () => {
    const d = createDetectionActivities(deps());
    expect((await cycle(d, T0)).fired.map((x) => x.target)).toEqual(['pipeline-extract-1']);
    await t.redis.unlink(...(await t.redis.keys(`${t.prefix}*`)));
    // No cycle of this monitor for 10 intervals (another one ran them, or the Schedule was paused): the stream is read.
    const later = await cycle(d, T0 + 10_000);
    expect(later.historyFrom).toBe('redis');
    expect(later.fired.map((x) => x.target)).toEqual(['pipeline-extract-1']);
  });

  /** The verification after an action (`markGone`) finds the container back: the anomaly is marked gone at `at`. */
  const healedAt = async (d: ReturnType<typeof createDetectionActivities>, at: number) => {
    const first = await cycle(d, T0);
    const anomaly = first.fired[0]!;
    const r = await d.recheckAnomaly({ anomaly, snapshot: snapshot(at), thresholds, markGone: true });
    expect(r.present).toBe(false);
    return anomaly;
  };

  it('a gone mark the flush took: the monitor still has it, so the fault back after its remedy fires again', async () => {
    const d = createDetectionActivities(deps());
    const anomaly = await healedAt(d, T0 + 500);
    expect(await t.redis.hget(t.keys.monitoringGone(), anomaly.fingerprint)).toBe(String(T0 + 500));
    await t.redis.unlink(...(await t.redis.keys(`${t.prefix}*`)));

    // Dead again within ANOMALY_CLEAR_CYCLES of the remedy (it never cleared): fired again, and the mark is back.
    const back = await cycle(d, T0 + 1_000);
    expect(back.historyFrom).toBe('memory');
    expect(back.fired.map((a) => a.target)).toEqual(['pipeline-extract-1']);
    expect(back.refired).toEqual([{ fingerprint: anomaly.fingerprint, goneAt: T0 + 500 }]);
    expect(await t.redis.hget(t.keys.monitoringGone(), anomaly.fingerprint)).toBe(String(T0 + 500));
    // Spent once the new healing started: not fired a third time.
    await d.spendGoneMarks(back.refired!);
    expect((await cycle(d, T0 + 2_000)).fired).toEqual([]);
  });

  it('a mark another monitor spent is not brought back by a later flush', async () => {
    const d = createDetectionActivities(deps());
    const anomaly = await healedAt(d, T0 + 500);
    // Another monitor's cycle fired it again and spent the mark; this one's next cycle reads that.
    await t.redis.hdel(t.keys.monitoringGone(), anomaly.fingerprint);
    const next = await cycle(d, T0 + 1_000);
    expect(next.historyFrom).toBe('redis');
    expect(next.fired).toEqual([]);
    await t.redis.unlink(...(await t.redis.keys(`${t.prefix}*`)));
    const afterFlush = await cycle(d, T0 + 2_000);
    expect(afterFlush.historyFrom).toBe('memory');
    expect(afterFlush.fired).toEqual([]);
    expect(await t.redis.hexists(t.keys.monitoringGone(), anomaly.fingerprint)).toBe(0);
  });
});
