/**
 * The one way the project runs a Redis Lua script: registered on a client under a name (EVALSHA with a transparent
 * EVAL fallback, by ioredis) and called through a typed runner. The client is passed in and typed by the one method
 * used, so this module stays pure: defining a script sends nothing; the runner's calls are the client's I/O.
 */

/** The part of an ioredis client that registers scripts. */
export interface ScriptHost {
  defineCommand(name: string, definition: { lua: string }): void;
}

/** Runs a registered script; the number of keys is passed per call, so one script can take optional keys. */
export type ScriptRunner = (keys: string[], args: (string | number)[]) => Promise<unknown>;

/** Registers `lua` on `redis` as `name` (again on each call: ioredis keeps the last definition) and returns its runner. */
export function defineScript(redis: ScriptHost, name: string, lua: string): ScriptRunner {
  redis.defineCommand(name, { lua });
  const commands = redis as unknown as Record<string, ((...args: (string | number)[]) => Promise<unknown>) | undefined>;
  return (keys, args) => {
    const command = commands[name];
    if (!command) throw new Error(`redis script ${name} is not defined`);
    return command.call(redis, keys.length, ...keys, ...args);
  };
}
