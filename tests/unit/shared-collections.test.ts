/**
 * collectMetrics' sharing of collections between concurrent calls (activities/metrics.ts): each call gets a
 * collection that started after it arrived, calls that arrive during one share the next, a failure fails only the
 * calls that shared it.
 */
import { describe, expect, it } from 'vitest';
import { sharedCollections } from '../../activities/metrics';

/** A collection the test ends by hand; each records the order it started in. */
function manualCollections() {
  const started: { n: number; resolve: (v: number) => void; reject: (e: Error) => void }[] = [];
  const collect = () =>
    new Promise<number>((resolve, reject) => {
      started.push({ n: started.length + 1, resolve, reject });
    });
  return { started, collect };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('sharedCollections', () => {
  it('one call alone: one collection', async () => {
    const m = manualCollections();
    const get = sharedCollections(m.collect);
    const a = get();
    expect(m.started).toHaveLength(1);
    m.started[0]!.resolve(1);
    expect(await a).toBe(1);
  });

  it('calls arriving during a collection share the next one, which starts after it', async () => {
    const m = manualCollections();
    const get = sharedCollections(m.collect);
    const first = get();
    const during = [get(), get(), get()];
    await tick();
    // Only the first collection runs: the later calls wait for one that starts after they arrived.
    expect(m.started).toHaveLength(1);
    m.started[0]!.resolve(1);
    expect(await first).toBe(1);
    await tick();
    expect(m.started).toHaveLength(2);
    m.started[1]!.resolve(2);
    expect(await Promise.all(during)).toEqual([2, 2, 2]);
    // Nothing runs now: the next call starts its own.
    const later = get();
    expect(m.started).toHaveLength(3);
    m.started[2]!.resolve(3);
    expect(await later).toBe(3);
  });

  it('never answers a call with a collection that started before it', async () => {
    const m = manualCollections();
    const get = sharedCollections(m.collect);
    // A collection's value is the order it started in; a call that arrived after N had started must get one above N.
    const calls: { arrivedAfter: number; result: Promise<number> }[] = [];
    for (let round = 0; round < 5; round++) {
      calls.push({ arrivedAfter: m.started.length, result: get() });
      calls.push({ arrivedAfter: m.started.length, result: get() });
      await tick();
      m.started.at(-1)!.resolve(m.started.at(-1)!.n);
      await tick();
    }
    // Whatever still runs or waits: ended until no collection starts any more.
    for (;;) {
      const last = m.started.at(-1)!;
      last.resolve(last.n);
      await tick();
      if (m.started.at(-1) === last) break;
    }
    for (const c of calls) expect(await c.result).toBeGreaterThan(c.arrivedAfter);
    expect(m.started.length).toBeLessThan(calls.length);
  });

  it('a failed collection fails the calls that shared it, and the next call collects again', async () => {
    const m = manualCollections();
    const get = sharedCollections(m.collect);
    const first = get();
    const shared = [get(), get()];
    m.started[0]!.reject(new Error('redis down'));
    await expect(first).rejects.toThrow('redis down');
    await tick();
    m.started[1]!.reject(new Error('still down'));
    for (const s of shared) await expect(s).rejects.toThrow('still down');
    const again = get();
    expect(m.started).toHaveLength(3);
    m.started[2]!.resolve(7);
    expect(await again).toBe(7);
  });
});
