/**
 * The stops on purpose as the actions worker records them (activities/docker-stops.ts), against a real Redis: its
 * memory stands in for the records a flush of the pipeline's Redis took, or that Redis down cannot give, and writes
 * them back; Redis's newer record (another actions worker saw a later stop) wins over an older memory.
 * The end-to-end case, with the real actions worker and Docker engine, is in docker-events.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StopRecords } from '../../activities/docker-stops';
import { createFailFastRedis } from '../../workers/clients';
import { createTestEnv, heldPort, type TestEnv } from '../helpers/env';

let t: TestEnv;
beforeEach(async () => {
  t = await createTestEnv();
});
afterEach(async () => {
  await t.cleanup();
});

const stop = (at: number) => ({ at, how: 'docker stop' });

describe('stops on purpose', () => {
  it('a flush of Redis: memory stands in and writes the record back; a start forgets it in both', async () => {
    const records = new StopRecords(t.redis, t.keys);
    await records.stopped('web-1', stop(1_000));
    expect(await t.redis.hget(t.keys.dockerStops(), 'web-1')).toBe(JSON.stringify(stop(1_000)));

    await t.redis.unlink(...(await t.redis.keys(`${t.prefix}*`)));
    expect(await records.read()).toEqual(new Map([['web-1', stop(1_000)]]));
    expect(await t.redis.hget(t.keys.dockerStops(), 'web-1')).toBe(JSON.stringify(stop(1_000)));

    await records.forget('web-1');
    expect(await records.read()).toEqual(new Map());
    expect(await t.redis.exists(t.keys.dockerStops())).toBe(0);
  });

  it("another worker's record in Redis: kept, and a newer one there wins over this process's older memory", async () => {
    const records = new StopRecords(t.redis, t.keys);
    await records.stopped('web-1', stop(1_000));
    await t.redis.hset(t.keys.dockerStops(), 'web-1', JSON.stringify(stop(2_000)), 'web-2', JSON.stringify(stop(500)));
    // A value not written by selfheal is ignored.
    await t.redis.hset(t.keys.dockerStops(), 'web-3', 'not json');
    expect(await records.read()).toEqual(
      new Map([
        ['web-1', stop(2_000)],
        ['web-2', stop(500)],
      ]),
    );
    expect(await t.redis.hget(t.keys.dockerStops(), 'web-1')).toBe(JSON.stringify(stop(2_000)));
  });

  it('Redis down: the stop is remembered though its write failed, and read from memory alone', async () => {
    const down = createFailFastRedis(`redis://127.0.0.1:${await heldPort()}`);
    try {
      const records = new StopRecords(down, t.keys);
      await expect(records.stopped('web-1', stop(1_000))).rejects.toThrow();
      expect(await records.read()).toEqual(new Map([['web-1', stop(1_000)]]));
    } finally {
      down.disconnect();
    }
  });
});
