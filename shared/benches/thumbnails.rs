//! Benchmark of the thumbnail pipeline: the three configured thumbnails (150, 300 and 600 px
//! boxes, encoded) of real photos, single-threaded, from bytes in memory.
//!
//! A plain harness rather than criterion, so that it measures exactly like its libvips
//! counterpart (`scripts/bench-thumbnails-vips.py`): warm-up runs, then the median and the
//! minimum of timed runs of the whole call. `scripts/bench-thumbnails` runs both and prints
//! the ratio; run this alone with `cargo bench -p shared --bench thumbnails`.
//!
//! Arguments: `--runs N` timed runs per case (default 30), `--tsv` for machine-readable
//! lines `case<TAB>median ms<TAB>min ms`, `--save DIR` to write the thumbnails there for a
//! look at their quality. Other arguments (cargo passes `--bench`) are ignored.

use std::path::Path;
use std::time::{Duration, Instant};

use shared::imaging::{ThumbnailSpec, make_thumbnails};

/// (case name, file under `benches/images/`), the same list as the libvips script.
const CASES: [(&str, &str); 3] =
    [("12mp-jpeg", "photo-12mp.jpg"), ("2mp-jpeg", "photo-2mp.jpg"), ("2mp-alpha-png", "photo-alpha.png")];

const WARM_UP_RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tsv = args.iter().any(|a| a == "--tsv");
    let value_of = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let runs = value_of("--runs").map(|n| n.parse::<usize>().expect("--runs takes a number")).unwrap_or(30).max(1);
    let save_to = value_of("--save").map(Path::new);

    let specs: Vec<ThumbnailSpec> = [("small", 150), ("medium", 300), ("large", 600)]
        .into_iter()
        .map(|(name, side)| ThumbnailSpec { name: name.to_owned(), width: side, height: side })
        .collect();
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/images");

    if !tsv {
        println!("{:<14} {:>10} {:>10}  outputs", "case", "median ms", "min ms");
    }
    for (case, file) in CASES {
        let data = std::fs::read(images.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let mut times = Vec::with_capacity(runs);
        let mut outputs = Vec::new();
        for run in 0..WARM_UP_RUNS + runs {
            let started = Instant::now();
            let thumbnails = make_thumbnails(&data, &specs, u64::MAX).expect("benchmark images decode");
            let elapsed = started.elapsed();
            if run >= WARM_UP_RUNS {
                times.push(elapsed);
            }
            outputs = thumbnails;
        }
        if let Some(dir) = save_to {
            for thumbnail in &outputs {
                let name = format!("{case}-{}.{}", thumbnail.name, thumbnail.format.extension());
                std::fs::write(dir.join(name), &thumbnail.bytes).expect("writing to --save DIR");
            }
        }
        times.sort();
        let (median, min) = (millis(times[times.len() / 2]), millis(times[0]));
        if tsv {
            println!("{case}\t{median:.2}\t{min:.2}");
        } else {
            let described: Vec<String> = outputs
                .iter()
                .map(|t| format!("{}x{} {:?} {} B", t.width, t.height, t.format, t.bytes.len()))
                .collect();
            println!("{case:<14} {median:>10.2} {min:>10.2}  {}", described.join(", "));
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
