-- Forgets a settled delivery, only if its owner is still the one given (a redelivered copy's
-- owner stays). KEYS[1] the owners hash; ARGV[1] the delivery key, ARGV[2] the owner.
if redis.call("hget", KEYS[1], ARGV[1]) == ARGV[2] then
    return redis.call("hdel", KEYS[1], ARGV[1])
end
return 0
