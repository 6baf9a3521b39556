#!/usr/bin/env python3
"""Upload load of scripts/bench-workers: photos sent to POST /storage/images, either a
fixed number as fast as a few connections go (the backlog), or at a steady rate.

    scripts/bench-workers-load.py --api URL --tokens FILE --images FILE... --out CSV
        (--count N --connections K | --rate R --seconds S)

--count: N uploads over K keep-alive connections, each sending its next upload as soon as
the last one was answered (closed loop: the fastest way to fill the queues).

--rate: an open loop. Upload i is due at start + i / R, whatever happened to the uploads
before it: a pacer hands each one out at its time to a pool of connections (64), so a
slow answer delays no later upload unless every connection is busy; how late each upload
left is recorded, and reported as the largest lateness.

Photos are sent in turn (upload i sends images[i % len]), as `image_type=user`, by owners
taken in turn from the bearer tokens in --tokens (one a line). Each answered upload is a
CSV line of --out: image id, the client's Unix time in seconds when the 201 arrived, the
upload's latency in ms, and how late it left in ms. The last line of stdout is
`BENCH_RESULT key=value...`. Python's standard library only.
"""

import argparse
import http.client
import json
import pathlib
import queue
import threading
import time
import urllib.parse

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".gif": "image/gif"}
BOUNDARY = "stayler-bench-workers-5e1d"
RATE_CONNECTIONS = 64


def multipart_body(path):
    """The multipart upload of one photo, built once."""
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return b"".join([
        f"--{BOUNDARY}\r\n".encode(),
        b'Content-Disposition: form-data; name="image_type"\r\n\r\nuser\r\n',
        f"--{BOUNDARY}\r\n".encode(),
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'.encode(),
        f"Content-Type: {content_type}\r\n\r\n".encode(),
        path.read_bytes(),
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    ])


class Uploader:
    """Sends upload i (photo and owner in turn) and records its outcome."""

    def __init__(self, api, tokens, bodies):
        url = urllib.parse.urlsplit(api)
        self.host, self.port = url.hostname, url.port or 80
        self.tokens, self.bodies = tokens, bodies
        self.lock = threading.Lock()
        self.rows, self.errors, self.latencies_ms, self.lateness_ms = [], [], [], []

    def connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def send(self, connection, i, due):
        started = time.time()
        headers = {"Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}",
                   "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        try:
            connection.request("POST", "/storage/images", body=self.bodies[i % len(self.bodies)], headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            with self.lock:
                self.errors.append(f"upload {i}: {error}")
            return
        acked = time.time()
        with self.lock:
            if response.status != 201:
                self.errors.append(f"upload {i}: {response.status} {answer[:200]!r}")
                return
            image_id = json.loads(answer)["id"]
            latency, late = (acked - started) * 1000, max(0.0, (started - due) * 1000) if due else 0.0
            self.rows.append(f"{image_id},{acked:.6f},{latency:.2f},{late:.2f}")
            self.latencies_ms.append(latency)
            self.lateness_ms.append(late)


def run_count(uploader, count, connections):
    """`count` uploads, each of `connections` connections sending its next as soon as it can."""
    next_upload = iter(range(count))
    lock = threading.Lock()

    def loop():
        connection = uploader.connect()
        while True:
            with lock:
                i = next(next_upload, None)
            if i is None:
                return
            uploader.send(connection, i, None)

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_rate(uploader, rate, seconds):
    """Uploads due at a steady `rate` for `seconds`, handed out on time to a pool of connections."""
    due = queue.Queue()

    def loop():
        connection = uploader.connect()
        while (job := due.get()) is not None:
            uploader.send(connection, *job)

    threads = [threading.Thread(target=loop) for _ in range(RATE_CONNECTIONS)]
    for thread in threads:
        thread.start()
    start = time.time() + 0.1
    for i in range(round(rate * seconds)):
        at = start + i / rate
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        due.put((i, at))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()


def percentile(values, share):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--tokens", required=True, type=pathlib.Path)
    parser.add_argument("--images", required=True, nargs="+", type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--count", type=int)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    if (args.count is None) == (args.rate is None) or (args.rate is not None and args.seconds is None):
        parser.error("give either --count, or --rate and --seconds")

    tokens = args.tokens.read_text().split()
    uploader = Uploader(args.api, tokens, [multipart_body(path) for path in args.images])
    started = time.time()
    if args.count is not None:
        run_count(uploader, args.count, args.connections)
    else:
        run_rate(uploader, args.rate, args.seconds)
    elapsed = time.time() - started
    args.out.write_text("".join(row + "\n" for row in uploader.rows))
    for error in uploader.errors[:5]:
        print(f"error: {error}")
    print(f"BENCH_RESULT completed={len(uploader.rows)} errors={len(uploader.errors)} seconds={elapsed:.3f} "
          f"p50_ms={percentile(uploader.latencies_ms, 0.5):.1f} p99_ms={percentile(uploader.latencies_ms, 0.99):.1f} "
          f"max_ms={max(uploader.latencies_ms, default=0):.1f} "
          f"max_late_ms={max(uploader.lateness_ms, default=0):.1f}")


if __name__ == "__main__":
    main()
