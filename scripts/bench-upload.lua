-- wrk script of scripts/bench-upload: sends one image over and over, either as the
-- multipart upload of the Stayler API or as the body of a plain PUT (nginx WebDAV), and
-- prints one machine-readable result line at the end.
--
-- Environment: BENCH_MODE = api | put; BENCH_IMAGE = path of the image; for api,
-- BENCH_TOKENS = bearer tokens separated by spaces (requests rotate through them, so
-- the uploads belong to several owners, as in real traffic).

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local bytes = file:read("*a")
  file:close()
  return bytes
end

local mode = os.getenv("BENCH_MODE")
local image = read_file(os.getenv("BENCH_IMAGE"))

if mode == "api" then
  local boundary = "stayler-bench-7d4f2a9c1e"
  local body = table.concat({
    "--", boundary, "\r\n",
    'Content-Disposition: form-data; name="image_type"\r\n\r\n',
    "user\r\n",
    "--", boundary, "\r\n",
    'Content-Disposition: form-data; name="file"; filename="put-1mb.jpg"\r\n',
    "Content-Type: image/jpeg\r\n\r\n",
    image, "\r\n",
    "--", boundary, "--\r\n",
  })
  -- Built once per thread: wrk only copies a prepared request per send.
  local requests = {}
  for token in os.getenv("BENCH_TOKENS"):gmatch("%S+") do
    requests[#requests + 1] = wrk.format("POST", "/storage/images", {
      ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
      ["Authorization"] = "Bearer " .. token,
    }, body)
  end
  assert(#requests > 0, "BENCH_TOKENS is empty")
  local next_request = 0
  function request()
    next_request = next_request % #requests + 1
    return requests[next_request]
  end
elseif mode == "put" then
  -- One static request; the server gives each its own file name.
  wrk.method = "PUT"
  wrk.body = image
  wrk.headers["Content-Type"] = "image/jpeg"
else
  error("BENCH_MODE must be api or put")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT completed=%d status_errors=%d socket_errors=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
