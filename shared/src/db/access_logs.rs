//! The `storage_access_logs` table and the access counters of `storage_files`, written in
//! batches: one statement per table per batch, whatever the batch size. Identical requests
//! within a second share a row with their count (see [`fold_identical`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// The image the request was about, when it names one.
    pub image_id: Option<Uuid>,
    /// The authenticated caller; none for signed and public serving.
    pub actor_id: Option<Uuid>,
    /// What was asked, e.g. `serve_file` (the API's access log lists the actions).
    pub action: &'static str,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The HTTP status answered; a denial is a 401, 403, 404, 410 or 429 here.
    pub status: u16,
    /// Body bytes sent (0 for HEAD and 304).
    pub bytes_sent: u64,
    pub at: DateTime<Utc>,
    /// Whether the request read the image successfully, so that its `access_count` and
    /// `last_accessed` follow.
    pub counts_as_access: bool,
    /// The signed URL a successful serve used, so that its usage follows.
    pub signed_url: Option<SignedUrlUse>,
}

/// The fields of a signed URL that identify its `storage_signed_urls` row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignedUrlUse {
    pub image_id: Uuid,
    pub variant: String,
    /// `view` or `download`.
    pub access_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub key_id: String,
    pub url_generation: i32,
}

/// When a signed URL counts as possibly abused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Flagged once used more often than this.
    pub max_uses: i64,
    /// Flagged once used from more distinct client addresses than this.
    pub max_addresses: i32,
}

/// Writes `records` to `storage_access_logs`, adds their successful reads to
/// `storage_files.access_count` / `last_accessed` and their signed URL uses to
/// `storage_signed_urls`, flagging URLs beyond `limits`; on `conn` (run it in a transaction
/// so a retried batch is never counted twice).
pub async fn write_batch(conn: &mut PgConnection, records: &[AccessRecord], limits: AbuseLimits) -> sqlx::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let rows = fold_identical(records);
    let mut image_ids = Vec::with_capacity(rows.len());
    let mut actor_ids = Vec::with_capacity(rows.len());
    let mut actions = Vec::with_capacity(rows.len());
    let mut ips = Vec::with_capacity(rows.len());
    let mut user_agents = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut bytes = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut counts = Vec::with_capacity(rows.len());
    for row in rows {
        let first = row.first;
        image_ids.push(first.image_id);
        actor_ids.push(first.actor_id);
        actions.push(first.action.to_owned());
        ips.push(first.ip.map(|ip| ip.to_string()));
        user_agents.push(first.user_agent.clone());
        statuses.push(i16::try_from(first.status).unwrap_or(i16::MAX));
        bytes.push(row.bytes_sent);
        times.push(first.at);
        counts.push(row.count);
    }
    sqlx::query!(
        "INSERT INTO storage_access_logs
             (image_id, actor_id, action, ip_address, user_agent, status, bytes_sent, created_at, request_count)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[]::inet[], $5::text[], $6::int2[],
                              $7::int8[], $8::timestamptz[], $9::int4[])",
        &image_ids as &[Option<Uuid>],
        &actor_ids as &[Option<Uuid>],
        &actions,
        &ips as &[Option<String>],
        &user_agents as &[Option<String>],
        &statuses,
        &bytes,
        &times,
        &counts,
    )
    .execute(&mut *conn)
    .await?;

    count_image_accesses(conn, records).await?;
    count_signed_url_uses(conn, records, limits).await
}

/// One `storage_access_logs` row: the first of a run of identical requests and their totals.
#[derive(Debug)]
struct LogRow<'a> {
    first: &'a AccessRecord,
    count: i32,
    bytes_sent: i64,
}

/// Folds identical requests (same image, actor, action, address, user agent, status) within
/// the same second into one row, in the order of their first request. A hot thumbnail
/// served to the same client or CDN edge many times a second costs the database one row,
/// not one per request.
fn fold_identical(records: &[AccessRecord]) -> Vec<LogRow<'_>> {
    type Key<'a> = (Option<Uuid>, Option<Uuid>, &'a str, Option<IpAddr>, Option<&'a str>, u16, i64);
    let mut rows: Vec<LogRow<'_>> = Vec::new();
    let mut index: HashMap<Key<'_>, usize> = HashMap::with_capacity(records.len());
    for record in records {
        let key = (
            record.image_id,
            record.actor_id,
            record.action,
            record.ip,
            record.user_agent.as_deref(),
            record.status,
            record.at.timestamp(),
        );
        let bytes_sent = i64::try_from(record.bytes_sent).unwrap_or(i64::MAX);
        match index.get(&key) {
            Some(&slot) if rows[slot].count < i32::MAX => {
                let row = &mut rows[slot];
                row.count += 1;
                row.bytes_sent = row.bytes_sent.saturating_add(bytes_sent);
            }
            _ => {
                index.insert(key, rows.len());
                rows.push(LogRow { first: record, count: 1, bytes_sent });
            }
        }
    }
    rows
}

async fn count_image_accesses(conn: &mut PgConnection, records: &[AccessRecord]) -> sqlx::Result<()> {
    let accesses = count_accesses(records);
    if accesses.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(accesses.len());
    let mut counts = Vec::with_capacity(accesses.len());
    let mut lasts = Vec::with_capacity(accesses.len());
    for (id, (count, last)) in accesses {
        ids.push(id);
        counts.push(count);
        lasts.push(last);
    }
    // Ids are sorted (BTreeMap), so concurrent writers lock rows in the same order.
    sqlx::query!(
        "UPDATE storage_files f
         SET access_count = f.access_count + u.n, last_accessed = GREATEST(f.last_accessed, u.at)
         FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[]) AS u(id, n, at)
         WHERE f.id = u.id",
        &ids,
        &counts,
        &lasts,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Per signed URL used in the batch: how often, the latest use, the client addresses.
#[derive(Debug, Default, PartialEq, Eq)]
struct UrlUsage {
    uses: i64,
    last: Option<DateTime<Utc>>,
    addresses: BTreeSet<IpAddr>,
}

fn count_url_uses(records: &[AccessRecord]) -> BTreeMap<&SignedUrlUse, UrlUsage> {
    let mut usage: BTreeMap<&SignedUrlUse, UrlUsage> = BTreeMap::new();
    for record in records {
        let Some(url) = &record.signed_url else { continue };
        let entry = usage.entry(url).or_default();
        entry.uses += 1;
        entry.last = entry.last.max(Some(record.at));
        entry.addresses.extend(record.ip);
    }
    usage
}

async fn count_signed_url_uses(
    conn: &mut PgConnection,
    records: &[AccessRecord],
    limits: AbuseLimits,
) -> sqlx::Result<()> {
    let usage = count_url_uses(records);
    if usage.is_empty() {
        return Ok(());
    }
    let mut grants = GrantColumns::default();
    let mut uses = Vec::new();
    let mut lasts = Vec::new();
    let mut address_grants = GrantColumns::default();
    let mut addresses = Vec::new();
    for (url, counted) in &usage {
        grants.push(url);
        uses.push(counted.uses);
        lasts.push(counted.last.unwrap_or_else(Utc::now));
        for address in &counted.addresses {
            address_grants.push(url);
            addresses.push(address.to_string());
        }
    }
    let touched = sqlx::query_scalar!(
        "UPDATE storage_signed_urls s SET use_count = s.use_count + u.n, last_used = GREATEST(s.last_used, u.at)
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $8::int4[], $6::int8[],
                     $7::timestamptz[]) AS u(image_id, variant, access_type, expires_at, key_id, url_generation, n, at)
         WHERE (s.image_id, s.variant, s.access_type, s.expires_at, s.key_id, s.url_generation)
             = (u.image_id, u.variant, u.access_type, u.expires_at, u.key_id, u.url_generation)
         RETURNING s.id",
        &grants.image_ids,
        &grants.variants,
        &grants.access_types,
        &grants.expiries,
        &grants.key_ids,
        &uses,
        &lasts,
        &grants.generations,
    )
    .fetch_all(&mut *conn)
    .await?;
    // Addresses are kept up to one past the limit: enough to flag, bounded for URLs that
    // are shared widely.
    sqlx::query!(
        "WITH pairs AS (
             SELECT s.id, u.address::inet AS address
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $8::int4[],
                         $6::text[]) AS u(image_id, variant, access_type, expires_at, key_id, url_generation, address)
             JOIN storage_signed_urls s
               ON (s.image_id, s.variant, s.access_type, s.expires_at, s.key_id, s.url_generation)
                = (u.image_id, u.variant, u.access_type, u.expires_at, u.key_id, u.url_generation)
             WHERE s.distinct_ips <= $7
         ), added AS (
             INSERT INTO storage_signed_url_ips (url_id, ip_address) SELECT id, address FROM pairs
             ON CONFLICT DO NOTHING RETURNING url_id
         )
         UPDATE storage_signed_urls s SET distinct_ips = s.distinct_ips + a.n
         FROM (SELECT url_id, count(*)::int4 AS n FROM added GROUP BY url_id) a WHERE s.id = a.url_id",
        &address_grants.image_ids,
        &address_grants.variants,
        &address_grants.access_types,
        &address_grants.expiries,
        &address_grants.key_ids,
        &addresses,
        limits.max_addresses,
        &address_grants.generations,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE storage_signed_urls SET flagged_at = now(),
             flag_reason = CASE WHEN use_count > $2 THEN format('used %s times (limit %s)', use_count, $2)
                                ELSE format('used from %s addresses (limit %s)', distinct_ips, $3) END
         WHERE id = ANY($1) AND flagged_at IS NULL AND (use_count > $2 OR distinct_ips > $3)",
        &touched,
        limits.max_uses,
        limits.max_addresses,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The identifying fields of signed URLs, column by column, for `UNNEST`.
#[derive(Default)]
struct GrantColumns {
    image_ids: Vec<Uuid>,
    variants: Vec<String>,
    access_types: Vec<String>,
    expiries: Vec<DateTime<Utc>>,
    key_ids: Vec<String>,
    generations: Vec<i32>,
}

impl GrantColumns {
    fn push(&mut self, url: &SignedUrlUse) {
        self.image_ids.push(url.image_id);
        self.variants.push(url.variant.clone());
        self.access_types.push(url.access_type.to_owned());
        self.expiries.push(url.expires_at);
        self.key_ids.push(url.key_id.clone());
        self.generations.push(url.url_generation);
    }
}

/// Successful reads per image: how many, and the latest.
fn count_accesses(records: &[AccessRecord]) -> BTreeMap<Uuid, (i64, DateTime<Utc>)> {
    let mut accesses = BTreeMap::new();
    for record in records.iter().filter(|r| r.counts_as_access) {
        let Some(id) = record.image_id else { continue };
        let entry = accesses.entry(id).or_insert((0, record.at));
        entry.0 += 1;
        entry.1 = entry.1.max(record.at);
    }
    accesses
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn record(image: u128, at: i64, counts: bool) -> AccessRecord {
        AccessRecord {
            image_id: Some(Uuid::from_u128(image)),
            actor_id: None,
            action: "serve_file",
            ip: None,
            user_agent: None,
            status: if counts { 200 } else { 403 },
            bytes_sent: 0,
            at: Utc.timestamp_opt(at, 0).unwrap(),
            counts_as_access: counts,
            signed_url: None,
        }
    }

    #[test]
    fn signed_url_uses_are_counted_per_url_with_distinct_addresses() {
        let url = |variant: &str| SignedUrlUse {
            image_id: Uuid::from_u128(1),
            variant: variant.to_owned(),
            access_type: "view",
            expires_at: Utc.timestamp_opt(1_000, 0).unwrap(),
            key_id: "k1".to_owned(),
            url_generation: 0,
        };
        let serve = |variant: &str, ip: [u8; 4], at: i64| AccessRecord {
            ip: Some(IpAddr::from(ip)),
            signed_url: Some(url(variant)),
            ..record(1, at, true)
        };
        let records =
            [serve("small", [10, 0, 0, 1], 5), serve("small", [10, 0, 0, 2], 9), serve("small", [10, 0, 0, 1], 7)];
        let records = [&records[..], &[serve("large", [10, 0, 0, 3], 1), record(1, 3, true)]].concat();
        let usage = count_url_uses(&records);
        assert_eq!(usage.len(), 2);
        let small = &usage[&url("small")];
        assert_eq!((small.uses, small.last), (3, Some(Utc.timestamp_opt(9, 0).unwrap())));
        assert_eq!(small.addresses.len(), 2);
        assert_eq!(usage[&url("large")].uses, 1);
    }

    #[test]
    fn successful_reads_are_counted_per_image_with_the_latest_time() {
        let records = [record(1, 10, true), record(2, 5, true), record(1, 30, true), record(1, 20, true)];
        let counted = count_accesses(&records);
        assert_eq!(counted.len(), 2);
        assert_eq!(counted[&Uuid::from_u128(1)], (3, Utc.timestamp_opt(30, 0).unwrap()));
        assert_eq!(counted[&Uuid::from_u128(2)], (1, Utc.timestamp_opt(5, 0).unwrap()));
    }

    #[test]
    fn identical_requests_in_the_same_second_share_a_row_that_counts_them() {
        let served = |image: u128, at_millis: i64, ip: [u8; 4], bytes: u64| AccessRecord {
            ip: Some(IpAddr::from(ip)),
            bytes_sent: bytes,
            at: Utc.timestamp_millis_opt(at_millis).unwrap(),
            ..record(image, 0, true)
        };
        let records = [
            served(1, 10_000, [10, 0, 0, 1], 100),
            served(1, 10_400, [10, 0, 0, 1], 100),
            served(1, 10_500, [10, 0, 0, 2], 100), // another client
            served(2, 10_600, [10, 0, 0, 1], 50),  // another image
            served(1, 10_999, [10, 0, 0, 1], 30),  // a range request of the first
            served(1, 11_000, [10, 0, 0, 1], 100), // the next second
            AccessRecord { status: 304, ..served(1, 10_100, [10, 0, 0, 1], 0) },
            AccessRecord { user_agent: Some("app/2".to_owned()), ..served(1, 10_100, [10, 0, 0, 1], 100) },
        ];
        let rows = fold_identical(&records);
        let summary: Vec<(u128, i32, i64, i64)> = rows
            .iter()
            .map(|r| (r.first.image_id.unwrap().as_u128(), r.count, r.bytes_sent, r.first.at.timestamp_millis()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, 3, 230, 10_000),
                (1, 1, 100, 10_500),
                (2, 1, 50, 10_600),
                (1, 1, 100, 11_000),
                (1, 1, 0, 10_100),
                (1, 1, 100, 10_100)
            ]
        );
        assert_eq!(rows.iter().map(|r| r.count).sum::<i32>(), records.len() as i32, "every request is counted");
    }

    #[test]
    fn denials_do_not_count_as_accesses() {
        assert!(count_accesses(&[record(1, 10, false)]).is_empty());
    }
}
