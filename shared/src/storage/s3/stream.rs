//! Uploads streamed into the bucket with no local file: chunks gather into parts in memory
//! (at most one part being filled and one being sent per upload, and at most
//! `storage.s3.uploadBufferBytes` across the process), sent as a multipart upload once the
//! object outgrows one part, or in one request at the end otherwise. The object is staged
//! under `.staging/` until its owner and format are known, then copied into place by the
//! store (a copy inside the store: no byte comes back through the API).

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{S3Objects, to_io, unavailable};

/// Part size of multipart uploads, and the size below which an object is sent in one
/// request: the smallest part S3 accepts, so an upload holds as little as it can.
pub const UPLOAD_PART_BYTES: usize = 5 * 1024 * 1024;
/// How long an upload waits for room in the process's upload buffer before it answers 503:
/// parts are sent in well under this unless the store is overwhelmed.
pub const UPLOAD_BUFFER_WAIT: Duration = Duration::from_secs(10);
/// The first bytes of an upload, kept to probe its header without asking the store.
const HEAD_BYTES: usize = 64 * 1024;
/// The last bytes of an upload, kept to check that the image is complete.
const TAIL_BYTES: usize = 4 * 1024;
/// Bytes fetched per ranged read when a probe reads past the kept head.
const RANGE_READ_BYTES: u64 = 256 * 1024;

/// The bytes of uploads held in memory across the process, as semaphore permits (one per
/// byte, taken as chunks arrive and given back once the part holding them is sent).
pub(in crate::storage) type UploadBuffer = Arc<Semaphore>;

/// An upload streaming into a staged object.
#[derive(Debug)]
pub(in crate::storage) struct S3StreamWriter {
    objects: S3Objects,
    path: ObjectPath,
    /// Chunks of the part being filled, and the buffer bytes they hold.
    part: Vec<Bytes>,
    part_len: usize,
    part_permit: Option<OwnedSemaphorePermit>,
    /// Started once the object outgrows one part.
    upload: Option<Box<dyn MultipartUpload>>,
    /// The part being sent, which holds its buffer bytes until it is.
    sending: Option<JoinHandle<object_store::Result<()>>>,
    len: u64,
    head: Vec<u8>,
    tail: VecDeque<u8>,
}

impl S3StreamWriter {
    pub(in crate::storage) fn new(objects: S3Objects, path: ObjectPath) -> Self {
        Self {
            objects,
            path,
            part: Vec::new(),
            part_len: 0,
            part_permit: None,
            upload: None,
            sending: None,
            len: 0,
            head: Vec::with_capacity(HEAD_BYTES),
            tail: VecDeque::with_capacity(TAIL_BYTES),
        }
    }

    /// Takes `chunk` into the part being filled (waiting for room in the process's buffer)
    /// and sends the part once it is full.
    pub(in crate::storage) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let wanted = u32::try_from(chunk.len()).map_err(io::Error::other)?;
        let budget = Arc::clone(&self.objects.upload_buffer);
        let permit = tokio::time::timeout(UPLOAD_BUFFER_WAIT, budget.acquire_many_owned(wanted))
            .await
            .map_err(|_| unavailable("the upload buffer stayed full; the store is not taking parts fast enough"))?
            .map_err(io::Error::other)?;
        match &mut self.part_permit {
            Some(held) => held.merge(permit),
            None => self.part_permit = Some(permit),
        }
        self.keep_head_and_tail(&chunk);
        self.len += chunk.len() as u64;
        self.part_len += chunk.len();
        self.part.push(chunk);
        if self.part_len >= UPLOAD_PART_BYTES {
            self.send_part().await?;
        }
        Ok(())
    }

    fn keep_head_and_tail(&mut self, chunk: &[u8]) {
        let room = HEAD_BYTES - self.head.len();
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        let last = &chunk[chunk.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.tail.len() + last.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(last);
    }

    /// Sends the filled part once the previous one is sent: one part in flight per upload.
    async fn send_part(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            self.upload = Some(self.objects.store.put_multipart(&self.path).await.map_err(to_io)?);
        }
        self.wait_for_sending().await?;
        let payload: PutPayload = std::mem::take(&mut self.part).into_iter().collect();
        let permit = self.part_permit.take();
        self.part_len = 0;
        let sent = self.upload.as_mut().expect("started above").put_part(payload);
        self.sending = Some(tokio::spawn(async move {
            let result = sent.await;
            drop(permit);
            result
        }));
        Ok(())
    }

    async fn wait_for_sending(&mut self) -> io::Result<()> {
        match self.sending.take() {
            Some(sending) => sending.await.map_err(io::Error::other)?.map_err(to_io),
            None => Ok(()),
        }
    }

    /// Sends what is left and completes the object, which only now becomes visible.
    pub(in crate::storage) async fn finish(mut self) -> io::Result<StagedObject> {
        let finished = self.complete().await;
        if let Err(error) = finished {
            self.abort().await;
            return Err(error);
        }
        let head = std::mem::take(&mut self.head);
        let tail: Vec<u8> = self.tail.drain(..).collect();
        Ok(StagedObject { objects: self.objects.clone(), path: Some(self.path.clone()), len: self.len, head, tail })
    }

    async fn complete(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            let payload: PutPayload = std::mem::take(&mut self.part).into_iter().collect();
            self.objects.store.put(&self.path, payload).await.map_err(to_io)?;
            self.part_permit = None;
            return Ok(());
        }
        if self.part_len > 0 {
            self.send_part().await?;
        }
        self.wait_for_sending().await?;
        self.upload.as_mut().expect("started").complete().await.map_err(to_io)?;
        self.upload = None;
        Ok(())
    }

    /// Gives up: the parts sent so far are discarded by the store and nothing becomes
    /// visible.
    pub(in crate::storage) async fn abort(mut self) {
        if let Some(sending) = self.sending.take() {
            sending.abort();
        }
        if let Some(mut upload) = self.upload.take()
            && let Err(error) = upload.abort().await
        {
            // The store's lifecycle rule for incomplete uploads removes the parts.
            tracing::warn!(error = %error, "could not abort an upload into the store");
        }
    }
}

/// Aborting needs a request: a writer dropped midway (the client went away) aborts its
/// multipart upload on a task of its own.
impl Drop for S3StreamWriter {
    fn drop(&mut self) {
        if let Some(sending) = self.sending.take() {
            sending.abort();
        }
        if let Some(mut upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = upload.abort().await {
                    tracing::warn!(error = %error, "could not abort an upload into the store");
                }
            });
        }
    }
}

/// A complete upload under `.staging/`, waiting to be copied into place or discarded.
#[derive(Debug)]
pub(in crate::storage) struct StagedObject {
    objects: S3Objects,
    /// `None` once copied into place or deleted.
    path: Option<ObjectPath>,
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl StagedObject {
    pub(in crate::storage) fn len(&self) -> u64 {
        self.len
    }

    /// A blocking reader of the object that serves its first and last bytes from memory
    /// and asks the store for ranges in between: a header probe reads a few kilobytes of
    /// an object of many megabytes. For a blocking thread.
    pub(in crate::storage) fn reader(&self) -> RangedReader {
        RangedReader {
            objects: self.objects.clone(),
            path: self.path.clone().expect("a staged object is read before it is placed"),
            len: self.len,
            head: self.head.clone(),
            tail: self.tail.clone(),
            block: Vec::new(),
            block_start: 0,
            position: 0,
        }
    }

    /// Copies the object to `destination` inside the store, then removes the staged one.
    pub(in crate::storage) async fn place(mut self, destination: &ObjectPath) -> io::Result<()> {
        let path = self.path.take().expect("placed once");
        let store = &self.objects.store;
        if let Err(error) = store.copy(&path, destination).await {
            self.path = Some(path);
            self.discard().await;
            return Err(to_io(error));
        }
        if let Err(error) = store.delete(&path).await {
            // Harmless but for the space: the file audit removes stale staged objects.
            tracing::warn!(error = %error, "could not remove a staged upload from the store");
        }
        Ok(())
    }

    /// Deletes the staged object now (dropping it deletes it too, on a task of its own).
    pub(in crate::storage) async fn discard(mut self) {
        if let Some(path) = self.path.take()
            && let Err(error) = self.objects.store.delete(&path).await
        {
            tracing::warn!(error = %error, "could not remove a staged upload from the store");
        }
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = Arc::clone(&self.objects.store);
            runtime.spawn(async move {
                if let Err(error) = store.delete(&path).await {
                    tracing::warn!(error = %error, "could not remove a staged upload from the store");
                }
            });
        }
    }
}

/// See [`StagedObject::reader`].
pub(in crate::storage) struct RangedReader {
    objects: S3Objects,
    path: ObjectPath,
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The last range fetched, and where it starts.
    block: Vec<u8>,
    block_start: u64,
    position: u64,
}

impl RangedReader {
    /// The bytes available in memory at the position, fetching a range when none are.
    fn available(&mut self) -> io::Result<&[u8]> {
        let position = self.position;
        if position >= self.len {
            return Ok(&[]);
        }
        if position < self.head.len() as u64 {
            return Ok(&self.head[position as usize..]);
        }
        let tail_start = self.len - self.tail.len() as u64;
        if position >= tail_start {
            return Ok(&self.tail[(position - tail_start) as usize..]);
        }
        let block_end = self.block_start + self.block.len() as u64;
        if !(self.block_start..block_end).contains(&position) {
            let end = (position + RANGE_READ_BYTES).min(tail_start);
            let options = GetOptions { range: Some(GetRange::Bounded(position..end)), ..GetOptions::default() };
            let store = Arc::clone(&self.objects.store);
            let path = self.path.clone();
            let fetched = tokio::runtime::Handle::current()
                .block_on(async move { store.get_opts(&path, options).await?.bytes().await });
            self.block = fetched.map_err(to_io)?.to_vec();
            self.block_start = position;
            if self.block.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the staged object is shorter than written"));
            }
        }
        Ok(&self.block[(position - self.block_start) as usize..])
    }
}

impl Read for RangedReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let available = self.available()?;
        let n = available.len().min(buffer.len());
        buffer[..n].copy_from_slice(&available[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for RangedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_upload_buffer_holds_a_part_being_filled_and_one_being_sent() {
        assert_eq!(crate::config::MIN_UPLOAD_BUFFER_BYTES, 2 * UPLOAD_PART_BYTES as u64);
    }
}
