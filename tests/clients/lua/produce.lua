-- produce.lua: the nginx content handler behind /produce in nginx.conf.template, used by
-- loggate's integration test tests/integration/test_lua_resty_kafka.py.
--
-- Sends `count` messages "<prefix>-<i>" (i = 0..count-1) one by one through
-- lua-resty-kafka 0.07's producer (producer_type "sync", so every send returns its
-- offset or its error) to the broker in $kafka_host:$kafka_port (loggate's PLAINTEXT
-- listener: this client has no TLS and no SASL). Query arguments:
--   topic (default app), count (1), prefix (lua), key (none), acks (1),
--   api_version: Produce version 0, 1 (both magic 0) or 2 (magic 1); default 0.
-- Replies 200 {"ok":true,"results":[...]} or 500 {"ok":false,"error":...,"sent":N,...}.
-- Note: a sync send returns the partition's base offset + the number of messages in the
-- request (lua-resty-kafka's sendbuffer:offset), i.e. base offset + 1 here.
local producer = require "nginx.kafka.producer"

local args = ngx.req.get_uri_args()
local topic = args.topic or "app"
local count = tonumber(args.count or "1")
local prefix = args.prefix or "lua"
local key = args.key
local acks = tonumber(args.acks or "1")
local api_version = tonumber(args.api_version or "0")

local function json_string(s)
    s = tostring(s)
    s = s:gsub('[%c"\\]', function(c)
        if c == '"' then return '\\"' end
        if c == '\\' then return '\\\\' end
        return string.format("\\u%04x", c:byte())
    end)
    return '"' .. s .. '"'
end

-- The default partitioner (crc32 of the key, else the correlation id, modulo the
-- partition count), wrapped to remember which partition each message went to.
local last_partition
local function partitioner(k, num, correlation_id)
    local id = k and ngx.crc32_short(k) or correlation_id
    last_partition = id % num
    return last_partition
end

local broker_list = { { host = ngx.var.kafka_host, port = tonumber(ngx.var.kafka_port) } }
local p = producer:new(broker_list, {
    producer_type = "sync",
    required_acks = acks,
    api_version = api_version,
    partitioner = partitioner,
    request_timeout = 3000,
    socket_timeout = 3000,
    max_retry = 2,
    retry_backoff = 100,
})

local results = {}
local failure
for i = 0, count - 1 do
    local value = prefix .. "-" .. i
    -- lua-resty-kafka raises (rather than returning an error) on some broker answers,
    -- e.g. error codes it does not know: report those as errors too.
    local ok, offset, err = pcall(p.send, p, topic, key, value)
    if not ok then
        failure = "raised: " .. tostring(offset)
        break
    end
    if not offset then
        failure = tostring(err)
        break
    end
    -- offset is an int64 cdata; tostring gives "123LL"
    local off = tostring(offset):gsub("[LU]+$", "")
    results[#results + 1] = string.format('{"value":%s,"partition":%d,"offset":%s}',
        json_string(value), last_partition or -1, off)
end

local body = table.concat(results, ",")
if failure then
    ngx.status = 500
    ngx.say(string.format('{"ok":false,"error":%s,"sent":%d,"results":[%s]}', json_string(failure), #results, body))
else
    ngx.say(string.format('{"ok":true,"results":[%s]}', body))
end
