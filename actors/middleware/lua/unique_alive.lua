-- Shared by the scripts: is the message a lock names still queued, delayed or running? A lock
-- in the old format (a bare message id) is taken as alive; its TTL ends it. Where the queues
-- cannot be looked at (RabbitMQ), a running holder is alive while the worker process running
-- it is: `fleet:alive:<process id>`, refreshed by its presence heartbeat (core/identity.py).
local now = redis.call('time')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local function holder_of(current, namespace, introspect, grace)
  local holder, queue, rid, at, state, owner = string.match(current, '^(%S+) (%S+) (%S+) (%d+) (%a) ?(%S*)$')
  if holder == nil then return current, nil, true end
  local settled = now_ms - tonumber(at) > tonumber(grace)
  if introspect == '1' and settled then
    return holder, state, redis.call('hexists', namespace .. ':' .. queue .. '.msgs', rid) == 1
  end
  if introspect ~= '1' and settled and state == 'r' and owner ~= '' then
    return holder, state, redis.call('exists', 'fleet:alive:' .. owner) == 1
  end
  return holder, state, true
end
