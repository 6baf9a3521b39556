#!/usr/bin/env python3
"""libvips side of the thumbnail benchmark; run both sides with scripts/bench-thumbnails.

Does what shared::imaging::make_thumbnails does, the libvips way, in this one process
(no per-image process start-up is timed), single-threaded (VIPS_CONCURRENCY=1, set
before libvips starts), with the operation cache off so that no run reuses another's
work:

    one decode with shrink-on-load to the 600x600 box  (thumbnail_buffer, from bytes)
    copy_memory()                                       (so 300 and 150 don't decode again)
    300 and 150 from that 600 image                     (thumbnail_image)
    encode each: JPEG Q82 for the JPEG photos, PNG for the alpha photo, no metadata

Each case gets 3 warm-up runs, then RUNS timed runs of the whole sequence; it prints the
median and minimum in milliseconds, like `cargo bench -p shared --bench thumbnails`.

    scripts/bench-thumbnails-vips.py [--runs N] [--tsv]

Needs libvips (Debian: libvips42) and pyvips (pip install pyvips; its ABI mode works with
the system library, no compiler needed).
"""

import argparse
import os
import pathlib
import time

os.environ["VIPS_CONCURRENCY"] = "1"

import pyvips  # noqa: E402  (libvips reads VIPS_CONCURRENCY when it starts)

IMAGES = pathlib.Path(__file__).resolve().parent.parent / "shared" / "benches" / "images"
# (case, file, encoder), the same cases as shared/benches/thumbnails.rs.
CASES = [
    ("12mp-jpeg", "photo-12mp.jpg", "jpeg"),
    ("2mp-jpeg", "photo-2mp.jpg", "jpeg"),
    ("2mp-alpha-png", "photo-alpha.png", "png"),
]
WARM_UP_RUNS = 3


def thumbnails(data, encoder):
    large = pyvips.Image.thumbnail_buffer(data, 600, height=600).copy_memory()
    images = [large, large.thumbnail_image(300, height=300), large.thumbnail_image(150, height=150)]
    if encoder == "jpeg":
        return [image.jpegsave_buffer(Q=82, strip=True) for image in images]
    return [image.pngsave_buffer(strip=True) for image in images]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--tsv", action="store_true")
    args = parser.parse_args()

    pyvips.cache_set_max(0)
    if not args.tsv:
        print(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, pyvips {pyvips.__version__}")
        print(f"{'case':<14} {'median ms':>10} {'min ms':>10}  outputs")
    for case, file, encoder in CASES:
        data = (IMAGES / file).read_bytes()
        times = []
        for run in range(WARM_UP_RUNS + max(args.runs, 1)):
            started = time.perf_counter()
            outputs = thumbnails(data, encoder)
            elapsed = time.perf_counter() - started
            if run >= WARM_UP_RUNS:
                times.append(elapsed * 1000)
        times.sort()
        median, minimum = times[len(times) // 2], times[0]
        if args.tsv:
            print(f"{case}\t{median:.2f}\t{minimum:.2f}")
        else:
            sizes = ", ".join(f"{len(out)} B" for out in outputs)
            print(f"{case:<14} {median:>10.2f} {minimum:>10.2f}  {sizes}")


if __name__ == "__main__":
    main()
