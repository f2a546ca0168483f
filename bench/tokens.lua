-- wrk script for `make bench`: every request carries the next credential of a file of
-- pre-generated ones (one per line), so none repeats within a run.
--
--   wrk ... -s bench/tokens.lua http://127.0.0.1:PORT/ -- FILE HEADER PREFIX OFFSET
--
-- FILE: the credentials; HEADER: the request header; PREFIX: prepended to each credential
-- (e.g. "Bearer "); OFFSET: where to start in the file (the bench advances it between runs so
-- a later run does not replay the credentials a cache may still hold). Use one wrk thread
-- (-t1): each thread has its own Lua state and would start at the same offset.

local tokens = {}
local count = 0
local index = 0
local header = "authorization"
local prefix = ""

function init(args)
  local file = args[1]
  header = args[2] or header
  prefix = args[3] or prefix
  for line in io.lines(file) do
    if #line > 0 then
      count = count + 1
      tokens[count] = line
    end
  end
  if count == 0 then
    error("no credentials in " .. tostring(file))
  end
  index = (tonumber(args[4] or "0") or 0) % count
end

function request()
  index = index + 1
  if index > count then
    index = 1
  end
  return wrk.format("GET", "/", { [header] = prefix .. tokens[index] })
end
