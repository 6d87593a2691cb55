-- Take one waiting message out of a queue (or delay queue) by its Redis id, unless a worker
-- fetched it first: 1 when it was taken, 0 when it is no longer in the list.
-- KEYS: the queue's list, its hash of messages. ARGV: the Redis id.
if redis.call("LREM", KEYS[1], 1, ARGV[1]) > 0 then
  redis.call("HDEL", KEYS[2], ARGV[1])
  return 1
end
return 0
