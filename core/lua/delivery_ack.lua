-- Acks a message only while its delivery is still the acking copy's, and forgets the delivery.
-- KEYS[1] the worker's ack set of the queue, KEYS[2] the queue's messages hash, KEYS[3] the owners
-- hash; ARGV[1] the message's Redis id, ARGV[2] the delivery key, ARGV[3] the owner.
-- Returns 1 when acked; 0 when the copy is stale (its message was redelivered: the stored message
-- is the redelivered copy's and stays), after taking it out of the ack set.
if redis.call("srem", KEYS[1], ARGV[1]) == 0 then
    return 0
end
local owner = redis.call("hget", KEYS[3], ARGV[2])
if owner and owner ~= ARGV[3] then
    return 0
end
redis.call("hdel", KEYS[2], ARGV[1])
if owner then
    redis.call("hdel", KEYS[3], ARGV[2])
end
return 1
