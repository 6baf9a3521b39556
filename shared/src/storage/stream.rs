//! Objects that arrive as a stream and are named only once they are in (an upload's owner
//! and format are known after its bytes and form fields): on the local tree a staged file
//! renamed into place, on the s3 backend a staged object copied into place by the store.
//! Either way nothing is visible under the object's name until it is complete.

use std::io::{self, Read, Seek, Write};

use bytes::Bytes;

use super::s3::{S3StreamWriter, StagedObject};
use super::{Objects, StagedFile, StagedWriter, Storage, StorageKey};

/// A blocking reader that can also seek (a header probe jumps to the end and back).
pub trait ReadSeek: Read + Seek + Send {}
impl<R: Read + Seek + Send> ReadSeek for R {}

/// The sending end of [`Storage::stream`]: chunks go to the object, and also to `tee` (a
/// hasher, say).
#[derive(Debug)]
pub struct StreamWriter<T> {
    inner: Writer<T>,
}

#[derive(Debug)]
enum Writer<T> {
    Local(StagedWriter<T>),
    S3 { writer: S3StreamWriter, tee: T },
}

impl<T: Write + Send + 'static> StreamWriter<T> {
    /// Takes a chunk; waits while the previous ones are being written (the back-pressure
    /// that keeps an upload's memory bounded).
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        match &mut self.inner {
            Writer::Local(writer) => writer.write(chunk).await,
            Writer::S3 { writer, tee } => {
                tee.write_all(&chunk)?;
                writer.write(chunk).await
            }
        }
    }

    /// Writes what is left and returns the complete, still unnamed object and the tee.
    pub async fn finish(self) -> io::Result<(Streamed, T)> {
        match self.inner {
            Writer::Local(writer) => {
                let (staged, tee) = writer.finish().await?;
                Ok((Streamed { inner: Received::Local(staged) }, tee))
            }
            Writer::S3 { writer, tee } => Ok((Streamed { inner: Received::S3(writer.finish().await?) }, tee)),
        }
    }

    /// Drops what was received, once any write in progress is done, so that a refused
    /// upload has left nothing behind by the time it is answered.
    pub async fn discard(self) {
        match self.inner {
            Writer::Local(writer) => writer.discard().await,
            Writer::S3 { writer, .. } => writer.abort().await,
        }
    }
}

/// A completely received object, not yet named: [`Storage::commit_streamed`] names it,
/// [`Streamed::discard`] (or dropping it) removes it.
#[derive(Debug)]
pub struct Streamed {
    inner: Received,
}

#[derive(Debug)]
enum Received {
    Local(StagedFile),
    S3(StagedObject),
}

impl Streamed {
    /// Bytes received.
    pub fn len(&self) -> u64 {
        match &self.inner {
            Received::Local(staged) => staged.len(),
            Received::S3(staged) => staged.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the received bytes from the start; blocking, for a blocking thread (header
    /// probing). On the s3 backend the first and last kilobytes come from memory and the
    /// rest as ranged reads.
    pub fn reader(&self) -> io::Result<Box<dyn ReadSeek>> {
        match &self.inner {
            Received::Local(staged) => Ok(Box::new(staged.reader()?)),
            Received::S3(staged) => Ok(Box::new(staged.reader())),
        }
    }

    /// Removes the received bytes now.
    pub async fn discard(self) {
        match self.inner {
            Received::Local(staged) => drop(staged),
            Received::S3(staged) => staged.discard().await,
        }
    }
}

impl Storage {
    /// Starts receiving an object whose name is decided once it is in, writing every chunk
    /// to `tee` as well.
    pub async fn stream<T: Write + Send + 'static>(&self, tee: T) -> io::Result<StreamWriter<T>> {
        let inner = match &self.objects {
            Objects::Local => Writer::Local(self.stage().await?.into_writer(tee)),
            Objects::S3(objects) => Writer::S3 { writer: objects.stream(), tee },
        };
        Ok(StreamWriter { inner })
    }

    /// Names a received object `key`, replacing an existing one atomically: a durable
    /// rename on the local tree, a copy inside the store on s3.
    pub async fn commit_streamed(&self, streamed: Streamed, key: &StorageKey) -> io::Result<()> {
        match (streamed.inner, &self.objects) {
            (Received::Local(staged), _) => self.commit(staged, key).await,
            (Received::S3(staged), Objects::S3(objects)) => objects.place(staged, key).await,
            (Received::S3(_), Objects::Local) => unreachable!("a storage streams into its own backend"),
        }
    }
}
