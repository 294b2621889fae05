-- REST guard of the ordermesh edge. Runs after jwt_authn and before grpc_json_transcoder.
--
-- 1. Trailing slashes: the original API used `/api/v1/orders/`; http rule templates cannot
--    express a trailing slash, so a path that matches no REST rule but does once its trailing
--    slash is dropped is rewritten (query string kept) before the transcoder sees it.
-- 2. Unknown JSON fields: the transcoder silently drops them. For REST rules with a body, the
--    body is parsed here (Envoy's Lua has no JSON library, hence the parser below) and every
--    object key is checked against the target message, recursively; an unknown key or
--    malformed JSON is answered with 400 and a google.rpc.Status JSON body (code 3).
-- 3. response_body: Envoy's transcoder cannot map a response field (other than HttpBody) to
--    the whole HTTP response, so Envoy loads a descriptor with response_body cleared
--    (tools/gen_rest_fields.py) and envoy_on_response unwraps that field from the JSON reply,
--    e.g. {"order":{...}} -> {...}, as grpc-gateway does. Error bodies are left alone.
--
-- REST_FIELDS is the table gen/envoy/rest_fields.lua returns (tools/gen_rest_fields.py);
-- devstack/edge.py prepends it to this file when it renders the Envoy config.

local byte, sub, find, char, format = string.byte, string.sub, string.find, string.char, string.format
local concat, floor = table.concat, math.floor

local RULES = REST_FIELDS.rules
local MESSAGES = REST_FIELDS.messages
local MAX_DEPTH = 100
local METADATA = "ordermesh.rest_guard"

---------------------------------------------------------------------------------------------
-- JSON (RFC 8259). Containers become tables; scalars become the SCALAR sentinel, since only
-- the shape matters here. Errors are raised as {pos = byte offset, msg = reason}.
---------------------------------------------------------------------------------------------

local SCALAR = {}
local parse_value

local function json_error(pos, msg)
  error({ pos = pos, msg = msg }, 0)
end

local function skip_ws(s, pos)
  local _, e = find(s, "^[ \t\r\n]*", pos)
  return e + 1
end

local ESCAPES = {
  [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
  [116] = "\t",
}

local function utf8_char(cp)
  if cp < 0x80 then
    return char(cp)
  elseif cp < 0x800 then
    return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
    0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- pos is at the opening quote; returns the decoded string and the position after it.
local function parse_string(s, pos)
  local parts, n, i = nil, 0, pos + 1
  while true do
    local j = find(s, '["\\%z\1-\31]', i)
    if j == nil then
      json_error(pos, "unterminated string")
    end
    local c = byte(s, j)
    if c == 34 then
      if parts == nil then
        return sub(s, i, j - 1), j + 1
      end
      n = n + 1
      parts[n] = sub(s, i, j - 1)
      return concat(parts), j + 1
    elseif c == 92 then
      parts = parts or {}
      n = n + 1
      parts[n] = sub(s, i, j - 1)
      local e = byte(s, j + 1)
      if e == 117 then
        local hex = sub(s, j + 2, j + 5)
        if not find(hex, "^%x%x%x%x$") then
          json_error(j, "invalid \\u escape")
        end
        local cp, nxt = tonumber(hex, 16), j + 6
        if cp >= 0xD800 and cp <= 0xDBFF then
          if find(s, "^\\u[dD][c-fC-F]%x%x", nxt) then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(sub(s, nxt + 2, nxt + 5), 16) - 0xDC00)
            nxt = nxt + 6
          else
            cp = 0xFFFD
          end
        elseif cp >= 0xDC00 and cp <= 0xDFFF then
          cp = 0xFFFD
        end
        n = n + 1
        parts[n] = utf8_char(cp)
        i = nxt
      else
        local r = e and ESCAPES[e]
        if r == nil then
          json_error(j, "invalid escape in string")
        end
        n = n + 1
        parts[n] = r
        i = j + 2
      end
    else
      json_error(j, "control character in string")
    end
  end
end

local function parse_number(s, pos)
  local i = pos
  if byte(s, i) == 45 then
    i = i + 1
  end
  local c = byte(s, i)
  if c == 48 then
    i = i + 1
  elseif c ~= nil and c >= 49 and c <= 57 then
    local _, e = find(s, "^%d+", i)
    i = e + 1
  else
    json_error(pos, "invalid number")
  end
  if byte(s, i) == 46 then
    local _, e = find(s, "^%d+", i + 1)
    if e == nil then
      json_error(i, "invalid number")
    end
    i = e + 1
  end
  c = byte(s, i)
  if c == 101 or c == 69 then
    local _, e = find(s, "^[-+]?%d+", i + 1)
    if e == nil then
      json_error(i, "invalid number")
    end
    i = e + 1
  end
  return SCALAR, i
end

local function parse_literal(s, pos, word)
  if sub(s, pos, pos + #word - 1) ~= word then
    json_error(pos, "unexpected character")
  end
  return SCALAR, pos + #word
end

-- Objects: {object = true, keys = {...}, values = {...}, starts = {...}, ends = {...}} (in
-- document order, duplicates kept; starts/ends are the byte span of each value);
-- arrays: {array = true, n = count, [1..n] = value}.
parse_value = function(s, pos, depth)
  pos = skip_ws(s, pos)
  local c = byte(s, pos)
  if c == 123 then
    if depth >= MAX_DEPTH then
      json_error(pos, "nesting too deep")
    end
    local obj, n = { object = true, keys = {}, values = {}, starts = {}, ends = {} }, 0
    pos = skip_ws(s, pos + 1)
    if byte(s, pos) == 125 then
      return obj, pos + 1
    end
    while true do
      if byte(s, pos) ~= 34 then
        json_error(pos, "expected a string key")
      end
      local key, value
      key, pos = parse_string(s, pos)
      pos = skip_ws(s, pos)
      if byte(s, pos) ~= 58 then
        json_error(pos, "expected ':'")
      end
      local start = skip_ws(s, pos + 1)
      value, pos = parse_value(s, start, depth + 1)
      n = n + 1
      obj.keys[n], obj.values[n], obj.starts[n], obj.ends[n] = key, value, start, pos - 1
      pos = skip_ws(s, pos)
      c = byte(s, pos)
      if c == 44 then
        pos = skip_ws(s, pos + 1)
      elseif c == 125 then
        return obj, pos + 1
      else
        json_error(pos, "expected ',' or '}'")
      end
    end
  elseif c == 91 then
    if depth >= MAX_DEPTH then
      json_error(pos, "nesting too deep")
    end
    local arr, n = { array = true, n = 0 }, 0
    pos = skip_ws(s, pos + 1)
    if byte(s, pos) == 93 then
      return arr, pos + 1
    end
    while true do
      local value
      value, pos = parse_value(s, pos, depth + 1)
      n = n + 1
      arr[n] = value
      arr.n = n
      pos = skip_ws(s, pos)
      c = byte(s, pos)
      if c == 44 then
        pos = pos + 1
      elseif c == 93 then
        return arr, pos + 1
      else
        json_error(pos, "expected ',' or ']'")
      end
    end
  elseif c == 34 then
    local _, nxt = parse_string(s, pos)
    return SCALAR, nxt
  elseif c == 116 then
    return parse_literal(s, pos, "true")
  elseif c == 102 then
    return parse_literal(s, pos, "false")
  elseif c == 110 then
    return parse_literal(s, pos, "null")
  elseif c == 45 or (c ~= nil and c >= 48 and c <= 57) then
    return parse_number(s, pos)
  elseif c == nil then
    json_error(pos, "unexpected end of input")
  end
  json_error(pos, "unexpected character")
end

local function parse_json(s)
  local value, pos = parse_value(s, 1, 0)
  pos = skip_ws(s, pos)
  if pos <= #s then
    json_error(pos, "unexpected data after the JSON value")
  end
  return value
end

-- A JSON string literal for s; bytes that are not valid UTF-8 become U+FFFD.
local function json_quote(s)
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local c = byte(s, i)
    local size = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF)
      and 3 or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local ok = size > 0
    for k = 1, size - 1 do
      local cc = byte(s, i + k)
      if cc == nil or cc < 0x80 or cc > 0xBF then
        ok = false
      end
    end
    n = n + 1
    if not ok then
      out[n] = "\\ufffd"
      i = i + 1
    elseif c == 34 then
      out[n] = '\\"'
      i = i + 1
    elseif c == 92 then
      out[n] = "\\\\"
      i = i + 1
    elseif c < 0x20 or c == 0x7F then
      out[n] = format("\\u%04x", c)
      i = i + 1
    else
      out[n] = sub(s, i, i + size - 1)
      i = i + size
    end
  end
  return '"' .. concat(out) .. '"'
end

---------------------------------------------------------------------------------------------
-- Field checks against REST_FIELDS.messages.
---------------------------------------------------------------------------------------------

local check_object

local function join(path, key)
  if path == "" then
    return key
  end
  return path .. "." .. key
end

-- kind: true (anything), a message name, or {map = message name}.
local function check_value(node, kind, path)
  if kind == true or node == SCALAR then
    return nil
  end
  if type(kind) == "table" then
    if node.object then
      for i = 1, #node.keys do
        local value = node.values[i]
        if value ~= SCALAR and value.object then
          local bad, where = check_object(value, kind.map, path .. "[" .. json_quote(node.keys[i]) .. "]")
          if bad then
            return bad, where
          end
        end
      end
    end
    return nil
  end
  if node.array then
    for i = 1, node.n do
      local item = node[i]
      if item ~= SCALAR and item.object then
        local bad, where = check_object(item, kind, path .. "[" .. (i - 1) .. "]")
        if bad then
          return bad, where
        end
      end
    end
    return nil
  end
  if node.object then
    return check_object(node, kind, path)
  end
  return nil
end

-- Returns the first unknown key and the path of the object holding it, or nil.
check_object = function(obj, message, path)
  local fields = MESSAGES[message]
  if fields == nil then
    return nil -- a well-known type with its own JSON form: the transcoder checks it
  end
  for i = 1, #obj.keys do
    local key = obj.keys[i]
    local kind = rawget(fields, key)
    if kind == nil then
      return key, path
    end
    local bad, where = check_value(obj.values[i], kind, join(path, key))
    if bad then
      return bad, where
    end
  end
  return nil
end

---------------------------------------------------------------------------------------------
-- Routing: which REST rule a request maps to (same templates as the transcoder).
---------------------------------------------------------------------------------------------

local function split_query(path)
  local q = find(path, "?", 1, true)
  if q == nil then
    return path, ""
  end
  return sub(path, 1, q - 1), sub(path, q)
end

local function segments(path)
  local out, n, i = {}, 0, 2
  if path == "/" or path == "" then
    return out
  end
  while true do
    local j = find(path, "/", i, true)
    n = n + 1
    if j == nil then
      out[n] = sub(path, i)
      return out
    end
    out[n] = sub(path, i, j - 1)
    i = j + 1
  end
end

local function rule_matches(rule, segs)
  local n = #segs
  local last = segs[n]
  if rule.verb then
    local suffix = ":" .. rule.verb
    if last == nil or #last <= #suffix or sub(last, -#suffix) ~= suffix then
      return false
    end
    last = sub(last, 1, #last - #suffix)
  end
  local pattern = rule.segments
  local i = 1
  for k = 1, #pattern do
    local p = pattern[k]
    if p == "**" then
      return true
    end
    if i > n then
      return false
    end
    local seg = segs[i]
    if i == n then
      seg = last
    end
    if p == "*" then
      if seg == "" then
        return false
      end
    elseif p ~= seg then
      return false
    end
    i = i + 1
  end
  return i == n + 1
end

local function find_rule(method, segs)
  for k = 1, #RULES do
    local rule = RULES[k]
    if rule.method == method and rule_matches(rule, segs) then
      return rule
    end
  end
  return nil
end

-- The methods some REST rule serves at these segments, in rule order, without repeats.
local function allowed_methods(segs)
  local methods, seen = {}, {}
  for k = 1, #RULES do
    local rule = RULES[k]
    if not seen[rule.method] and rule_matches(rule, segs) then
      seen[rule.method] = true
      methods[#methods + 1] = rule.method
    end
  end
  return methods
end

-- A REST path answered with a method none of its rules serve: 405 with Allow, and the body
-- grpc-gateway gives it (UNIMPLEMENTED), instead of the transcoder's 404 or a bare 400.
local function method_not_allowed(handle, method, path, methods)
  local allow = concat(methods, ", ")
  local message = format("method %s is not allowed on %s (allowed: %s)", method, path, allow)
  handle:streamInfo():dynamicMetadata():set(METADATA, "json_reply", true)
  handle:respond({
    [":status"] = "405",
    ["content-type"] = "application/json",
    ["allow"] = allow,
  }, '{"code":12,"message":' .. json_quote(message) .. ',"details":[]}')
end

local function bad_request(handle, message, field)
  local body = '{"code":3,"message":' .. json_quote(message) .. ',"details":['
  if field then
    body = body .. '{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":'
      .. '[{"field":' .. json_quote(field) .. ',"description":"unknown field"}]}'
  end
  -- Tell local_reply_config this body is final (it rewrites other 400s into JSON).
  handle:streamInfo():dynamicMetadata():set(METADATA, "json_reply", true)
  handle:respond({ [":status"] = "400", ["content-type"] = "application/json" }, body .. "]}")
end

local function check_body(text, message)
  local ok, result = pcall(parse_json, text)
  if not ok then
    if type(result) == "table" and result.pos then
      return format("malformed JSON body: %s at byte %d", result.msg, result.pos - 1)
    end
    error(result, 0)
  end
  if result == SCALAR or not result.object then
    return nil -- not an object: the transcoder reports the type error
  end
  local bad, where = check_object(result, message, "")
  if bad == nil then
    return nil
  end
  local message_text = "unknown field " .. json_quote(bad)
  if where ~= "" then
    message_text = message_text .. " in " .. where
  end
  return message_text, join(where, bad)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type")
  if content_type ~= nil and find(content_type, "^application/grpc") then
    return
  end
  local method = headers:get(":method")
  local path, query = split_query(headers:get(":path") or "/")
  local segs = segments(path)
  local rule = find_rule(method, segs)
  if rule == nil and #path > 1 and sub(path, -1) == "/" then
    local stripped = sub(path, 1, -2)
    local stripped_segs = segments(stripped)
    rule = find_rule(method, stripped_segs)
    if rule ~= nil then
      headers:replace(":path", stripped .. query)
    elseif #allowed_methods(segs) == 0 then
      segs = stripped_segs
    end
  end
  if rule == nil then
    local methods = allowed_methods(segs)
    -- HEAD of a GET rule is left to the transcoder, as before.
    if #methods > 0 and not (method == "HEAD" and find_rule("GET", segs) ~= nil) then
      method_not_allowed(handle, method, path, methods)
      return
    end
  end
  if rule ~= nil then
    -- For envoy_on_response: a REST call, and the field to unwrap if any.
    handle:streamInfo():dynamicMetadata():set(METADATA, "response_body", rule.response_body or "")
  end
  if rule == nil or not rule.body then
    return
  end
  -- The OpenAPI document declares the body of these rules required; the transcoder would
  -- take a missing one as an empty message.
  local body = handle:body()
  local text = ""
  if body ~= nil and body:length() > 0 then
    text = body:getBytes(0, body:length())
  end
  if find(text, "^[ \t\r\n]*$") then
    bad_request(handle, "a JSON object body is required")
    return
  end
  local ok, problem, field = pcall(check_body, text, rule.body)
  if not ok then
    -- A bug here must not take the API down: let the transcoder decide.
    handle:logErr("rest guard failed: " .. tostring(problem))
    return
  end
  if problem ~= nil then
    bad_request(handle, problem, field)
  end
end

-- The services read no request message larger than the largest one the contract allows
-- (services/platform/validation.py), and gRPC reports a larger one as RESOURCE_EXHAUSTED
-- "Received message larger than max (N vs. M)". That is bad input, not a quota: callers get
-- INVALID_ARGUMENT (400 over REST), like any other request that breaks the contract.
local TOO_LARGE = "Received message larger than max %((%d+) vs%. (%d+)%)"

local function too_large_text(message)
  local actual, limit = string.match(message or "", TOO_LARGE)
  if actual == nil then
    return nil
  end
  return format("the request message is %s bytes; at most %s bytes are accepted", actual, limit)
end

local function rewrite_grpc_too_large(headers)
  if headers:get("grpc-status") ~= "8" then
    return
  end
  local text = too_large_text(headers:get("grpc-message"))
  if text ~= nil then
    headers:replace("grpc-status", "3")
    headers:replace("grpc-message", text)
  end
end

local function rewrite_rest_too_large(handle)
  local body = handle:body() -- waits for the body: headers taken before are stale after it
  if body == nil then
    return
  end
  local raw = body:getBytes(0, body:length())
  local ok, doc = pcall(parse_json, raw)
  if not ok or doc == SCALAR or not doc.object then
    return
  end
  local text = nil
  for i = 1, #doc.keys do
    if doc.keys[i] == "message" then
      text = too_large_text(sub(raw, doc.starts[i], doc.ends[i]))
    end
  end
  if text ~= nil then
    handle:headers():replace(":status", "400")
    body:setBytes('{"code":3,"message":' .. json_quote(text) .. ',"details":[]}')
  end
end

-- REST responses: drop the gRPC response headers the transcoder leaves in, and turn
-- {"<response_body>": X, ...} into X for successful JSON responses.
function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get(METADATA)
  local headers = handle:headers()
  if meta == nil or meta.response_body == nil then
    rewrite_grpc_too_large(headers)
    return
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-encoding")
  if headers:get(":status") == "429" then
    rewrite_rest_too_large(handle)
    return
  end
  local content_type = headers:get("content-type") or ""
  if meta.response_body == "" or headers:get(":status") ~= "200"
    or not find(content_type, "^application/json") then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local ok, doc = pcall(parse_json, text)
  if not ok or doc == SCALAR or not doc.object then
    handle:logErr("rest guard: cannot unwrap " .. meta.response_body .. " from the response")
    return
  end
  local inner = "{}"
  for i = 1, #doc.keys do
    if doc.keys[i] == meta.response_body then
      inner = sub(text, doc.starts[i], doc.ends[i])
    end
  end
  body:setBytes(inner)
end
