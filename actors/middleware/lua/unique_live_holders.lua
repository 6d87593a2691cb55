-- KEYS: locks. ARGV: namespace, 1 if the queues can be looked at, grace (ms).
-- Returns, a lock, the message id holding it while that message is alive, else nil.
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = false
  local current = redis.call('get', key)
  if current then
    local holder, state, alive = holder_of(current, ARGV[1], ARGV[2], ARGV[3])
    if alive then found[i] = holder end
  end
end
return found
