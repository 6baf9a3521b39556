//! Seeds the backup benchmark (`scripts/bench-backup`): a storage tree of distinct real
//! photos and their `storage_files` rows.
//!
//!     cargo run --release -p worker --example seed_backup_bench -- STORAGE_ROOT COUNT
//!
//! Each image is a random crop of one of the camera photos in `shared/benches/images`,
//! re-encoded: four in five as JPEG (quality 85, 800 to 1600 px wide), one in five as PNG
//! (400 to 700 px wide, with alpha), so the tree holds what real uploads look like:
//! entropy-coded photos that do not compress further. Rows go into `DATABASE_URL` (migrated
//! first), owned by 50 users and 10 vendors.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use image::{DynamicImage, ImageFormat as Encoding};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use shared::model::ImageFormat;
use shared::model::{ImageId, ImageType, Owner, OwnerId, OwnerType};
use shared::storage::StorageKey;
use uuid::Uuid;

const ROWS_PER_INSERT: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().context("usage: seed_backup_bench STORAGE_ROOT COUNT")?);
    let count: usize = args.next().context("COUNT")?.parse().context("COUNT is a number")?;
    let database = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let db = sqlx::PgPool::connect(&database).await?;
    shared::db::MIGRATOR.run(&db).await.context("migrating")?;
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benches/images");
    let jpegs: Vec<DynamicImage> = ["photo-12mp.jpg", "photo-2mp.jpg", "put-1mb.jpg"]
        .iter()
        .map(|name| image::open(photos.join(name)).with_context(|| format!("opening {name}")))
        .collect::<Result<_, _>>()?;
    let png = image::open(photos.join("photo-alpha.png")).context("opening photo-alpha.png")?;
    let owners: Vec<Owner> = (0..60)
        .map(|i| Owner { id: OwnerId(Uuid::now_v7()), kind: if i < 50 { OwnerType::User } else { OwnerType::Vendor } })
        .collect();
    let mut rng = StdRng::seed_from_u64(42);
    let mut rows = Vec::with_capacity(ROWS_PER_INSERT);
    let mut bytes_total = 0u64;
    for index in 0..count {
        let owner = owners[rng.random_range(0..owners.len())];
        let (bytes, format, width, height) = if index % 5 == 4 {
            let (crop, w, h) = crop(&png, &mut rng, 400, 700);
            (encode(&crop, Encoding::Png)?, ImageFormat::Png, w, h)
        } else {
            let source = &jpegs[rng.random_range(0..jpegs.len())];
            let (crop, w, h) = crop(source, &mut rng, 800, 1600);
            let mut out = Vec::new();
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
            crop.to_rgb8().write_with_encoder(encoder)?;
            (out, ImageFormat::Jpeg, w, h)
        };
        let image_type = match owner.kind {
            OwnerType::Vendor => ImageType::Cloth,
            OwnerType::User if index % 3 == 0 => ImageType::Result,
            OwnerType::User => ImageType::User,
        };
        let id = ImageId::new();
        let key = StorageKey::Original { image_type, owner, image_id: id, format };
        let path = root.join(key.relative_path());
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        std::fs::write(&path, &bytes)?;
        bytes_total += bytes.len() as u64;
        let checksum = hex::encode(Sha256::digest(&bytes));
        rows.push((id, owner, image_type, key.to_db_path(), bytes.len() as i64, format, width, height, checksum));
        if rows.len() == ROWS_PER_INSERT || index + 1 == count {
            insert(&db, std::mem::take(&mut rows)).await?;
            eprintln!("{} images, {} MB", index + 1, bytes_total / 1_000_000);
        }
    }
    Ok(())
}

/// A random crop `min..=max` pixels wide, 3:4 or 4:3, of `source`.
fn crop(source: &DynamicImage, rng: &mut StdRng, min: u32, max: u32) -> (DynamicImage, i32, i32) {
    let width = rng.random_range(min..=max).min(source.width());
    let height = (if rng.random_bool(0.5) { width * 3 / 4 } else { width * 4 / 3 }).min(source.height());
    let x = rng.random_range(0..=source.width() - width);
    let y = rng.random_range(0..=source.height() - height);
    (source.crop_imm(x, y, width, height), width as i32, height as i32)
}

fn encode(image: &DynamicImage, encoding: Encoding) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), encoding)?;
    Ok(out)
}

type Row = (ImageId, Owner, ImageType, String, i64, ImageFormat, i32, i32, String);

async fn insert(db: &sqlx::PgPool, rows: Vec<Row>) -> anyhow::Result<()> {
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                    mime_type, format, width, height, checksum, checksum_status) ",
    );
    query.push_values(rows, |mut row, (id, owner, image_type, path, size, format, width, height, checksum)| {
        row.push_bind(id.0)
            .push_bind(owner.id.0)
            .push_bind(owner.kind.as_str())
            .push_bind(image_type.as_str())
            .push_bind(format!("photo.{}", format.extension()))
            .push_bind(path)
            .push_bind(size)
            .push_bind(format.mime())
            .push_bind(format.as_str())
            .push_bind(width)
            .push_bind(height)
            .push_bind(checksum)
            .push_bind("verified");
    });
    query.build().execute(db).await?;
    Ok(())
}
