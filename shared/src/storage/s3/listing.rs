//! What the file audit needs from a bucket: the objects under a folder, listed page by page;
//! moving an orphan into quarantine; deleting old quarantine days and old staged objects.
//!
//! A bucket has no folders and no rename: a folder is a key prefix (listed with `/` as the
//! delimiter to see its day prefixes), and a move is a server-side copy then a delete of
//! the source, which the store makes without the bytes passing through this process.

use std::io;
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::{BoxStream, TryChunksError};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::{S3Objects, to_io};
use crate::storage::ScannedFile;

impl S3Objects {
    /// The objects under `{prefix}/{folder}/`, in batches of at most `batch_len`, their
    /// `last_modified` as the time they were written. The store answers a page of up to
    /// 1,000 keys at a time and the next is asked for only once a batch is taken, so memory
    /// stays bounded whatever the bucket holds.
    pub(in crate::storage) fn scan(
        &self,
        folder: &str,
        batch_len: usize,
    ) -> BoxStream<'static, io::Result<Vec<ScannedFile>>> {
        let root = self.root_prefix();
        self.store
            .list(Some(&self.path(folder)))
            .map_ok(move |meta| ScannedFile {
                relative: relative_to(&root, &meta.location).into(),
                modified: SystemTime::from(meta.last_modified),
            })
            .try_chunks(batch_len)
            .map_err(|TryChunksError(_, error)| to_io(error))
            .boxed()
    }

    /// Moves the object `relative` to `destination` (both relative to the prefix), or to
    /// `destination.{uuid}` if an object is there already (the same path orphaned twice in
    /// one day: both are kept); returns where it went, `None` if the source vanished
    /// meanwhile.
    pub(in crate::storage) async fn quarantine(&self, relative: &str, destination: &str) -> io::Result<Option<String>> {
        let mut destination = destination.to_owned();
        if self.exists_at(self.path(&destination)).await? {
            destination = format!("{destination}.{}", uuid::Uuid::new_v4().simple());
        }
        let source = self.path(relative);
        match self.store.copy(&source, &self.path(&destination)).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(to_io(error)),
        }
        // The copy is complete before the source goes: a failure here leaves the orphan in
        // both places, and the next audit moves it again under a suffixed name.
        match self.store.delete(&source).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Some(destination)),
            Err(error) => Err(to_io(error)),
        }
    }

    /// Deletes every object of the day prefixes `{prefix}/{folder}/{YYYY-MM-DD}/` before
    /// `oldest_kept`; returns how many went. Prefixes that are not a day (an operator's
    /// own) and objects directly under `folder` are left alone.
    pub(in crate::storage) async fn remove_days_before(&self, folder: &str, oldest_kept: NaiveDate) -> io::Result<u64> {
        let listing = self.store.list_with_delimiter(Some(&self.path(folder))).await.map_err(to_io)?;
        let mut removed = 0;
        for day in listing.common_prefixes {
            let Some(date) = day.filename().and_then(|name| NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()) else {
                continue;
            };
            if date < oldest_kept {
                removed += self.remove_listed(self.store.list(Some(&day))).await?;
            }
        }
        Ok(removed)
    }

    /// Deletes the objects under `{prefix}/{folder}/` last written before `written_before`;
    /// returns how many went.
    pub(in crate::storage) async fn remove_written_before(
        &self,
        folder: &str,
        written_before: DateTime<Utc>,
    ) -> io::Result<u64> {
        let stale = self.store.list(Some(&self.path(folder))).try_filter(move |meta| {
            let stale = meta.last_modified < written_before;
            async move { stale }
        });
        self.remove_listed(stale.boxed()).await
    }

    /// Deletes the objects a listing yields, in the store's bulk requests, as the listing
    /// goes.
    async fn remove_listed(&self, listing: BoxStream<'static, object_store::Result<ObjectMeta>>) -> io::Result<u64> {
        let locations = listing.map_ok(|meta| meta.location).boxed();
        let deleted = self.store.delete_stream(locations).try_fold(0, |count, _| async move { Ok(count + 1) }).await;
        deleted.map_err(to_io)
    }

    /// The deployment's prefix as it starts every key, `/` included; empty for none.
    fn root_prefix(&self) -> String {
        if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
    }
}

/// The key of `location` without the deployment's prefix: the path the database stores.
fn relative_to(root_prefix: &str, location: &ObjectPath) -> String {
    let key: &str = location.as_ref();
    key.strip_prefix(root_prefix).unwrap_or(key).to_owned()
}
