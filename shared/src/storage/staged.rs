//! Staged writes: a temp file in the storage's own file system that becomes an object only
//! when [`super::Storage::commit`] renames it into place, and the writer that streams an
//! upload into one on a blocking thread.

use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::direct::DirectWriter;

/// Bytes of a stream gathered (by reference, not copied) before they are written to a
/// staged file on a blocking thread: each batch is one hop to that thread, and network
/// chunks can be small.
pub(super) const WRITER_BATCH_BYTES: usize = 256 * 1024;

/// A temp file in the storage's own file system, removed on drop unless committed.
#[derive(Debug)]
pub struct StagedFile {
    pub(super) file: Option<std::fs::File>,
    pub(super) path: Option<PathBuf>,
    len: u64,
}

impl StagedFile {
    pub(super) fn new(file: std::fs::File, path: PathBuf) -> Self {
        Self { file: Some(file), path: Some(path), len: 0 }
    }

    /// Appends `bytes` (for small, whole objects such as thumbnails; streams go through
    /// [`StagedFile::into_writer`]).
    pub async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::from_std(self.file.take().expect("not committed"));
        let written = async {
            file.write_all(bytes).await?;
            file.flush().await
        }
        .await;
        self.file = Some(file.into_std().await);
        written?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the staged bytes back from the start, blocking (header probing runs on a
    /// blocking thread).
    pub fn reader(&self) -> io::Result<impl io::Read + io::Seek + Send + use<>> {
        std::fs::File::open(self.path.as_ref().expect("not committed"))
    }

    /// Turns the file into the destination of a stream whose chunks are written, and also
    /// written to `tee` (a hasher, say), on a blocking thread: the thread hops once per
    /// batch of chunks rather than once per write, and the file is written past the page
    /// cache where the file system allows it (see the `direct` module).
    pub fn into_writer<T: Write + Send + 'static>(self, tee: T) -> StagedWriter<T> {
        let file = self.file.as_ref().expect("not committed");
        let direct = DirectWriter::new(file, WRITER_BATCH_BYTES);
        StagedWriter {
            idle: Some(Sink { staged: self, tee, direct }),
            writing: None,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }
}

/// Blocking appends, for a blocking thread (a restore decompresses straight into the
/// staged file).
impl Write for StagedFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.as_mut().expect("not committed").write(bytes)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

/// The sending end of [`StagedFile::into_writer`].
///
/// Chunks are gathered, by reference, into batches of [`WRITER_BATCH_BYTES`]; one batch is
/// written on a blocking thread while the next one fills, so receiving and writing overlap
/// and at most about three batches of one upload are in memory (two of them in the network
/// chunks, one in the aligned buffer of direct I/O). No thread is held while the client is
/// slow to send. The writing thread owns the staged file: if the writer is dropped midway,
/// the file is dropped, and so removed, with the thread's unclaimed result.
#[derive(Debug)]
pub struct StagedWriter<T> {
    /// File and tee while no batch is being written.
    idle: Option<Sink<T>>,
    /// The batch being written, which holds file and tee meanwhile.
    writing: Option<JoinHandle<io::Result<Sink<T>>>>,
    /// Chunks not handed over yet, and their size.
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

/// What the writing thread works on.
#[derive(Debug)]
struct Sink<T> {
    staged: StagedFile,
    tee: T,
    direct: DirectWriter,
}

impl<T: Write + Send + 'static> StagedWriter<T> {
    /// Queues a chunk; waits when a full batch is ready and the previous one is still being
    /// written.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= WRITER_BATCH_BYTES {
            self.hand_over(false).await?;
        }
        Ok(())
    }

    /// Writes what is left and returns the staged file (not yet synced: that is
    /// [`Storage::commit`]'s job) and the tee.
    pub async fn finish(mut self) -> io::Result<(StagedFile, T)> {
        self.hand_over(true).await?;
        let Sink { staged, tee, .. } = self.wait().await?;
        Ok((staged, tee))
    }

    /// Removes the staged file, once the batch being written (if any) is done, so that a
    /// refused upload has left nothing behind by the time it is answered. (Merely dropping
    /// the writer removes it too, but possibly a little later.)
    pub async fn discard(mut self) {
        self.pending.clear();
        drop(self.wait().await);
    }

    /// Hands the pending chunks to a blocking thread; `last` also writes the bytes the
    /// direct-I/O buffer still holds.
    async fn hand_over(&mut self, last: bool) -> io::Result<()> {
        if self.pending.is_empty() && !last {
            return Ok(());
        }
        let mut sink = self.wait().await?;
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let Sink { staged, tee, direct } = &mut sink;
            let file = staged.file.as_mut().expect("not committed");
            for chunk in batch {
                tee.write_all(&chunk)?;
                direct.write(file, &chunk)?;
                staged.len += chunk.len() as u64;
            }
            if last {
                direct.finish(file)?;
            }
            Ok(sink)
        }));
        Ok(())
    }

    /// Takes file and tee back, once the batch being written (if any) is done.
    async fn wait(&mut self) -> io::Result<Sink<T>> {
        match self.writing.take() {
            Some(writing) => writing.await.map_err(io::Error::other)?,
            None => self.idle.take().ok_or_else(|| io::Error::other("the staged file's writer failed before")),
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a leftover is removed by the start-up sweep of the staging area.
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "could not remove a staged file");
            }
        }
    }
}
