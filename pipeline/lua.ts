/**
 * Redis Lua scripts of the reference pipeline. Each runs atomically in Redis, which is the point: no other client
 * can observe the state between its steps. Registered with `defineScript` (core/redis-script.ts), like selfheal's own.
 */
/** Deletes KEYS[1] only if its value is still ARGV[1] (our lease). Returns 1 when deleted. */
export const COMPARE_AND_DELETE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/** Extends KEYS[1] to ARGV[2] ms only if its value is still ARGV[1]. Returns 1 when extended, 0 when lost. */
export const COMPARE_AND_PEXPIRE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

/**
 * The Redis half of finishing a document, after the Postgres commit: optionally LPUSH the id to the next stage's
 * queue (KEYS[3]), LREM it from our processing list (KEYS[1]), then release our lease (KEYS[2]) if it is still ours.
 * One script, so a worker of the next stage can never pop the id while our lease still exists (it would take the
 * lease for another worker's and drop the entry).
 * ARGV[1] = document id, ARGV[2] = lease value.
 */
export const FINISH_DOCUMENT = `
if KEYS[3] then
  redis.call('LPUSH', KEYS[3], ARGV[1])
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1`;

/**
 * Gives an untouched entry back: LREM it from the processing list (KEYS[1]) and RPUSH it to the queue (KEYS[2]),
 * the end consumers pop from, so it is the next one taken. Only if it was in the list (no duplicate created).
 * ARGV[1] = document id. Returns 1 when given back.
 */
export const GIVE_BACK = `
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0`;
