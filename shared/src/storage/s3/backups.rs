//! What the backup tree needs of a bucket (`storage.backupS3`): archives and manifests
//! uploaded from a worker's staged files, read back as streams, measured, found by day and
//! backup, and a backup's objects deleted. Objects are named `{prefix}/{relative path}`,
//! the layout of the local backup tree (`{YYYY-MM-DD}/{backup_id}/…`).
//!
//! A bucket has no folders: a day or a backup is a key prefix, listed with `/` as the
//! delimiter, and removing a backup deletes every object under its prefix.

use std::io::{self, Read};

use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{CONCURRENT_LOOKUPS, PARTS_IN_FLIGHT, S3Objects, UPLOAD_PART_BYTES, from_writer, to_io};
use crate::storage::ObjectReader;

impl S3Objects {
    /// Uploads a staged file as the object `relative`, replacing it: in one request when
    /// small, as a multipart upload otherwise, which the store makes visible only once
    /// complete (so a reader never sees half an archive).
    pub(in crate::storage) async fn upload_file_as(
        &self,
        mut source: tokio::fs::File,
        relative: &str,
    ) -> io::Result<()> {
        let mut sink = BufWriter::with_capacity(self.store.clone(), self.path(relative), UPLOAD_PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        match tokio::io::copy(&mut source, &mut sink).await {
            Ok(_) => sink.shutdown().await.map_err(from_writer),
            Err(error) => {
                // Nothing becomes visible: the parts sent so far are discarded.
                let _ = sink.abort().await;
                Err(from_writer(error))
            }
        }
    }

    /// A blocking reader of the object `relative`. The GET is sent at once, on the runtime;
    /// the first read waits for its answer (a missing object is a `NotFound` error then), so
    /// that opening does not block and works on any thread of the runtime.
    pub(in crate::storage) fn open_object_blocking(&self, relative: &str) -> PendingObject {
        let handle = Handle::current();
        let (objects, path) = (self.clone(), self.path(relative));
        let request = handle.spawn(async move {
            let result = objects.store.get(&path).await.map_err(to_io)?;
            let len = result.range.end - result.range.start;
            let stream = result.into_stream().map_err(to_io);
            Ok(ObjectReader { inner: Box::pin(StreamReader::new(stream)), len })
        });
        PendingObject { handle, state: Pending::Requested(request) }
    }

    /// Size of the object `relative` in bytes, `None` when there is none (a HEAD).
    pub(in crate::storage) async fn object_len(&self, relative: &str) -> io::Result<Option<u64>> {
        match self.store.head(&self.path(relative)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(to_io(error)),
        }
    }

    /// Deletes every object under `{relative}/`, in the store's bulk requests as the listing
    /// goes; returns how many went.
    pub(in crate::storage) async fn remove_folder(&self, relative: &str) -> io::Result<u64> {
        let locations = self.store.list(Some(&self.path(relative))).map_ok(|meta| meta.location).boxed();
        let deleted = self.store.delete_stream(locations).try_fold(0, |count, _| async move { Ok(count + 1) }).await;
        deleted.map_err(to_io)
    }

    /// `{day}/{backup}/{manifest}` of every backup prefix holding the object `manifest`,
    /// oldest day first: the day prefixes, then each day's backup prefixes (delimiter
    /// listings), then a HEAD of each backup's manifest.
    pub(in crate::storage) async fn backup_manifests(&self, manifest: &str) -> io::Result<Vec<String>> {
        let days = self.folders(None).await?;
        let backups: Vec<Vec<String>> = futures::stream::iter(days)
            .map(|day| async move {
                let backups = self.folders(Some(&day)).await?;
                io::Result::Ok(backups.into_iter().map(|backup| format!("{day}/{backup}")).collect())
            })
            .buffered(CONCURRENT_LOOKUPS)
            .try_collect()
            .await?;
        let found: Vec<Option<String>> = futures::stream::iter(backups.into_iter().flatten())
            .map(|backup| async move {
                let path = format!("{backup}/{manifest}");
                io::Result::Ok(self.exists_at(self.path(&path)).await?.then_some(path))
            })
            .buffered(CONCURRENT_LOOKUPS)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Names of the prefixes right under `{prefix}/{folder}/` (under the prefix itself for
    /// `None`), sorted, leaving out those starting with a dot as the local tree does.
    async fn folders(&self, folder: Option<&str>) -> io::Result<Vec<String>> {
        let parent = match folder {
            Some(folder) => Some(self.path(folder)),
            None => (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str())),
        };
        let listing = self.store.list_with_delimiter(parent.as_ref()).await.map_err(to_io)?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename())
            .filter(|name| !name.starts_with('.'))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A blocking reader of an object whose GET is under way (see
/// [`S3Objects::open_object_blocking`]); read it on a blocking thread of the runtime.
pub(in crate::storage) struct PendingObject {
    handle: Handle,
    state: Pending,
}

enum Pending {
    Requested(JoinHandle<io::Result<ObjectReader>>),
    Streaming(SyncIoBridge<ObjectReader>),
    /// The GET failed: its error's kind and text, for every later read.
    Failed(io::ErrorKind, String),
}

impl Read for PendingObject {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if let Pending::Requested(request) = &mut self.state {
            let answer = self.handle.block_on(request).unwrap_or_else(|error| Err(io::Error::other(error)));
            self.state = match answer {
                Ok(reader) => Pending::Streaming(SyncIoBridge::new_with_handle(reader, self.handle.clone())),
                Err(error) => {
                    self.state = Pending::Failed(error.kind(), error.to_string());
                    return Err(error);
                }
            };
        }
        match &mut self.state {
            Pending::Streaming(reader) => reader.read(buffer),
            Pending::Failed(kind, reason) => Err(io::Error::new(*kind, reason.clone())),
            Pending::Requested(_) => unreachable!("answered above"),
        }
    }
}

impl Drop for PendingObject {
    fn drop(&mut self) {
        if let Pending::Requested(request) = &self.state {
            request.abort(); // never read: the answer is not wanted
        }
    }
}
