-- KEYS: the lock. ARGV: the owner's token.
-- Deletes the lock if it is the owner's; 0 when it is not (or no longer) the owner's.
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
