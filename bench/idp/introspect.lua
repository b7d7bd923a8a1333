-- wrk: token introspection (RFC 7662) (bench/idp.sh). Env: BENCH_BASIC = base64(id:secret),
-- BENCH_TOKEN = the access token to introspect. Counts answers that are not 200 with
-- "active":true in `bad` (printed by done()).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. assert(os.getenv("BENCH_BASIC"), "BENCH_BASIC")
wrk.body = "token=" .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN") .. "&token_type_hint=access_token"

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not body:find('"active":true', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("Bad responses: %d\n", n))
end
