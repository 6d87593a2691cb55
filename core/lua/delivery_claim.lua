-- Takes a message's delivery for a new owner. KEYS[1] the owners hash, KEYS[2] (Redis broker
-- only) the ack set of the worker taking it; ARGV[1] the delivery key, ARGV[2] the new owner.
-- Returns {0} when the copy is stale already (the message is no longer in the worker's ack set:
-- it was redelivered while the copy waited in the worker), else {1, previous owner or false}.
if KEYS[2] and redis.call("sismember", KEYS[2], ARGV[1]) == 0 then
    return {0}
end
local previous = redis.call("hget", KEYS[1], ARGV[1])
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
return {1, previous}
