/**
 * The containers stopped on purpose, as the actions worker's Docker event stream saw them. They are kept in Redis
 * (shared by every actions worker; the key `dockerStops`) and in the memory of the process that follows the stream.
 *
 * Memory stands in for what Redis lost or cannot give: a flush of the pipeline's Redis, a Redis restart without
 * persistence, Redis down. Without it, a container an operator stopped whose process ignored SIGTERM (exit code 137)
 * reads as "died without a stop" after a flush, and is restarted. What memory had and Redis lost is written back when
 * this process next reads the records (the cycle's inspection, the restart action's check). A record is forgotten
 * when its container starts again or is removed. Memory holds only what this process's stream saw: an actions worker
 * started after the stop, or restarted since, has Redis's record alone.
 */
import type { Redis } from 'ioredis';
import type { StoppedOnPurpose } from '../core/docker-events';
import type { Keys } from '../core/keys';

export class StopRecords {
  private readonly memory = new Map<string, StoppedOnPurpose>();

  constructor(
    private readonly redis: Pick<Redis, 'hset' | 'hdel' | 'hgetall'>,
    private readonly keys: Keys,
  ) {}

  /** `name` was stopped on purpose. Remembered even when Redis refuses the write (the error is thrown after). */
  async stopped(name: string, stop: StoppedOnPurpose): Promise<void> {
    this.memory.set(name, stop);
    await this.redis.hset(this.keys.dockerStops(), name, JSON.stringify(stop));
  }

  /** `name` (re)started or was removed: whatever stop was recorded no longer holds. */
  async forget(name: string): Promise<void> {
    this.memory.delete(name);
    await this.redis.hdel(this.keys.dockerStops(), name);
  }

  /**
   * The stops recorded, by container name: Redis's, with what this process remembers where Redis has none or an
   * older one. Never throws: with Redis down, memory alone (an empty map without a stream, and the exit code
   * decides). A stop older than the container's last start does not hold (activities/docker.ts `stopStillHolds`),
   * so a stale one written back cannot keep a container that started since from being watched.
   */
  async read(): Promise<Map<string, StoppedOnPurpose>> {
    const hash = await this.redis.hgetall(this.keys.dockerStops()).catch(() => undefined);
    const out = new Map<string, StoppedOnPurpose>();
    for (const [name, raw] of Object.entries(hash ?? {})) {
      const stop = parseStop(raw);
      if (stop) out.set(name, stop);
    }
    const lost: string[] = [];
    for (const [name, stop] of this.memory) {
      const stored = out.get(name);
      if (stored && stored.at >= stop.at) continue;
      out.set(name, stop);
      lost.push(name, JSON.stringify(stop));
    }
    if (hash && lost.length > 0) await this.redis.hset(this.keys.dockerStops(), ...lost).catch(() => undefined);
    return out;
  }

  /** The stop recorded for `name`, as `read` sees it (the restart action checks it again right before acting). */
  async get(name: string): Promise<StoppedOnPurpose | undefined> {
    return (await this.read()).get(name);
  }
}

/** A stored stop; undefined for a value not written by us. */
function parseStop(raw: string): StoppedOnPurpose | undefined {
  try {
    const v = JSON.parse(raw) as Partial<StoppedOnPurpose>;
    return typeof v.at === 'number' && typeof v.how === 'string' ? { at: v.at, how: v.how } : undefined;
  } catch {
    return undefined;
  }
}
