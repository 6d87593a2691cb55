-- KEYS: lock, follow-up flag. ARGV: message id, namespace.
-- Frees the lock if this message holds it and its copy is not in its queue (a send that failed
-- after the claim): the lock names a queue and Redis id, or "*" before the copy was written.
-- Returns 1 when the lock was freed.
local current = redis.call('get', KEYS[1])
if not current then return 0 end
local holder, queue, rid = string.match(current, '^(%S+) (%S+) (%S+) ')
if holder ~= ARGV[1] then return 0 end
if rid ~= '*' and redis.call('hexists', ARGV[2] .. ':' .. queue .. '.msgs', rid) == 1 then return 0 end
redis.call('del', KEYS[1], KEYS[2])
return 1
