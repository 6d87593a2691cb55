-- KEYS: lock, follow-up flag. ARGV: message id. Returns 1 when a follow-up was asked for.
local current = redis.call('get', KEYS[1])
if current and string.match(current, '^(%S+)') == ARGV[1] then
  redis.call('del', KEYS[1])
  local again = redis.call('get', KEYS[2])
  redis.call('del', KEYS[2])
  if again then return 1 end
end
return 0
