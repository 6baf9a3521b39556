//! The archive of one original: a single zstd frame with its content checksum turned on
//! (zstd leaves it off by default), so any zstd tool can read it and a flipped byte is caught
//! on the way out.
//!
//! Compression is spent only where it pays. JPEG, GIF and WebP payloads are entropy-coded
//! already, and PNG's usually are (deflate): zstd saves well under 1 % on them at several
//! times the CPU. Those bytes, and any whose first block does not shrink by
//! [`MIN_PROBE_SAVING`], go into a frame of raw blocks: still zstd-framed and checksummed,
//! written at the speed of a copy. zstd's library has no such "store" mode (even its fastest
//! negative levels search for matches), so the raw frame is written here, following
//! RFC 8878; reading always goes through the zstd library.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use xxhash_rust::xxh64::Xxh64;

use crate::model::{ArchiveMethod, ImageFormat};

/// Largest block of a zstd frame, and the read size of the pipeline.
const BLOCK_BYTES: usize = 128 * 1024;
/// Leading bytes of a PNG (or unknown data) compressed to decide its method.
const PROBE_BYTES: usize = 64 * 1024;
/// A probe must save at least this fraction for the file to be compressed.
pub const MIN_PROBE_SAVING: f64 = 0.03;

/// What writing (or reading) an archive saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Lower-case hex SHA-256 of the original bytes.
    pub sha256: String,
    /// Original bytes.
    pub size: u64,
    /// Bytes of the archive.
    pub compressed_size: u64,
    pub method: ArchiveMethod,
}

/// Picks the method for an original of `format` whose first bytes are `head`.
pub fn choose_method(format: Option<ImageFormat>, head: &[u8], level: i32) -> ArchiveMethod {
    match format {
        Some(ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::Webp) => ArchiveMethod::Raw,
        Some(ImageFormat::Png) | None => probe(head, level),
    }
}

/// Raw unless compressing the first [`PROBE_BYTES`] of `head` saves [`MIN_PROBE_SAVING`].
fn probe(head: &[u8], level: i32) -> ArchiveMethod {
    let sample = &head[..head.len().min(PROBE_BYTES)];
    if sample.len() < 512 {
        return ArchiveMethod::Zstd; // too small to judge, and cheap either way
    }
    match zstd::bulk::compress(sample, level) {
        Ok(compressed) if (compressed.len() as f64) <= sample.len() as f64 * (1.0 - MIN_PROBE_SAVING) => {
            ArchiveMethod::Zstd
        }
        _ => ArchiveMethod::Raw,
    }
}

/// Streams `source` into `out` as one checksummed zstd frame, choosing the method from the
/// format and the first block. Returns what it wrote, with the SHA-256 of the source bytes
/// (for the caller to compare with the recorded checksum).
pub fn write(mut source: impl Read, out: impl Write, format: Option<ImageFormat>, level: i32) -> io::Result<Archived> {
    let mut buffer = vec![0u8; BLOCK_BYTES];
    let first = read_full(&mut source, &mut buffer)?;
    let method = choose_method(format, &buffer[..first], level);
    let mut out = CountingWriter { inner: out, count: 0 };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut chunk = first;
    match method {
        ArchiveMethod::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(&mut out, level)?;
            encoder.include_checksum(true)?;
            while chunk > 0 {
                hasher.update(&buffer[..chunk]);
                encoder.write_all(&buffer[..chunk])?;
                size += chunk as u64;
                chunk = read_full(&mut source, &mut buffer)?;
            }
            encoder.finish()?;
        }
        ArchiveMethod::Raw => {
            let mut frame = RawFrame::start(&mut out)?;
            while chunk > 0 {
                hasher.update(&buffer[..chunk]);
                frame.block(&buffer[..chunk])?;
                size += chunk as u64;
                chunk = read_full(&mut source, &mut buffer)?;
            }
            frame.finish()?;
        }
    }
    out.flush()?;
    Ok(Archived { sha256: hex::encode(hasher.finalize()), size, compressed_size: out.count, method })
}

/// Decompresses an archive into `out` (zstd checks the frame checksum on the way) and
/// returns the SHA-256 and size of what came out. A corrupt archive is an
/// [`io::ErrorKind::InvalidData`] error or a digest that differs from the recorded one.
pub fn extract(archive: impl Read, mut out: impl Write) -> io::Result<(String, u64)> {
    let mut decoder = zstd::stream::read::Decoder::new(archive)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; BLOCK_BYTES];
    let mut size = 0u64;
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n])?;
        size += n as u64;
    }
    out.flush()?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// The SHA-256 and size of an archive's content, without keeping it.
pub fn digest(archive: impl Read) -> io::Result<(String, u64)> {
    extract(archive, io::sink())
}

/// Fills `buffer` as far as the source allows; short only at the end.
fn read_full(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A zstd frame of raw blocks (RFC 8878 §3.1.1): header without content size, 128 KiB
/// window, blocks of at most 128 KiB, an empty last block, and the low 32 bits of the
/// content's XXH64 as the checksum.
struct RawFrame<W: Write> {
    out: W,
    xxh: Xxh64,
}

impl<W: Write> RawFrame<W> {
    const MAGIC: [u8; 4] = 0xFD2F_B528_u32.to_le_bytes();
    /// Frame header descriptor: content checksum on; no content size, no dictionary, not
    /// single-segment (so a window descriptor follows).
    const DESCRIPTOR: u8 = 0b0000_0100;
    /// Window of 2^(10 + 7) = 128 KiB, so blocks may be [`BLOCK_BYTES`].
    const WINDOW: u8 = 7 << 3;

    fn start(mut out: W) -> io::Result<Self> {
        out.write_all(&Self::MAGIC)?;
        out.write_all(&[Self::DESCRIPTOR, Self::WINDOW])?;
        Ok(Self { out, xxh: Xxh64::new(0) })
    }

    fn block(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(BLOCK_BYTES) {
            self.header(false, piece.len())?;
            self.out.write_all(piece)?;
            self.xxh.update(piece);
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.header(true, 0)?;
        let checksum = (self.xxh.digest() as u32).to_le_bytes();
        self.out.write_all(&checksum)
    }

    /// Block header: bit 0 last block, bits 1–2 block type (0 = raw), bits 3–23 size.
    fn header(&mut self, last: bool, size: usize) -> io::Result<()> {
        let value = u32::from(last) | ((size as u32) << 3);
        self.out.write_all(&value.to_le_bytes()[..3])
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        // A xorshift stream: incompressible, reproducible.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn round_trip(data: &[u8], format: Option<ImageFormat>) -> Archived {
        let mut archive = Vec::new();
        let written = write(data, &mut archive, format, 6).unwrap();
        assert_eq!(written.compressed_size, archive.len() as u64);
        assert_eq!(zstd::stream::decode_all(&archive[..]).unwrap(), data, "the zstd library reads it back");
        let (sha256, size) = digest(&archive[..]).unwrap();
        assert_eq!((sha256, size), (written.sha256.clone(), data.len() as u64));
        assert_eq!(written.sha256, hex::encode(Sha256::digest(data)));
        written
    }

    #[test]
    fn entropy_coded_formats_are_stored_raw_and_read_back() {
        for len in [0, 1, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 3 * BLOCK_BYTES + 17] {
            let data = noise(len);
            let written = round_trip(&data, Some(ImageFormat::Jpeg));
            assert_eq!(written.method, ArchiveMethod::Raw);
            let blocks = len.div_ceil(BLOCK_BYTES) as u64;
            assert_eq!(written.compressed_size, len as u64 + 6 + 3 * (blocks + 1) + 4, "raw framing overhead");
        }
    }

    #[test]
    fn compressible_data_is_compressed() {
        let data: Vec<u8> = b"stayler ".iter().copied().cycle().take(500_000).collect();
        let written = round_trip(&data, Some(ImageFormat::Png));
        assert_eq!(written.method, ArchiveMethod::Zstd);
        assert!(written.compressed_size < data.len() as u64 / 10);
    }

    #[test]
    fn a_png_whose_head_does_not_compress_is_stored_raw() {
        let written = round_trip(&noise(300_000), Some(ImageFormat::Png));
        assert_eq!(written.method, ArchiveMethod::Raw);
    }

    #[test]
    fn both_methods_carry_a_checksum_that_catches_a_flipped_byte() {
        let compressible: Vec<u8> = b"abcdefgh".iter().copied().cycle().take(200_000).collect();
        for (data, format) in [(noise(200_000), Some(ImageFormat::Jpeg)), (compressible, None)] {
            let mut archive = Vec::new();
            let written = write(&data[..], &mut archive, format, 3).unwrap();
            // Flip a byte in the middle of the payload, where no framing field lives.
            let middle = archive.len() / 2;
            archive[middle] ^= 0x01;
            match digest(&archive[..]) {
                Err(error) => assert_eq!(error.kind(), io::ErrorKind::InvalidData),
                Ok((sha256, _)) => panic!("{:?} archive accepted after corruption ({sha256})", written.method),
            }
        }
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let mut archive = Vec::new();
        write(&noise(100_000)[..], &mut archive, Some(ImageFormat::Webp), 3).unwrap();
        archive.truncate(archive.len() - 10);
        assert!(digest(&archive[..]).is_err());
    }
}
