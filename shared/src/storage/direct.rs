//! Writing streamed uploads past the page cache.
//!
//! An original is written once and then read only a few times (by the workers that make its
//! thumbnails and verify its checksum, by the daily backup), so copying it into the page
//! cache spends CPU on the upload's hot path for nothing and evicts what is hot: the
//! thumbnails being served. A buffered write spends kernel CPU copying into freshly
//! allocated page-cache pages, a large share of an upload's CPU time, where a direct write
//! spends next to none (measurements: docs/benchmarks.md#direct-writes-of-originals). As a
//! bonus, the checksum worker then reads back what reached the disk rather than the page
//! cache's copy of what was sent.
//!
//! Direct I/O (`O_DIRECT`) wants the buffer's address, the file offset and the length
//! aligned to the device's block size, so bytes are gathered in an aligned buffer and
//! written in whole blocks; the tail that does not fill a block is written after switching
//! `O_DIRECT` off again. A file system that refuses `O_DIRECT` (with `EINVAL`, as some
//! network file systems and ext4 with `data=journal` do) gets ordinary buffered writes.

use std::fs::File;
use std::io::{self, Write};

use rustix::fs::OFlags;
use rustix::io::Errno;

/// Alignment of buffer address, offsets and lengths: 4 KiB satisfies devices with 512-byte
/// and 4 KiB logical blocks alike.
const ALIGN: usize = 4096;

/// The buffered end of a file written with `O_DIRECT` where the file system allows it.
#[derive(Debug)]
pub(super) struct DirectWriter {
    /// `capacity + ALIGN` bytes, of which the aligned window starting at `start` is used.
    memory: Vec<u8>,
    start: usize,
    capacity: usize,
    filled: usize,
    direct: bool,
}

impl DirectWriter {
    /// Switches `file` to direct I/O if its file system allows it. `capacity` is rounded up
    /// to whole blocks; it is the size of each write.
    pub(super) fn new(file: &File, capacity: usize) -> Self {
        Self::with_direct(file, capacity, true)
    }

    /// `try_direct: false` is the path of a file system that refuses `O_DIRECT`.
    fn with_direct(file: &File, capacity: usize, try_direct: bool) -> Self {
        let capacity = capacity.max(ALIGN).next_multiple_of(ALIGN);
        let memory = vec![0u8; capacity + ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN);
        let direct = try_direct
            && match set_direct(file, true) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "direct I/O refused; writing through the page cache");
                    false
                }
            };
        Self { memory, start, capacity, filled: 0, direct }
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `bytes`, writing each time the buffer is full.
    pub(super) fn write(&mut self, file: &mut File, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let taken = bytes.len().min(self.capacity - self.filled);
            let at = self.start + self.filled;
            self.memory[at..at + taken].copy_from_slice(&bytes[..taken]);
            self.filled += taken;
            bytes = &bytes[taken..];
            if self.filled == self.capacity {
                self.drain(file)?;
            }
        }
        Ok(())
    }

    /// Writes what is left and leaves `file` an ordinary (buffered) file again; later
    /// writes, if any, go through the page cache.
    pub(super) fn finish(&mut self, file: &mut File) -> io::Result<()> {
        self.drain(file)?;
        if self.direct {
            self.direct = false;
            set_direct(file, false)?;
            self.drain(file)?;
        }
        Ok(())
    }

    /// Writes the buffered bytes: all of them, or in direct mode the whole blocks among them
    /// (the rest moves to the buffer's start). A direct write refused midway, which a file
    /// system may do for a reason `fcntl` did not foresee, is finished buffered.
    fn drain(&mut self, file: &mut File) -> io::Result<()> {
        let ready = if self.direct { self.filled / ALIGN * ALIGN } else { self.filled };
        let window = self.start..self.start + self.filled;
        let mut written = 0;
        while written < ready {
            match file.write(&self.memory[window.start + written..window.start + ready]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && Errno::from_io_error(&e) == Some(Errno::INVAL) => {
                    tracing::debug!(error = %e, "a direct write was refused; writing through the page cache");
                    self.direct = false;
                    set_direct(file, false)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.memory.copy_within(window.start + ready..window.end, self.start);
        self.filled -= ready;
        Ok(())
    }
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let wanted = if on { flags | OFlags::DIRECT } else { flags - OFlags::DIRECT };
    if wanted != flags {
        rustix::fs::fcntl_setfl(file, wanted)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn written_through(sizes: &[usize], capacity: usize, try_direct: bool) -> (Vec<u8>, Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::options().create_new(true).write(true).open(&path).unwrap();
        let mut writer = DirectWriter::with_direct(&file, capacity, try_direct);
        let direct = writer.is_direct();
        let mut expected = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..size).map(|b| (b * 31 + i * 7) as u8).collect();
            writer.write(&mut file, &chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        writer.finish(&mut file).unwrap();
        assert!(!rustix::fs::fcntl_getfl(&file).unwrap().contains(OFlags::DIRECT), "left in direct mode");
        drop(file);
        let mut actual = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut actual).unwrap();
        (expected, actual, direct)
    }

    #[test]
    fn every_byte_arrives_in_order_whatever_the_chunking() {
        for (sizes, capacity) in [
            (vec![1_010_466], 256 * 1024),
            (vec![7; 1000], 8192),
            (vec![4096, 4096, 1], 4096),
            (vec![100_000, 3, 65_536, 12_289], 16 * 1024),
            (vec![], 4096),
            (vec![1], 1),
        ] {
            for try_direct in [true, false] {
                let (expected, actual, _) = written_through(&sizes, capacity, try_direct);
                assert_eq!(actual.len(), expected.len(), "chunks {sizes:?}, direct {try_direct}");
                assert!(actual == expected, "chunks {sizes:?}, direct {try_direct}: content differs");
            }
        }
    }

    #[test]
    fn the_common_local_file_systems_take_direct_writes() {
        const EXT4: i64 = 0xEF53;
        const XFS: i64 = 0x5846_5342;
        let dir = tempfile::tempdir().unwrap();
        let kind = rustix::fs::statfs(dir.path()).unwrap().f_type as i64;
        if kind != EXT4 && kind != XFS {
            eprintln!("skipped: the temp dir is on file system {kind:#x}, neither ext4 nor xfs");
            return;
        }
        let (_, _, direct) = written_through(&[10], 4096, true);
        assert!(direct, "ext4 and xfs support O_DIRECT, yet the writer fell back");
    }
}
