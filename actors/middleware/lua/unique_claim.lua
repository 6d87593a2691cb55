-- KEYS: lock, follow-up flag. ARGV: message id, queue, Redis id, state (q|r), ttl, namespace,
-- 1 if the lock's queue can be looked at (the broker is this Redis), grace (ms), the process
-- running it (state r; else empty).
-- Returns nil when the caller holds the lock now, else the holder's lock value.
local current = redis.call('get', KEYS[1])
if current then
  local holder, state, alive = holder_of(current, ARGV[6], ARGV[7], ARGV[8])
  if holder ~= ARGV[1] and alive then
    if state == 'r' then redis.call('set', KEYS[2], '1', 'ex', ARGV[5]) end
    return current
  end
end
local owner = ''
if ARGV[9] and ARGV[9] ~= '' then owner = ' ' .. ARGV[9] end
redis.call('set', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. now_ms .. ' ' .. ARGV[4] .. owner, 'ex', ARGV[5])
if ARGV[4] == 'r' then redis.call('del', KEYS[2]) end
return false
