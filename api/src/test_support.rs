//! Test harness: an API on 127.0.0.1:0 over the test's own database, storage folder and
//! queue prefix, with helpers to mint tokens, upload and inspect what was stored. Compiled
//! only with the `test-support` feature (the test crates' dev-dependencies).

use std::sync::Arc;

use crate::{AppState, RunningApi};
use chrono::Duration;
use reqwest::multipart::{Form, Part};
use secrecy::SecretString;
use shared::auth::{Role, TokenKeys};
use shared::config::Config;
use shared::db::storage_quotas::{self, Quota};
use shared::model::{Owner, OwnerId, OwnerType};
use shared::storage::Storage;
use shared::test_support::TopologyCleanup;
use sqlx::PgPool;
use tempfile::TempDir;
use uuid::Uuid;

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Arc<Config>,
    keys: TokenKeys,
    api: Option<RunningApi>,
    _dir: TempDir,
    _topology: TopologyCleanup,
}

/// A configuration for one test: its own storage folders and queue prefix, the test's own
/// database, a free port.
pub async fn test_config(dir: &std::path::Path, pool: &PgPool) -> Config {
    let mut config = shared::test_support::config();
    config.storage.base_path = dir.join("storage");
    config.storage.backup_path = dir.join("backups");
    config.server.host = "127.0.0.1".to_owned();
    config.server.port = 0;
    config.database.url = SecretString::from(database_url(pool).await);
    // Tests fire requests far faster than any client; api/tests/rate_limit.rs turns it on.
    config.rate_limit.enabled = false;
    config
}

pub use shared::test_support::database_url;

/// The JSON body of `response`.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("a JSON body")
}

/// The `error.code` of an error response.
pub async fn error_code(response: reqwest::Response) -> String {
    let body = json(response).await;
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("an error code in {body}")).to_owned()
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    /// Spawns with changes to the test configuration, once its outbox relay has declared
    /// the broker topology.
    pub async fn spawn_with(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> Self {
        let app = Self::spawn_with_broker_down(pool, adjust).await;
        // The topology is deleted when the test ends; a declaration still in flight then
        // would recreate part of it.
        app.api.as_ref().expect("running").relay_started().await;
        app
    }

    /// Spawns without waiting for the broker, for tests that start the API while it is
    /// unreachable. Once it is back, events flowing prove the topology declared.
    pub async fn spawn_with_broker_down(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> Self {
        shared::test_support::init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path(), &pool).await;
        adjust(&mut config);
        let config = Arc::new(config);
        let storage = Storage::from_config(&config.storage).await.expect("storage");
        let state = AppState::new(pool.clone(), storage.clone(), config.clone());
        let api = crate::start_with(state).await.expect("API starts");
        Self {
            base_url: format!("http://{}", api.addr),
            client: reqwest::Client::new(),
            pool,
            storage,
            keys: TokenKeys::from_config(&config.auth),
            _topology: TopologyCleanup::new(&config.rabbitmq),
            config,
            api: Some(api),
            _dir: dir,
        }
    }

    pub fn token(&self, role: Role, sub: Uuid) -> String {
        self.keys.mint(sub, role, Duration::minutes(10))
    }

    /// A token for a new random user.
    pub fn user(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        (id, self.token(Role::User, id))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Uploads `bytes` as `file_name` with `image_type` and any extra form fields.
    pub async fn upload(
        &self,
        token: &str,
        image_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        self.upload_with_headers(token, image_type, file_name, bytes, extra, &[]).await
    }

    pub async fn upload_with_headers(
        &self,
        token: &str,
        image_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
        extra: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mime = mime_guess(file_name);
        let mut form = Form::new()
            .text("image_type", image_type.to_owned())
            .part("file", Part::bytes(bytes).file_name(file_name.to_owned()).mime_str(mime).unwrap());
        for (name, value) in extra {
            form = form.text(name.to_string(), value.to_string());
        }
        let mut request = self.client.post(self.url("/storage/images")).bearer_auth(token).multipart(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    pub async fn get_image(&self, token: &str, id: &str) -> reqwest::Response {
        self.client.get(self.url(&format!("/storage/images/{id}"))).bearer_auth(token).send().await.unwrap()
    }

    /// Where the original of image `id` is on disk (tests damage or remove it).
    pub async fn original_path(&self, id: &str) -> std::path::PathBuf {
        let path: String = sqlx::query_scalar("SELECT file_path FROM storage_files WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        self.storage.root().join(path)
    }

    /// Files under the storage root, staged ones included.
    pub async fn stored_file_count(&self) -> usize {
        self.storage.count_objects().await.unwrap() + self.storage.count_staged().await.unwrap()
    }

    pub async fn row_count(&self) -> i64 {
        shared::db::storage_files::count_live(&self.pool).await.unwrap()
    }

    pub async fn outbox_count(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox").fetch_one(&self.pool).await.unwrap()
    }

    pub async fn quota(&self, owner: Uuid, kind: OwnerType) -> Option<Quota> {
        storage_quotas::get(&self.pool, Owner { id: OwnerId(owner), kind }).await.unwrap()
    }

    /// Asserts that nothing at all was stored: no file, no row, no event, no quota used.
    pub async fn assert_nothing_stored(&self) {
        assert_eq!(self.stored_file_count().await, 0, "files left under basePath");
        assert_eq!(self.row_count().await, 0, "rows left in storage_files");
        assert_eq!(self.outbox_count().await, 0, "events left in the outbox");
        let used: i64 = sqlx::query_scalar("SELECT coalesce(sum(used_files), 0)::bigint FROM storage_quotas")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert_eq!(used, 0, "quota consumed");
    }

    pub async fn stop(mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await.unwrap();
        }
    }
}

fn mime_guess(file_name: &str) -> &'static str {
    match file_name.rsplit('.').next().unwrap_or("") {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "html" => "text/html",
        _ => "application/octet-stream",
    }
}

/// Test images made on the fly.
pub mod images {
    use std::io::Cursor;

    pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
        out
    }

    pub fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, _| image::Rgba([200, 10, 10, (x % 256) as u8]));
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    /// A still GIF.
    pub fn gif(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x * 8 % 256) as u8, 40, (y * 8 % 256) as u8, 255])
        });
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Gif).unwrap();
        out
    }

    /// A lossless WebP (the only kind the `image` crate encodes).
    pub fn webp(width: u32, height: u32) -> Vec<u8> {
        let image =
            image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([30, (x % 256) as u8, (y % 256) as u8, 255]));
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::WebP).unwrap();
        out
    }

    /// A tiny, complete PNG whose header claims `width` × `height` pixels: a decompression
    /// bomb as far as the header is concerned.
    pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.finalize().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend_from_slice(&width.to_be_bytes());
        header.extend_from_slice(&height.to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &header);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// Metadata changes, deletion, listing, search and quotas.
impl TestApp {
    /// Uploads a small JPEG and returns its id; panics unless it is stored.
    pub async fn upload_image(&self, token: &str, image_type: &str, file_name: &str, extra: &[(&str, &str)]) -> String {
        let response = self.upload(token, image_type, file_name, images::jpeg(32, 24), extra).await;
        assert_eq!(response.status(), reqwest::StatusCode::CREATED, "uploading {file_name}");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        body["id"].as_str().expect("an id").to_owned()
    }

    pub async fn update_image(&self, token: &str, id: &str, body: &serde_json::Value) -> reqwest::Response {
        let url = self.url(&format!("/storage/images/{id}"));
        self.client.put(url).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn delete_image(&self, token: &str, id: &str) -> reqwest::Response {
        self.client.delete(self.url(&format!("/storage/images/{id}"))).bearer_auth(token).send().await.unwrap()
    }

    /// `POST /storage/images/{id}/reprocess`.
    pub async fn reprocess_image(&self, token: &str, id: &str) -> reqwest::Response {
        let url = self.url(&format!("/storage/images/{id}/reprocess"));
        self.client.post(url).bearer_auth(token).send().await.unwrap()
    }

    /// `GET /storage/health`, anonymously or with a token: the status code and the body.
    pub async fn health(&self, token: Option<&str>) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client.get(self.url("/storage/health"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.expect("a JSON body"))
    }

    /// `GET /storage/images` with query parameters (repeat a name to repeat the parameter).
    pub async fn list_images(&self, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.client.get(self.url("/storage/images")).bearer_auth(token).query(query).send().await.unwrap()
    }

    pub async fn search_images(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url("/storage/images/search")).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn get_quota(&self, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.client.get(self.url("/storage/quota")).bearer_auth(token).query(query).send().await.unwrap()
    }

    pub async fn set_quota(&self, token: &str, owner: Uuid, body: &serde_json::Value) -> reqwest::Response {
        let url = self.url(&format!("/storage/quota/{owner}"));
        self.client.put(url).bearer_auth(token).json(body).send().await.unwrap()
    }
}
