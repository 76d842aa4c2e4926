-- wrk script of bench/decisions.py: POST pre-built bodies, one after the other, and report
-- in done() one machine-readable line.
--
--   wrk -t1 -cC -dDs -s bench/decisions.lua URL -- BODIES TOKEN [OFFSET [CONTENT_TYPE]]
--
-- BODIES: a file of request bodies, one JSON document a line (each its own client_event_id,
-- or the same body on one line for a single actor). The requests cycle through them from
-- line OFFSET+1 on; `wrapped` in the report says how often the file ran out (a body, and so
-- a client_event_id, sent twice). TOKEN: the bearer token ("-" for none). CONTENT_TYPE:
-- of the bodies, application/json unless given (bench/isolation.py floods the token
-- endpoint with form bodies).
--
-- The report: `WRK_RESULT {json}` with requests, duration (µs), bytes, socket errors
-- (connect, read, write, timeout), errors.status (wrk's count of statuses > 399), the
-- count of every status seen, of every decision answered and of answers marked duplicate,
-- how many bodies were taken, latency mean/p50/p90/p99/max (µs) and the whole latency
-- histogram as [value µs, count] pairs (so that rounds can be merged exactly).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

bodies = {}
requests = {}
taken = 0
wrapped = 0
statuses = {}
decisions = {}
duplicates = 0

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         bodies[#bodies + 1] = line
      end
   end
   if #bodies == 0 then
      error("no request bodies in " .. args[1])
   end
   headers = { ["Content-Type"] = args[4] or "application/json" }
   if args[2] and args[2] ~= "-" then
      headers["Authorization"] = "Bearer " .. args[2]
   end
   position = tonumber(args[3] or "0") % #bodies
end

function request()
   position = position + 1
   if position > #bodies then
      position = 1
      wrapped = wrapped + 1
   end
   taken = taken + 1
   local prepared = requests[position]
   if prepared == nil then
      prepared = wrk.format("POST", nil, headers, bodies[position])
      requests[position] = prepared
   end
   return prepared
end

function response(status, headers, body)
   local code = tostring(status)
   statuses[code] = (statuses[code] or 0) + 1
   local decision = string.match(body, '"decision":"(%a+)"')
   if decision then
      decisions[decision] = (decisions[decision] or 0) + 1
   end
   if string.find(body, '"duplicate":true', 1, true) then
      duplicates = duplicates + 1
   end
end

local function json(value)
   local kind = type(value)
   if kind == "table" then
      if #value > 0 then
         local items = {}
         for _, item in ipairs(value) do
            items[#items + 1] = json(item)
         end
         return "[" .. table.concat(items, ",") .. "]"
      end
      local items = {}
      for key, item in pairs(value) do
         items[#items + 1] = string.format("%q", tostring(key)) .. ":" .. json(item)
      end
      return "{" .. table.concat(items, ",") .. "}"
   elseif kind == "string" then
      return string.format("%q", value)
   elseif kind == "number" then
      if value ~= value or value == math.huge or value == -math.huge then
         return "null"
      end
      return string.format("%.17g", value)
   end
   return tostring(value)
end

local function add(into, counts)
   for key, count in pairs(counts or {}) do
      into[key] = (into[key] or 0) + count
   end
end

function done(summary, latency, requests)
   local all_statuses, all_decisions = {}, {}
   local all_taken, all_wrapped, all_duplicates = 0, 0, 0
   for _, thread in ipairs(threads) do
      add(all_statuses, thread:get("statuses"))
      add(all_decisions, thread:get("decisions"))
      all_taken = all_taken + thread:get("taken")
      all_wrapped = all_wrapped + thread:get("wrapped")
      all_duplicates = all_duplicates + thread:get("duplicates")
   end
   local histogram = {}
   for i = 1, #latency do
      local value, count = latency(i)
      histogram[#histogram + 1] = { value, count }
   end
   local report = {
      requests = summary.requests,
      duration_us = summary.duration,
      bytes = summary.bytes,
      errors = summary.errors,
      statuses = all_statuses,
      decisions = all_decisions,
      duplicates = all_duplicates,
      taken = all_taken,
      wrapped = all_wrapped,
      latency_us = {
         mean = latency.mean,
         p50 = latency:percentile(50),
         p90 = latency:percentile(90),
         p99 = latency:percentile(99),
         max = latency.max,
      },
      histogram = histogram,
   }
   io.write("WRK_RESULT " .. json(report) .. "\n")
end
