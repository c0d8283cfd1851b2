import { describe, expect, it } from 'vitest';
import { WORKER_NODE_OPTIONS, workerEnv } from '../../starter/up';

describe('workerEnv: the memory settings of the worker processes `selfheal up` starts', () => {
  it('caps the heap and the malloc arenas when the operator set nothing', () => {
    const env = workerEnv({ PATH: '/bin' });
    expect(env).toEqual({ PATH: '/bin', NODE_OPTIONS: WORKER_NODE_OPTIONS, MALLOC_ARENA_MAX: '2' });
    expect(WORKER_NODE_OPTIONS).toBe('--max-old-space-size=96 --max-semi-space-size=4');
  });

  it("puts the operator's NODE_OPTIONS after its own, so that theirs win, and keeps their MALLOC_ARENA_MAX", () => {
    const env = workerEnv({ NODE_OPTIONS: ' --max-old-space-size=512 ', MALLOC_ARENA_MAX: '8' });
    expect(env.NODE_OPTIONS).toBe(`${WORKER_NODE_OPTIONS} --max-old-space-size=512`);
    expect(env.MALLOC_ARENA_MAX).toBe('8');
  });

  it('leaves the environment it was given unchanged', () => {
    const given = { NODE_OPTIONS: '--enable-source-maps' };
    workerEnv(given);
    expect(given).toEqual({ NODE_OPTIONS: '--enable-source-maps' });
  });
});
