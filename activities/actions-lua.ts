/**
 * Redis scripts of the remediation actions. Each runs atomically in Redis: no pipeline worker can observe the state
 * between its steps, which is what makes a compare-and-delete safe and a requeue invisible until it is complete.
 * Every key a script touches is passed in KEYS, except the processing lists of LISTS_TO_SEARCH (see there).
 */

/**
 * Lua, shared by the collector and the requeue: `lists` becomes every list to search, the given KEYS plus every key
 * matching the processing-list pattern, found by SCAN inside the script. Processing lists come and go (Redis drops
 * an empty list, a worker's BLMOVE creates it again): found outside the script, a list created in between would be
 * missed and its document reported lost. Inside, nothing moves while the script runs.
 */
export const LISTS_TO_SEARCH = `
local function lists_to_search(first_key, pattern)
  local lists = {}
  for k = first_key, #KEYS do lists[#lists + 1] = KEYS[k] end
  local cursor = '0'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = r[1]
    for _, key in ipairs(r[2]) do lists[#lists + 1] = key end
  until cursor == '0'
  return lists
end

-- Removes from pending (a set of ids, with its size) every id found in the lists, walking each from its tail (where
-- workers take, and where the oldest entries are) in chunks, and stopping as soon as every id was found.
local function find_in_lists(lists, pending, left)
  local found = 0
  for _, list in ipairs(lists) do
    if left == 0 then break end
    local stop = redis.call('LLEN', list) - 1
    while stop >= 0 and left > 0 do
      local start = stop - 999
      if start < 0 then start = 0 end
      for _, v in ipairs(redis.call('LRANGE', list, start, stop)) do
        if pending[v] then
          pending[v] = nil
          left = left - 1
          found = found + 1
        end
      end
      stop = start - 1
    end
  end
  return found
end

-- The ids ARGV[first_arg..] in none of the lists, in ARGV order without repeats, and how many were found.
local function not_in_lists(lists, first_arg)
  local pending = {}
  local left = 0
  for i = first_arg, #ARGV do
    if not pending[ARGV[i]] then
      pending[ARGV[i]] = true
      left = left + 1
    end
  end
  local found = find_in_lists(lists, pending, left)
  local absent = {}
  for i = first_arg, #ARGV do
    if pending[ARGV[i]] then
      absent[#absent + 1] = ARGV[i]
      pending[ARGV[i]] = nil
    end
  end
  return absent, found
end
`;

/**
 * The Redis half of requeueing one chunk of documents of one (stage, owner) group, after the Postgres commit.
 *
 * KEYS[1] = `queue:<stage>`, KEYS[2] = `processing:<stage>:<owner>`, KEYS[3] = the chunk's done-marker,
 * KEYS[4..] = `lock:document:<id>`, aligned with the ids. ARGV[1] = `<owner>:` (lease value prefix of the owner;
 * empty when the rows had no owner: leases and the processing list are then left alone), ARGV[2] = how many of the
 * ids (the first ones) go to the queue; the others (dead-lettered) are only cleaned up. ARGV[3] = marker TTL in
 * seconds. ARGV[4..] = document ids.
 *
 * The marker is set in the same atomic step as the push, so the chunk is applied exactly once however often a
 * retry replays it. Inside the script the owner's leases go first, then the processing-list entries, then the push:
 * a worker can never pop a requeued id while the old lease exists (it would take the document for another worker's
 * and drop it). Removing many ids from a long processing list with one LREM each would cost O(ids x length); past
 * a bound the list is rewritten once instead, keeping the order of the survivors.
 *
 * Returns { leases deleted, processing-list entries removed, ids pushed }, or { -1, 0, 0 } when the chunk was
 * applied before.
 */
export const REQUEUE_CHUNK = `
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', tonumber(ARGV[3])) then
  return { -1, 0, 0 }
end
local owner = ARGV[1]
local npush = tonumber(ARGV[2])
local first = 4
local n = #ARGV - first + 1
local leases = 0
local removed = 0
if owner ~= '' then
  local olen = string.len(owner)
  for i = 1, n do
    local v = redis.call('GET', KEYS[i + 3])
    if v and string.sub(v, 1, olen) == owner then
      redis.call('DEL', KEYS[i + 3])
      leases = leases + 1
    end
  end
  local len = redis.call('LLEN', KEYS[2])
  if len > 0 then
    if n * len <= 200000 then
      for i = 1, n do
        removed = removed + redis.call('LREM', KEYS[2], 0, ARGV[first + i - 1])
      end
    else
      local drop = {}
      for i = 1, n do drop[ARGV[first + i - 1]] = true end
      local items = redis.call('LRANGE', KEYS[2], 0, -1)
      local keep = {}
      for _, v in ipairs(items) do
        if drop[v] then removed = removed + 1 else keep[#keep + 1] = v end
      end
      if removed > 0 then
        redis.call('DEL', KEYS[2])
        for i = 1, #keep, 1000 do
          redis.call('RPUSH', KEYS[2], unpack(keep, i, math.min(i + 999, #keep)))
        end
      end
    end
  end
end
for i = 1, npush, 1000 do
  local last = math.min(i + 999, npush)
  local batch = {}
  for j = i, last do batch[#batch + 1] = ARGV[first + j - 1] end
  redis.call('LPUSH', KEYS[1], unpack(batch))
end
return { leases, removed, npush }`;

/**
 * Clears stale leases, each only when its owner is proven dead at that instant.
 *
 * KEYS = pairs (`lock:document:<id>`, `worker:<owner>:heartbeat`); ARGV[i] = the exact observed value
 * `<owner>:<token>` of the i-th lock. Per lock: -1 when the owner's heartbeat exists (alive: left alone), 1 when the
 * lock still held exactly the observed value and was deleted, 0 when it is gone or holds another value (re-acquired:
 * left alone). The heartbeat check and the compare-and-delete are one atomic step, so a worker that comes back in
 * between cannot lose a lease it just took.
 */
export const CLEAR_STALE_LOCKS = `
local out = {}
for i = 1, #ARGV do
  local lock = KEYS[2 * i - 1]
  local heartbeat = KEYS[2 * i]
  if redis.call('EXISTS', heartbeat) == 1 then
    out[i] = -1
  elseif redis.call('GET', lock) == ARGV[i] then
    redis.call('DEL', lock)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out`;

/**
 * Removes up to ARGV[2] occurrences of the id ARGV[1] from the list KEYS[1], from the head (the newest, so for a
 * duplicate the entry that has waited longest stays). With ARGV[3] = '1' one occurrence is always kept (a duplicate
 * of a document that is still queued). The count present is read in the same atomic step, so an entry a worker
 * popped meanwhile is never made up for by removing another. Returns the number removed.
 */
export const REMOVE_ENTRIES = `
local present = #redis.call('LPOS', KEYS[1], ARGV[1], 'COUNT', 0)
local n = math.min(tonumber(ARGV[2]), present)
if ARGV[3] == '1' then n = math.min(n, present - 1) end
if n <= 0 then return 0 end
return redis.call('LREM', KEYS[1], n, ARGV[1])`;

/**
 * The Redis half of requeueing lost documents (queued in Postgres, in no list), exactly once per chunk: each id is
 * pushed only if it is in none of the lists, all checked in the same atomic step as the push, so an id that came
 * back meanwhile (a worker's own recovery, an operator) is never pushed twice.
 *
 * KEYS[1] = `queue:<stage>`, KEYS[2] = the chunk's done-marker, KEYS[3..] = the other stages' queues. ARGV[1] =
 * marker TTL in seconds, ARGV[2] = the processing-list pattern (those lists are found by SCAN inside the script),
 * ARGV[3..] = document ids.
 *
 * Returns { ids pushed, ids already in a list }, or { -1, 0 } when the chunk was applied before.
 */
export const REQUEUE_LOST_CHUNK = `${LISTS_TO_SEARCH}
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return { -1, 0 }
end
local lists = lists_to_search(3, ARGV[2])
table.insert(lists, 1, KEYS[1])
local push, present = not_in_lists(lists, 3)
for i = 1, #push, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(push, i, math.min(i + 999, #push)))
end
return { #push, present }`;
