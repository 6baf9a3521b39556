//! Provenance of AI results: a result names the images it was made from, each checked to
//! exist and be usable by the result's owner, and vendors see how often their clothing
//! was tried on.

use api::test_support::{TestApp, images, json};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use sqlx::PgPool;
use uuid::Uuid;

async fn stored(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await["id"].as_str().unwrap().to_owned()
}

struct Wardrobe {
    user: Uuid,
    vendor: Uuid,
    photo: String,
    public_cloth: String,
    private_cloth: String,
    service: String,
}

async fn wardrobe(app: &TestApp) -> Wardrobe {
    let (user, user_token) = app.user();
    let vendor = Uuid::now_v7();
    let vendor_token = app.token(Role::Vendor, vendor);
    let photo = stored(app.upload(&user_token, "user", "me.jpg", images::jpeg(40, 60), &[]).await).await;
    let public_cloth =
        stored(app.upload(&vendor_token, "cloth", "dress.png", images::png(30, 30), &[("is_public", "true")]).await)
            .await;
    let private_cloth = stored(app.upload(&vendor_token, "cloth", "draft.png", images::png(20, 20), &[]).await).await;
    Wardrobe { user, vendor, photo, public_cloth, private_cloth, service: app.token(Role::Service, Uuid::now_v7()) }
}

async fn upload_result(app: &TestApp, w: &Wardrobe, sources: &str) -> reqwest::Response {
    let owner = w.user.to_string();
    let fields = [("owner_id", owner.as_str()), ("source_ids", sources)];
    app.upload(&w.service, "result", "try-on.jpg", images::jpeg(40, 60), &fields).await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_result_records_its_sources_and_shows_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let w = wardrobe(&app).await;

    let sources = format!(r#"["{}", "{}", "{}"]"#, w.photo, w.public_cloth, w.photo);
    let result = stored(upload_result(&app, &w, &sources).await).await;

    let (_, user_token) = (w.user, app.token(Role::User, w.user));
    let view = json(app.get_image(&user_token, &result).await).await;
    let mut expected = vec![w.photo.clone(), w.public_cloth.clone()];
    expected.sort();
    assert_eq!(view["source_ids"], serde_json::json!(expected), "distinct, in id order");
    let photo_view = json(app.get_image(&user_token, &w.photo).await).await;
    assert!(photo_view.get("source_ids").is_none(), "only results have sources");

    // Results made from an image, by listing and by search.
    let listed: Value = json(app.list_images(&user_token, &[("derived_from", &w.photo)]).await).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], result);
    let searched =
        json(app.search_images(&user_token, &serde_json::json!({"derived_from": w.public_cloth})).await).await;
    assert_eq!(searched["items"][0]["id"], result);
    let none = json(app.list_images(&user_token, &[("derived_from", &result)]).await).await;
    assert_eq!(none["total"], 0);
    let bad = app.list_images(&user_token, &[("derived_from", "nope")]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // The vendor's statistics count the try-on.
    let vendor_token = app.token(Role::Vendor, w.vendor);
    let response = app.client.get(app.url("/storage/stats")).bearer_auth(&vendor_token).send().await.unwrap();
    let stats = json(response).await;
    assert_eq!(
        stats["try_ons"],
        serde_json::json!([{"image_id": w.public_cloth, "file_name": "dress.png", "results": 1}])
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn sources_the_owner_may_not_use_are_refused_and_nothing_is_stored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let w = wardrobe(&app).await;
    let files_before = app.stored_file_count().await;
    let rows_before = app.row_count().await;

    for sources in
        [format!("{},{}", w.photo, w.private_cloth), Uuid::now_v7().to_string(), format!("[\"{}\"]", Uuid::now_v7())]
    {
        let response = upload_result(&app, &w, &sources).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{sources}");
        assert_eq!(json(response).await["error"]["code"], "unknown_source");
    }
    // A deleted source is no longer usable.
    sqlx::query("UPDATE storage_files SET deleted_at = now() WHERE id = $1::uuid")
        .bind(&w.public_cloth)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(upload_result(&app, &w, &w.public_cloth).await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(app.stored_file_count().await, files_before, "no file left by a refused result");
    assert_eq!(app.row_count().await, rows_before - 1);
    let links: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_image_sources").fetch_one(&app.pool).await.unwrap();
    assert_eq!(links, 0);

    // An admin may name any live image.
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let owner = w.user.to_string();
    let fields = [("owner_id", owner.as_str()), ("source_ids", w.private_cloth.as_str())];
    let response = app.upload(&admin, "result", "r.jpg", images::jpeg(10, 10), &fields).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn malformed_source_lists_are_bad_requests(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let w = wardrobe(&app).await;
    let too_many = (0..17).map(|_| Uuid::now_v7().to_string()).collect::<Vec<_>>().join(",");
    for sources in ["not-a-uuid", "[1, 2]", "[\"x\"", too_many.as_str()] {
        let response = upload_result(&app, &w, sources).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{sources}");
        assert_eq!(json(response).await["error"]["code"], "invalid_field");
    }
    // Only results have sources.
    let user_token = app.token(Role::User, w.user);
    let response = app.upload(&user_token, "user", "me.jpg", images::jpeg(10, 10), &[("source_ids", &w.photo)]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
