-- KEYS: the lock. ARGV: the owner's token, ttl (ms).
-- Gives the owner's lock a new ttl; 0 when it is not (or no longer) the owner's.
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
