-- KEYS: the lock. ARGV: the owner's token, ttl (ms).
-- Takes the lock when it is free or already the owner's (and sets its ttl); 1 when taken.
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
