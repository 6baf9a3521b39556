//! Keeps the serving cache of this replica in step with the database: PostgreSQL triggers
//! (migration 0005) send `NOTIFY storage_files_changed, '<image id>'` when anything serving
//! depends on changes, and this task drops that image from the cache. Every replica listens,
//! so a deletion or a change of visibility takes effect everywhere within milliseconds.

use std::sync::Arc;
use std::time::Duration;

use shared::model::ImageId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::cache::ServingCache;

/// The channel the triggers notify.
pub const CHANNEL: &str = "storage_files_changed";
/// Pause before listening again after the connection failed.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Invalidates cache entries as notifications arrive, until shut down. Whenever listening
/// (re)starts the whole cache is cleared, since changes made while nobody listened are lost.
pub async fn run(db: PgPool, cache: Arc<ServingCache>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() && !db.is_closed() {
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            listener = listen(&db) => listener,
        };
        match listener {
            Ok(mut listener) => {
                cache.invalidate_all();
                tracing::debug!("listening for image changes");
                relay(&mut listener, &cache, &shutdown).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for image changes; retrying (cache entries expire meanwhile)");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}

async fn listen(db: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies notifications until the connection fails or shutdown.
async fn relay(listener: &mut PgListener, cache: &ServingCache, shutdown: &CancellationToken) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => match notification.payload().parse::<Uuid>() {
                Ok(id) => cache.invalidate(ImageId(id)),
                Err(_) => cache.invalidate_all(),
            },
            // The connection dropped and sqlx re-established it: notifications in between are lost.
            Ok(None) => {
                tracing::warn!("the image change listener reconnected; clearing the serving cache");
                cache.invalidate_all();
            }
            Err(error) => {
                tracing::warn!(error = %error, "the image change listener failed");
                cache.invalidate_all();
                return;
            }
        }
    }
}
