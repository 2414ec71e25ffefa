-- kafka_logger.lua: what APISIX's kafka-logger plugin does with a request, reduced to
-- its Kafka side, for loggate's test tests/integration/test_agents.py. Used by
-- nginx.conf.template (init_by_lua: configure(conf); log_by_lua: log()).
--
-- Like kafka-logger: in the log phase it builds the request's log entry (the fields of
-- APISIX's default meta_format: request, response, server, client_ip, route_id,
-- start_time, latency) and hands it to a batch; a batch is sent when it holds
-- batch_max_size entries or after inactive_timeout seconds without a new entry, from a
-- timer (the log phase cannot use sockets). A batch of one entry is sent as a JSON object,
-- a larger one as a JSON array of entries, one Kafka message per batch, through
-- lua-resty-kafka's producer created with kafka-logger's settings (producer_type,
-- required_acks, request_timeout = timeout * 1000) and send(kafka_topic, key, data).
local producer = require "nginx.kafka.producer"

local _M = {}
local conf, prod
local entries = {}
local last_entry = 0
local timer_pending = false

local function encode(v)
    local t = type(v)
    if t == "string" then
        return '"' .. v:gsub('[%c"\\]', function(c)
            if c == '"' then return '\\"' end
            if c == '\\' then return '\\\\' end
            return string.format("\\u%04x", c:byte())
        end) .. '"'
    elseif t == "number" or t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        if #v > 0 or next(v) == nil and getmetatable(v) == "array" then
            local out = {}
            for i = 1, #v do out[i] = encode(v[i]) end
            return "[" .. table.concat(out, ",") .. "]"
        end
        local keys, out = {}, {}
        for k in pairs(v) do keys[#keys + 1] = tostring(k) end
        table.sort(keys)
        for _, k in ipairs(keys) do out[#out + 1] = encode(k) .. ":" .. encode(v[k]) end
        return "{" .. table.concat(out, ",") .. "}"
    end
    return "null"
end

function _M.configure(c)
    conf = c
end

local function get_producer()
    if not prod then
        prod = producer:new(conf.brokers, {
            producer_type = conf.producer_type,
            required_acks = conf.required_acks,
            request_timeout = conf.timeout * 1000,
        })
    end
    return prod
end

local function send_batch(batch)
    local data
    if #batch == 1 then
        data = encode(batch[1])
    else
        data = encode(batch)
    end
    local ok, err = get_producer():send(conf.kafka_topic, conf.key, data)
    if not ok then
        ngx.log(ngx.ERR, "kafka-logger: failed to send batch of ", #batch, ": ", err)
    end
end

local function flush(premature, force)
    timer_pending = false
    if #entries == 0 then return end
    if not force and not premature and ngx.now() - last_entry < conf.inactive_timeout then
        timer_pending = true
        ngx.timer.at(conf.inactive_timeout, flush)
        return
    end
    local batch = entries
    entries = {}
    send_batch(batch)
end

function _M.log()
    local args = ngx.req.get_uri_args()
    local entry = {
        request = {
            url = ngx.var.scheme .. "://" .. ngx.var.host .. ":" .. ngx.var.server_port .. ngx.var.request_uri,
            uri = ngx.var.uri,
            method = ngx.req.get_method(),
            headers = ngx.req.get_headers(),
            querystring = args,
            size = tonumber(ngx.var.request_length),
        },
        response = { status = ngx.status, size = tonumber(ngx.var.bytes_sent) },
        server = { hostname = "loggate-test", version = "emulated" },
        client_ip = ngx.var.remote_addr,
        route_id = "loggate-test",
        start_time = math.floor(ngx.req.start_time() * 1000),
        latency = (ngx.now() - ngx.req.start_time()) * 1000,
    }
    entries[#entries + 1] = entry
    last_entry = ngx.now()
    if #entries >= conf.batch_max_size then
        ngx.timer.at(0, flush, true)
    elseif not timer_pending then
        timer_pending = true
        ngx.timer.at(conf.inactive_timeout, flush)
    end
end

return _M
