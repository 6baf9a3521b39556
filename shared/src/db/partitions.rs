//! The monthly partitions of `storage_access_logs` (migration 0021): which exist, making one
//! (with the default partition's rows of its month), dropping one. DDL takes no bind
//! parameters, so names and bounds are written into the statements; they come from
//! `shared::maintenance::partitions`, which makes them from dates, never from input.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor};

/// The partition that catches rows whose month has no partition of its own.
pub const DEFAULT_PARTITION: &str = "storage_access_logs_default";

/// The advisory lock that serialises partition maintenance ("SLOGPART" in ASCII): two
/// workers running the purge at once act on one month in turn, and the second finds the
/// first one's work done.
const LOCK_KEY: i64 = 0x534c_4f47_5041_5254;

/// Starts partition work in the transaction of `conn`: from now on a wait for any lock ends
/// in an error after `lock_timeout_ms` (the transaction is then rolled back whole), and the
/// partition maintenance lock is held until it ends.
pub async fn lock(conn: &mut PgConnection, lock_timeout_ms: u64) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{lock_timeout_ms}ms"))
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK_KEY).execute(&mut *conn).await?;
    Ok(())
}

/// Names of the partitions of the access log, the default one included, sorted.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'storage_access_logs'::regclass ORDER BY 1",
    )
    .fetch_all(db)
    .await
}

/// Whether `name` is a partition of the access log.
pub async fn exists(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                        WHERE i.inhparent = 'storage_access_logs'::regclass AND c.relname = $1)",
    )
    .bind(name)
    .fetch_one(db)
    .await
}

/// Makes partition `name` for `[from, to)` in the transaction of `conn`, moving the rows of
/// that range out of the default partition into it; returns how many moved. The table is
/// made apart and then attached, which locks the parent far more lightly than `CREATE
/// TABLE … PARTITION OF`: inserts and reads of other months go on meanwhile. Inserts into
/// the default partition wait until the end, since one of this range would make the
/// attach fail.
pub async fn create(conn: &mut PgConnection, name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> sqlx::Result<u64> {
    let name = plain(name)?;
    sqlx::query("LOCK TABLE storage_access_logs_default IN SHARE MODE").execute(&mut *conn).await?;
    sqlx::query(AssertSqlSafe(format!(
        r#"CREATE TABLE "{name}" (LIKE storage_access_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"#
    )))
    .execute(&mut *conn)
    .await?;
    let moved = sqlx::query(AssertSqlSafe(format!(
        r#"WITH moved AS (DELETE FROM storage_access_logs_default WHERE created_at >= $1 AND created_at < $2
                          RETURNING *)
           INSERT INTO "{name}" SELECT * FROM moved"#
    )))
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let bound = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    sqlx::query(AssertSqlSafe(format!(
        r#"ALTER TABLE storage_access_logs ATTACH PARTITION "{name}" FOR VALUES FROM ('{}') TO ('{}')"#,
        bound(from),
        bound(to),
    )))
    .execute(&mut *conn)
    .await?;
    Ok(moved)
}

/// Drops partition `name` and its rows at once: no row-by-row delete, nothing left for
/// vacuum. Waits (within the lock timeout) for readers of the log to finish.
pub async fn drop_partition(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    let name = plain(name)?;
    sqlx::query(AssertSqlSafe(format!(r#"DROP TABLE "{name}""#))).execute(&mut *conn).await?;
    Ok(())
}

/// Rows in the default partition; none while partitions are made ahead in time.
pub async fn default_rows(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM storage_access_logs_default").fetch_one(db).await
}

/// `name` if it is a plain lower-case identifier, the only kind written into DDL here (the
/// bounds are formatted from dates).
fn plain(name: &str) -> sqlx::Result<&str> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(name) } else { Err(sqlx::Error::InvalidArgument(format!("not a partition name: {name:?}"))) }
}
