-- Is a delivery still its owner's? KEYS[1] the owners hash, KEYS[2] (Redis broker only) the
-- owner's ack set; ARGV[1] the delivery key, ARGV[2] the owner. Returns false while it is;
-- otherwise the owner it moved to, or "" when it was redelivered and no one took it yet.
-- No owner recorded at all (Redis lost it) counts as still the owner's.
if KEYS[2] and redis.call("sismember", KEYS[2], ARGV[1]) == 0 then
    local taken_by = redis.call("hget", KEYS[1], ARGV[1])
    if not taken_by or taken_by == ARGV[2] then
        return ""
    end
    return taken_by
end
local owner = redis.call("hget", KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] then
    return owner
end
return false
