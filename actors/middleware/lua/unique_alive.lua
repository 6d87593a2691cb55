-- Shared by the scripts: is the message a lock names still queued, delayed or running? A lock
-- in the old format (a bare message id) is taken as alive; its TTL ends it.
local now = redis.call('time')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local function holder_of(current, namespace, introspect, grace)
  local holder, queue, rid, at, state = string.match(current, '^(%S+) (%S+) (%S+) (%d+) (%a)$')
  if holder == nil then return current, nil, true end
  if introspect == '1' and now_ms - tonumber(at) > tonumber(grace) then
    return holder, state, redis.call('hexists', namespace .. ':' .. queue .. '.msgs', rid) == 1
  end
  return holder, state, true
end
