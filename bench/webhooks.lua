-- wrk script of bench/webhooks.py: posts pre-signed, distinct Stripe events.
--
--   wrk -t2 -c16 -d8s -s bench/webhooks.lua URL -- EVENTS_FILE
--
-- EVENTS_FILE (written by bench/webhooks.py): line 1 the number of template parts P, then the
-- P parts (a body is part 1, field 1, part 2, ..., part P), then one line per event: its
-- Stripe-Signature header and its fields, separated by tabs. Thread i of n sends the events
-- whose line number is i modulo n, in order, so no two requests carry the same event; a
-- thread that runs out starts again from its first (counted as `wrapped`: duplicates).
-- At the end it prints one JSON line: requests, duration, errors, latency percentiles.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local parts, events, next_event = {}, {}, 1
sent, wrapped = 0, 0

function init(args)
  local count = tonumber(args[2] or "2")  -- `index` is set by setup()
  local file = assert(io.open(args[1], "r"))
  local n = tonumber(file:read("*l"))
  for i = 1, n do parts[i] = file:read("*l") end
  local line_no = 0
  for line in file:lines() do
    if line_no % count == index then
      local fields = {}
      for value in string.gmatch(line, "[^\t]+") do fields[#fields + 1] = value end
      events[#events + 1] = fields
    end
    line_no = line_no + 1
  end
  file:close()
end

function request()
  local fields = events[next_event]
  next_event = next_event + 1
  if next_event > #events then next_event, wrapped = 1, wrapped + 1 end
  sent = sent + 1
  local pieces = {}
  for i = 1, #parts do
    pieces[#pieces + 1] = parts[i]
    if fields[i + 1] then pieces[#pieces + 1] = fields[i + 1] end
  end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Stripe-Signature"] = fields[1]},
                    table.concat(pieces))
end

function done(summary, latency, requests)
  local total_sent, total_wrapped = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + (thread:get("sent") or 0)
    total_wrapped = total_wrapped + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "sent": %d, "wrapped": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    total_sent, total_wrapped, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
