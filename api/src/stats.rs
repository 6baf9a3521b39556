//! `GET /storage/stats`: what is stored and how it is used, for the caller's own images or,
//! for admins, for everyone.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use shared::auth::Role;
use shared::db::provenance;
use shared::db::stats::{self, Scope};
use shared::model::{ImageId, OwnerId};
use uuid::Uuid;

use crate::auth::BearerAuth;
use crate::docs::Checked;
use crate::docs::checked::Bounds;
use crate::error::{ApiError, ErrorCode};
use crate::{AppState, model};

/// Longest per-day history one request may ask for.
const MAX_DAYS: u32 = 366;
const DEFAULT_DAYS: u32 = 30;
/// Longest metric history one request may ask for: 90 days.
const MAX_METRIC_HOURS: u32 = 90 * 24;
const DEFAULT_HOURS: u32 = 24;
/// Images listed as most accessed, and as most used in try-ons.
const TOP_IMAGES: i64 = 10;

pub struct StatsApi {
    pub state: AppState,
}

/// Usage statistics over live (not deleted) images.
#[derive(Debug, Clone, Object)]
pub struct StatsView {
    pub scope: model::StatsScope,
    /// The owner the figures are about, when scoped.
    pub owner_id: Option<Uuid>,
    pub total_files: i64,
    pub total_bytes: i64,
    pub by_type: Vec<TypeStats>,
    /// Uploads per UTC day over the requested window, oldest first; days without uploads
    /// are left out.
    pub by_day: Vec<DayStats>,
    pub processing: ProcessingStats,
    /// Most accessed images, most first.
    pub top_accessed: Vec<TopImageView>,
    /// Images most used as sources of AI results (a vendor's clothing in try-ons), most
    /// first; deleted results still count.
    pub try_ons: Vec<TryOnView>,
    pub signed_urls: SignedUrlStats,
}

/// Signed URLs of the scope's images.
#[derive(Debug, Clone, Object)]
pub struct SignedUrlStats {
    /// Distinct URLs issued (the same URL issued again within its expiry window counts once).
    pub issued: i64,
    /// Issued and not expired yet.
    pub active: i64,
    /// Files served through them.
    pub uses: i64,
    /// URLs flagged as possible abuse (used too often or from too many addresses).
    pub flagged: i64,
    /// The latest flagged URLs, latest first.
    pub recently_flagged: Vec<FlaggedUrlView>,
}

#[derive(Debug, Clone, Object)]
pub struct FlaggedUrlView {
    pub image_id: Uuid,
    pub variant: String,
    pub access_type: model::AccessType,
    pub use_count: i64,
    /// Distinct client addresses seen (counting stops a little past the limit).
    pub distinct_addresses: i32,
    pub expires_at: DateTime<Utc>,
    pub flagged_at: DateTime<Utc>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct TryOnView {
    pub image_id: Uuid,
    pub file_name: String,
    /// Results made from this image.
    pub results: i64,
}

#[derive(Debug, Clone, Object)]
pub struct TypeStats {
    pub image_type: model::ImageType,
    pub files: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, Object)]
pub struct DayStats {
    pub day: NaiveDate,
    pub files: i64,
    pub bytes: i64,
}

/// Images waiting for, or failed in, the workers' processing.
#[derive(Debug, Clone, Object)]
pub struct ProcessingStats {
    pub thumbnails_pending: i64,
    pub thumbnails_failed: i64,
    pub checksums_pending: i64,
    /// Originals whose bytes no longer match their upload checksum.
    pub checksums_corrupt: i64,
}

#[derive(Debug, Clone, Object)]
pub struct TopImageView {
    pub id: Uuid,
    pub file_name: String,
    pub image_type: model::ImageType,
    pub access_count: i64,
    pub last_accessed: Option<DateTime<Utc>>,
}

#[OpenApi(tag = "crate::images::ApiTags::Images")]
impl StatsApi {
    /// Storage statistics: counts and bytes per image type and per day of upload,
    /// processing backlog and failures, most accessed images, try-on counts, signed URL
    /// usage and URLs flagged as possible abuse.
    ///
    /// Users and vendors see their own images. Admins see everything, or one owner's
    /// images with `owner_id`. `days` (default 30, at most 366) sets the per-day window.
    #[oai(path = "/storage/stats", method = "get", operation_id = "getStats")]
    async fn stats(
        &self,
        auth: BearerAuth,
        owner_id: Query<Option<Uuid>>,
        days: Query<Option<Checked<u32, Days>>>,
    ) -> Result<Json<StatsView>, ApiError> {
        let days = match days.0 {
            Some(days) => days.parse("days", "an integer")?,
            None => DEFAULT_DAYS,
        };
        let scope = match (auth.0.role, owner_id.0) {
            (Role::Admin, Some(owner)) => Scope::Owner(owner),
            (Role::Admin, None) => Scope::Global,
            (Role::User | Role::Vendor, None) => Scope::Owner(auth.0.sub),
            (Role::User | Role::Vendor, Some(owner)) if owner == auth.0.sub => Scope::Owner(owner),
            (Role::User | Role::Vendor, Some(_)) => {
                return Err(ApiError::forbidden("only admins may see another owner's statistics"));
            }
            (Role::Service, _) => return Err(ApiError::forbidden("the service role has no statistics of its own")),
        };
        if days == 0 || days > MAX_DAYS {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("days must be between 1 and {MAX_DAYS}"),
            ));
        }
        let since = (Utc::now() - Duration::days(i64::from(days) - 1)).date_naive().and_time(Default::default());
        let db = &self.state.db;
        let owner = match scope {
            Scope::Owner(owner) => Some(OwnerId(owner)),
            Scope::Global => None,
        };
        let (by_type, by_day, processing, mut top, mut try_ons, urls, flagged) = tokio::try_join!(
            stats::by_type(db, scope),
            stats::by_day(db, scope, since.and_utc()),
            stats::processing(db, scope),
            stats::top_accessed(db, scope, TOP_IMAGES),
            provenance::try_on_counts(db, owner, TOP_IMAGES),
            stats::signed_url_totals(db, scope),
            stats::flagged_urls(db, scope, TOP_IMAGES),
        )?;
        if let Some(sealer) = self.state.sealer.as_deref() {
            // Sealed file names open with their images' keys, all fetched in one query.
            let ids: Vec<ImageId> =
                top.iter().map(|t| ImageId(t.id)).chain(try_ons.iter().map(|t| ImageId(t.image_id))).collect();
            let opener = sealer.opener(db, &ids).await?;
            for t in &mut top {
                t.original_name = opener.name(ImageId(t.id), std::mem::take(&mut t.original_name));
            }
            for t in &mut try_ons {
                t.original_name = opener.name(ImageId(t.image_id), std::mem::take(&mut t.original_name));
            }
        }
        Ok(Json(StatsView {
            scope: if scope == Scope::Global { model::StatsScope::Global } else { model::StatsScope::Owner },
            owner_id: owner.map(|o| o.0),
            total_files: by_type.iter().map(|t| t.files).sum(),
            total_bytes: by_type.iter().map(|t| t.bytes).sum(),
            by_type: by_type
                .into_iter()
                .map(|t| Ok(TypeStats { image_type: image_type(&t.image_type)?, files: t.files, bytes: t.bytes }))
                .collect::<Result<_, ApiError>>()?,
            by_day: by_day.into_iter().map(|d| DayStats { day: d.day, files: d.files, bytes: d.bytes }).collect(),
            processing: ProcessingStats {
                thumbnails_pending: processing.thumbnails_pending,
                thumbnails_failed: processing.thumbnails_failed,
                checksums_pending: processing.checksums_pending,
                checksums_corrupt: processing.checksums_corrupt,
            },
            top_accessed: top
                .into_iter()
                .map(|t| {
                    Ok(TopImageView {
                        id: t.id,
                        file_name: t.original_name,
                        image_type: image_type(&t.image_type)?,
                        access_count: t.access_count,
                        last_accessed: t.last_accessed,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            try_ons: try_ons
                .into_iter()
                .map(|t| TryOnView { image_id: t.image_id, file_name: t.original_name, results: t.results })
                .collect(),
            signed_urls: SignedUrlStats {
                issued: urls.issued,
                active: urls.active,
                uses: urls.uses,
                flagged: urls.flagged,
                recently_flagged: flagged
                    .into_iter()
                    .map(|f| {
                        Ok(FlaggedUrlView {
                            image_id: f.image_id,
                            access_type: access_type(&f.access_type)?,
                            variant: f.variant,
                            use_count: f.use_count,
                            distinct_addresses: f.distinct_ips,
                            expires_at: f.expires_at,
                            flagged_at: f.flagged_at,
                            reason: f.flag_reason,
                        })
                    })
                    .collect::<Result<_, ApiError>>()?,
            },
        }))
    }

    /// One metric's rolled-up series over the last `hours` (default 24, at most 2160), for
    /// charting (admins only). Metrics: `uploads`, `upload_bytes` (total and per
    /// `image_type`), `thumbnail_latency_ms` (per `quantile`), `job_failures` (total and per
    /// `queue` and `final`), `queue_depth` and `dead_letters` (per `queue`). Points come from
    /// the scheduled roll-up, one per period of `metrics.periodSecs` and labels.
    #[oai(path = "/storage/stats/metrics", method = "get", operation_id = "getMetricSeries")]
    async fn metrics(
        &self,
        auth: BearerAuth,
        name: Query<Checked<model::MetricName>>,
        hours: Query<Option<Checked<u32, Hours>>>,
    ) -> Result<Json<MetricSeries>, ApiError> {
        if auth.0.role != Role::Admin {
            return Err(ApiError::forbidden("metrics are for admins"));
        }
        let name = name.0.into_text();
        if !shared::metrics::METRICS.contains(&name.as_str()) {
            let known = shared::metrics::METRICS.join(", ");
            return Err(ApiError::bad_request(ErrorCode::InvalidField, format!("name must be one of {known}")));
        }
        let hours = match hours.0 {
            Some(hours) => hours.parse("hours", "an integer")?,
            None => DEFAULT_HOURS,
        };
        if hours == 0 || hours > MAX_METRIC_HOURS {
            let message = format!("hours must be between 1 and {MAX_METRIC_HOURS}");
            return Err(ApiError::bad_request(ErrorCode::InvalidField, message));
        }
        let to = Utc::now();
        let from = to - Duration::hours(i64::from(hours));
        let points = shared::db::metrics::series(&self.state.db, &name, from, to).await?;
        Ok(Json(MetricSeries {
            name,
            period_secs: self.state.config.metrics.period_secs,
            from,
            to,
            points: points
                .into_iter()
                .map(|p| MetricPoint {
                    period_start: p.period_start,
                    period_end: p.period_end,
                    value: p.value,
                    labels: p.labels,
                })
                .collect(),
        }))
    }
}

/// A metric over time.
#[derive(Debug, Clone, Object)]
pub struct MetricSeries {
    pub name: String,
    /// Length of each point's period.
    pub period_secs: u64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Oldest first; one point per period and label set (a period without data has none).
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, Object)]
pub struct MetricPoint {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub value: f64,
    /// What the point is about (`{}` for the total): e.g. `{"image_type": "user"}`.
    pub labels: serde_json::Value,
}

/// Per-day history of `GET /storage/stats`: 1 to [`MAX_DAYS`], 30 by default.
pub struct Days;

impl Bounds for Days {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_DAYS as f64);
    const DEFAULT: Option<i64> = Some(DEFAULT_DAYS as i64);
}

/// History of a metric series: 1 to [`MAX_METRIC_HOURS`], 24 by default.
pub struct Hours;

impl Bounds for Hours {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_METRIC_HOURS as f64);
    const DEFAULT: Option<i64> = Some(DEFAULT_HOURS as i64);
}

/// The image type of a statistics row, as stored.
fn image_type(stored: &str) -> Result<model::ImageType, ApiError> {
    let kind: shared::model::ImageType =
        stored.parse().map_err(|_| ApiError::internal(&format!("unknown image type `{stored}` in the statistics")))?;
    Ok(kind.into())
}

/// The access type of a signed URL, as stored.
fn access_type(stored: &str) -> Result<model::AccessType, ApiError> {
    let access: shared::signing::AccessType =
        stored.parse().map_err(|_| ApiError::internal(&format!("unknown access type `{stored}` of a signed URL")))?;
    Ok(access.into())
}
