-- wrk script for bench/api_bench.sh's mixed run: lookups whose answers are checked.
-- Run with an even number of threads: odd threads look up KNOWN_NUMBER and KNOWN_IP (every
-- answer must be 200 and name what was asked), even threads UNKNOWN_NUMBER and UNKNOWN_IP
-- (every answer must be 404). A thread's Lua state has one role, so each answer is checked
-- against the request that produced it however connections interleave.
--   KNOWN_NUMBER=... UNKNOWN_NUMBER=... KNOWN_IP=... UNKNOWN_IP=... \
--     wrk -t2 -c4 -d15s -s bench/api_check.lua http://127.0.0.1:8082
-- Prints: checked=N wrong=W known_200=K unknown_404=U (and the first wrong answers).

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("role", (counter % 2 == 1) and "known" or "unknown")
   thread:set("known_number", os.getenv("KNOWN_NUMBER"))
   thread:set("unknown_number", os.getenv("UNKNOWN_NUMBER"))
   thread:set("known_ip", os.getenv("KNOWN_IP"))
   thread:set("unknown_ip", os.getenv("UNKNOWN_IP"))
   table.insert(threads, thread)
end

function init(args)
   checked, wrong, ok = 0, 0, 0
   samples = ""
   if role == "known" then
      paths = { "/numbers/" .. known_number, "/ip-addresses/" .. known_ip }
      expect_status = 200
   else
      paths = { "/numbers/" .. unknown_number, "/ip-addresses/" .. unknown_ip }
      expect_status = 404
   end
   reqs = { wrk.format("GET", paths[1]), wrk.format("GET", paths[2]) }
   n = 0
end

function request()
   n = n + 1
   return reqs[(n % 2) + 1]
end

function response(status, headers, body)
   checked = checked + 1
   local good = (status == expect_status)
   if good and role == "known" then
      good = (body:find('"phone_number_found": "' .. known_number .. '"', 1, true) ~= nil)
          or (body:find('"bad_actor_found": "' .. known_ip .. '"', 1, true) ~= nil)
   elseif good then
      good = (body == '{"message": "No phone number found"}')
          or (body == '{"message": "No bad actor found"}')
   end
   if good then
      ok = ok + 1
   else
      wrong = wrong + 1
      if wrong <= 3 then
         samples = samples .. string.format(" [%s %d %q]", role, status, body:sub(1, 120))
      end
   end
end

function done(summary, latency, requests)
   local c, w, k, u = 0, 0, 0, 0
   local s = ""
   for _, t in ipairs(threads) do
      c = c + t:get("checked")
      w = w + t:get("wrong")
      if t:get("role") == "known" then k = k + t:get("ok") else u = u + t:get("ok") end
      s = s .. t:get("samples")
   end
   io.write(string.format("checked=%d wrong=%d known_200=%d unknown_404=%d non2xx_errors=%d%s\n",
                          c, w, k, u, summary.errors.status, s))
end
