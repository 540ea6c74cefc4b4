-- Offers requests for wrk, each from a visitor id and a client address never used before: every
-- other one a product page of a random product, the others carts of four products whose contents
-- keep changing. Every multiset of four products is a cart of its own (a product twice is a
-- quantity of 2), shuffled once (the same order in every thread); a thread's carts are drawn from
-- a window of WINDOW of them that moves on by one every STEP carts. So each cart is asked for
-- about STEP times per thread, within a minute (before its prepared list is refreshed), and new
-- carts keep coming: with two threads a process meets 10,000 distinct carts (its default bound of
-- prepared lists) within some 180,000 requests, and a new one every tenth cart after that.
--
--   wrk -t2 -c32 -s visitors.lua URL -- KEY PRODUCT_ID,PRODUCT_ID,...
--
-- At the end (of the duration, or at SIGINT) one line: "visitors: sent N answered N ok N
-- other N" (ok: status 200), summed over the threads.

local WINDOW = 1000
local STEP = 5

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  -- A global of the thread's own Lua state: its visitors' ids and addresses start from it.
  thread:set("tid", #threads)
end

-- Every multiset of four of `ids` as a cart ("a,a,b,c"), shuffled the same way in every thread.
local function every_cart(ids)
  local list = {}
  local n = #ids
  for a = 1, n do
    for b = a, n do
      for c = b, n do
        for d = c, n do
          table.insert(list, ids[a] .. "," .. ids[b] .. "," .. ids[c] .. "," .. ids[d])
        end
      end
    end
  end
  math.randomseed(1)
  for i = #list, 2, -1 do
    local j = math.random(i)
    list[i], list[j] = list[j], list[i]
  end
  return list
end

function init(args)
  key = args[1]
  ids = {}
  for id in string.gmatch(args[2], "[^,]+") do
    table.insert(ids, id)
  end
  carts = every_cart(ids)
  sent, answered, ok, other = 0, 0, 0, 0
  math.randomseed(os.time() * 1000 + tid)
end

function request()
  sent = sent + 1
  -- Up to 16 threads, interleaved: (sent, tid) -> a number no other request has.
  local n = sent * 16 + tid
  local address = 1 + math.floor(n / 16777216) % 223 .. "." .. math.floor(n / 65536) % 256 ..
    "." .. math.floor(n / 256) % 256 .. "." .. n % 256
  local path = "/v1/offers?key=" .. key
  if sent % 2 == 0 then
    path = path .. "&surface=product_page&product_id=" .. ids[math.random(#ids)]
  else
    local first = math.floor(sent / 2 / STEP)
    path = path .. "&surface=cart&items=" .. carts[(first + math.random(WINDOW)) % #carts + 1]
  end
  return wrk.format("GET", path .. "&visitor_id=v" .. tid .. "-" .. sent,
    {["X-Forwarded-For"] = address})
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local total = {sent = 0, answered = 0, ok = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      total[name] = total[name] + thread:get(name)
    end
  end
  io.write(string.format("visitors: sent %d answered %d ok %d other %d\n",
    total.sent, total.answered, total.ok, total.other))
end
