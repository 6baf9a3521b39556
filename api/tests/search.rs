//! Listing and search: pages that neither repeat nor skip, every sort and filter, the text
//! query, and whose images each role sees.

use std::cmp::Ordering;
use std::collections::HashSet;

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use sqlx::PgPool;
use uuid::Uuid;

/// The JSON body of an answer that must be 200.
async fn ok_json(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.url().to_string());
    response.json().await.expect("a JSON body")
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

fn set(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

/// Sets what the API does not let clients choose, to make sorts and filters deterministic.
async fn set_access_count(app: &TestApp, id: &str, count: i64) {
    sqlx::query("UPDATE storage_files SET access_count = $2 WHERE id = $1::uuid")
        .bind(id)
        .bind(count)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn set_created_at(app: &TestApp, id: &str, at: &str) {
    sqlx::query("UPDATE storage_files SET created_at = $2::timestamptz WHERE id = $1::uuid")
        .bind(id)
        .bind(at)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn pages_cover_every_image_once_in_every_sort_and_order(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    // Ties on purpose: names repeat (in two cases), access counts take three values, sizes
    // take a few, two images share one upload time.
    let mut uploaded = Vec::new();
    for i in 0..23u32 {
        let name = match i % 4 {
            0 => "Same.jpg".to_owned(),
            1 => "same.jpg".to_owned(),
            _ => format!("photo-{:02}.jpg", (i * 7) % 23),
        };
        let response = app.upload(&token, "user", &name, images::jpeg(16 + (i % 5) * 8, 16), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        set_access_count(&app, &id, i64::from(i % 3)).await;
        uploaded.push(id);
    }
    sqlx::query("UPDATE storage_files SET created_at = (SELECT created_at FROM storage_files WHERE id = $1::uuid) WHERE id = $2::uuid")
        .bind(&uploaded[3])
        .bind(&uploaded[4])
        .execute(&app.pool)
        .await
        .unwrap();
    let everything = ok_json(app.list_images(&token, &[("page_size", "100")]).await).await;
    assert_eq!(everything["total"], 23);
    let rows = everything["items"].as_array().unwrap().clone();

    for sort in ["created_at", "file_size", "file_name", "access_count"] {
        for order in ["asc", "desc"] {
            // What the order must be: the key, then the id, both in the asked direction.
            let key = |item: &Value| -> (Value, String) {
                let value = match sort {
                    "created_at" => item["created_at"].clone(),
                    "file_size" => item["size"].clone(),
                    "file_name" => Value::String(item["file_name"].as_str().unwrap().to_lowercase()),
                    _ => item["id"].clone(), // access_count is not in the view: checked below
                };
                (value, item["id"].as_str().unwrap().to_owned())
            };
            let mut expected = rows.clone();
            if sort != "access_count" {
                expected.sort_by(|a, b| {
                    let (ka, kb) = (key(a), key(b));
                    let ordering = compare(&ka.0, &kb.0).then_with(|| ka.1.cmp(&kb.1));
                    if order == "asc" { ordering } else { ordering.reverse() }
                });
            }
            let mut seen = Vec::new();
            for page in 1..=5 {
                let page_text = page.to_string();
                let query = [("sort", sort), ("order", order), ("page", &page_text), ("page_size", "5")];
                let body = ok_json(app.list_images(&token, &query).await).await;
                assert_eq!(
                    (body["total"].as_i64(), body["page"].as_i64(), body["page_size"].as_i64()),
                    (Some(23), Some(page), Some(5))
                );
                let items = ids(&body);
                assert_eq!(items.len(), if page < 5 { 5 } else { 3 }, "{sort} {order} page {page}");
                seen.extend(items);
            }
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), 23, "{sort} {order}: duplicates or missing across pages");
            if sort != "access_count" {
                let expected: Vec<String> = expected.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
                assert_eq!(seen, expected, "{sort} {order}");
            } else {
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT id::text, access_count FROM storage_files")
                    .fetch_all(&app.pool)
                    .await
                    .unwrap();
                let count_of: std::collections::HashMap<String, i64> = rows.into_iter().collect();
                let counts: Vec<i64> = seen.iter().map(|id| count_of[id]).collect();
                let mut sorted = counts.clone();
                sorted.sort();
                if order == "desc" {
                    sorted.reverse();
                }
                assert_eq!(counts, sorted, "access_count {order}");
            }
            // Past the last page: nothing, but the same total.
            let beyond = ok_json(
                app.list_images(&token, &[("sort", sort), ("order", order), ("page", "6"), ("page_size", "5")]).await,
            )
            .await;
            assert_eq!((beyond["total"].as_i64(), ids(&beyond).len()), (Some(23), 0));
        }
    }
    // The default: newest first, twenty per page.
    let first = ok_json(app.list_images(&token, &[]).await).await;
    assert_eq!((first["page"].as_i64(), first["page_size"].as_i64(), ids(&first).len()), (Some(1), Some(20), 20));
    let newest = ok_json(app.list_images(&token, &[("sort", "created_at"), ("order", "desc")]).await).await;
    assert_eq!(ids(&first), ids(&newest));
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
        // RFC 3339 in UTC with the same precision sort as text.
        (Value::String(x), Value::String(y)) => {
            match (x.parse::<chrono::DateTime<chrono::Utc>>(), y.parse::<chrono::DateTime<chrono::Utc>>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.as_bytes().cmp(y.as_bytes()),
            }
        }
        _ => panic!("cannot compare {a} and {b}"),
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn filters_narrow_the_listing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let vendor = Uuid::now_v7();
    let token = app.token(Role::Vendor, vendor);
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let red_public = app.upload_image(&token, "cloth", "a.jpg", &[("tags", "red,dress"), ("is_public", "true")]).await;
    let red_private = app.upload_image(&token, "cloth", "b.jpg", &[("tags", "red")]).await;
    let plain_public = app.upload_image(&token, "cloth", "c.jpg", &[("is_public", "true")]).await;
    let old = app.upload_image(&token, "cloth", "d.jpg", &[("tags", "dress")]).await;
    set_created_at(&app, &old, "2024-01-15T12:00:00Z").await;
    set_created_at(&app, &red_private, "2024-03-01T00:00:00Z").await;
    // Someone else's result, for the admin's image_type filter.
    let service = app.token(Role::Service, Uuid::now_v7());
    let owner = Uuid::now_v7().to_string();
    let result = app.upload_image(&service, "result", "r.jpg", &[("owner_id", owner.as_str()), ("tags", "red")]).await;

    let listed = |query: Vec<(&'static str, &'static str)>| {
        let (app, token) = (&app, &token);
        async move { ids(&ok_json(app.list_images(token, &query).await).await) }
    };
    let as_set = |ids: Vec<String>| ids.into_iter().collect::<HashSet<_>>();
    assert_eq!(as_set(listed(vec![("tag", "red")]).await), set(&[&red_public, &red_private]));
    assert_eq!(as_set(listed(vec![("tag", "red"), ("tag", "dress")]).await), set(&[&red_public]));
    assert_eq!(as_set(listed(vec![("is_public", "true")]).await), set(&[&red_public, &plain_public]));
    assert_eq!(as_set(listed(vec![("is_public", "false"), ("tag", "dress")]).await), set(&[&old]));
    assert_eq!(as_set(listed(vec![("created_to", "2024-02-01T00:00:00Z")]).await), set(&[&old]));
    assert_eq!(
        as_set(listed(vec![("created_from", "2024-01-15T12:00:00Z"), ("created_to", "2024-03-01T00:00:00Z")]).await),
        set(&[&old, &red_private]),
        "both bounds are inclusive"
    );
    assert_eq!(
        as_set(listed(vec![("created_from", "2025-01-01T00:00:00+02:00")]).await),
        set(&[&red_public, &plain_public])
    );
    assert_eq!(listed(vec![("image_type", "result")]).await, Vec::<String>::new());
    assert_eq!(listed(vec![("image_type", "cloth")]).await.len(), 4);

    // The admin sees every owner, and filters them too.
    let everyone = ok_json(app.list_images(&admin, &[("image_type", "result")]).await).await;
    assert_eq!(ids(&everyone), vec![result.clone()]);
    let vendor_text = vendor.to_string();
    let one_owner = ok_json(app.list_images(&admin, &[("owner_id", vendor_text.as_str()), ("tag", "red")]).await).await;
    assert_eq!(as_set(ids(&one_owner)), set(&[&red_public, &red_private]));
    let all_red = ok_json(app.search_images(&admin, &json!({"tags": ["red"]})).await).await;
    assert_eq!(all_red["total"], 3);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn each_role_lists_only_what_it_may(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, user_token) = app.user();
    let (other, other_token) = app.user();
    let vendor = app.token(Role::Vendor, Uuid::now_v7());
    let service = app.token(Role::Service, Uuid::now_v7());
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let photo = app.upload_image(&user_token, "user", "mine.jpg", &[]).await;
    let others_public = app.upload_image(&other_token, "user", "theirs.jpg", &[("is_public", "true")]).await;
    let user_text = user.to_string();
    let result = app.upload_image(&service, "result", "r.jpg", &[("owner_id", user_text.as_str())]).await;
    let cloth = app.upload_image(&vendor, "cloth", "c.jpg", &[("is_public", "true")]).await;

    let listed = |token: String, query: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.list_images(&token, &query).await
        }
    };
    // Users and vendors: their own images, public ones of others excluded.
    let mine = ok_json(listed(user_token.clone(), vec![]).await).await;
    assert_eq!(ids(&mine).into_iter().collect::<HashSet<_>>(), set(&[&photo, &result]));
    assert_eq!(ids(&ok_json(listed(user_token.clone(), vec![("owner_id", user_text.clone())]).await).await).len(), 2);
    let response = listed(user_token.clone(), vec![("owner_id", other.to_string())]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(ids(&ok_json(listed(vendor.clone(), vec![]).await).await), vec![cloth.clone()]);
    let search = ok_json(app.search_images(&other_token, &json!({})).await).await;
    assert_eq!(ids(&search), vec![others_public.clone()]);
    let response = app.search_images(&other_token, &json!({"owner_id": user})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The service: the results of the owner it names, and must name one.
    let response = listed(service.clone(), vec![]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let results = ok_json(listed(service.clone(), vec![("owner_id", user_text.clone())]).await).await;
    assert_eq!(ids(&results), vec![result.clone()]);

    // Admins: everyone, or one owner.
    let all = ok_json(listed(admin.clone(), vec![("page_size", "100".into())]).await).await;
    assert_eq!(all["total"], 4);
    let one = ok_json(listed(admin.clone(), vec![("owner_id", user_text.clone())]).await).await;
    assert_eq!(one["total"], 2);
    // Full pages need a count: the unfiltered one comes from the quotas, and must agree.
    for query in [vec![("page_size", "2".to_owned())], vec![("page_size", "1".into()), ("page", "3".into())]] {
        let page = ok_json(listed(admin.clone(), query).await).await;
        assert_eq!(page["total"], 4, "{page}");
    }
    assert_eq!(app.delete_image(&admin, &others_public).await.status(), StatusCode::NO_CONTENT);
    let page = ok_json(listed(admin.clone(), vec![("page_size", "1".into())]).await).await;
    assert_eq!(page["total"], 3);
    let filtered =
        ok_json(listed(admin.clone(), vec![("page_size", "1".into()), ("image_type", "user".into())]).await).await;
    assert_eq!(filtered["total"], 1);

    let anonymous = app.client.get(app.url("/storage/images")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn bad_parameters_are_refused_naming_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let cases: [(&str, &str); 12] = [
        ("page", "0"),
        ("page", "-1"),
        ("page", "two"),
        ("page_size", "0"),
        ("page_size", "101"),
        ("sort", "id"),
        ("sort", "created_at; DROP TABLE storage_files"),
        ("order", "up"),
        ("image_type", "avatar"),
        ("owner_id", "me"),
        ("is_public", "maybe"),
        ("created_from", "yesterday"),
    ];
    for (name, value) in cases {
        let response = app.list_images(&token, &[(name, value)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}={value}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_field", "{name}={value}");
        assert!(body["error"]["message"].as_str().unwrap().contains(name), "{body}");
    }
    let reversed = [("created_from", "2025-01-02T00:00:00Z"), ("created_to", "2025-01-01T00:00:00Z")];
    assert_eq!(app.list_images(&token, &reversed).await.status(), StatusCode::BAD_REQUEST);
    for body in [
        json!({"query": "x".repeat(201)}),
        json!({"page_size": 1000}),
        json!({"sort": "owner_id"}),
        json!({"tags": ["x".repeat(65)]}),
    ] {
        let response = app.search_images(&token, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "invalid_field");
    }
    for body in [json!({"querry": "typo"}), json!({"page": "one"}), json!({"tags": "red"})] {
        let response = app.search_images(&token, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let _ = ok_json(app.list_images(&token, &[("page_size", "100"), ("page", "1")]).await).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_query_matches_names_tags_and_metadata_values(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let dress = app.upload_image(&token, "user", "Red-Dress.JPG", &[("tags", "summer")]).await;
    let evening = app.upload_image(&token, "user", "blue.jpg", &[("tags", "Evening Wear")]).await;
    let zara = app
        .upload_image(
            &token,
            "user",
            "plain.jpg",
            &[("metadata", r#"{"brand": "Zara", "sku": "SKU-100%", "size": 38}"#)],
        )
        .await;
    let underscore = app.upload_image(&token, "user", "a_b.jpg", &[]).await;
    let _decoy =
        app.upload_image(&token, "user", "axb.jpg", &[("metadata", r#"{"nested": {"colour": "Ochre"}}"#)]).await;
    let (_, stranger) = app.user();
    app.upload_image(&stranger, "user", "red-dress-too.jpg", &[("is_public", "true")]).await;

    let found = |query: &'static str| {
        let (app, token) = (&app, &token);
        async move { ids(&ok_json(app.search_images(token, &json!({"query": query})).await).await) }
    };
    assert_eq!(found("red").await, vec![dress.clone()], "names, case-insensitive; others' images excluded");
    assert_eq!(found("EVENING w").await, vec![evening.clone()], "tags");
    assert_eq!(found("zara").await, vec![zara.clone()], "metadata values");
    assert_eq!(found("38").await, vec![zara.clone()], "numbers in metadata");
    assert_eq!(found("ochre").await.len(), 1, "nested metadata");
    assert_eq!(found("brand").await, Vec::<String>::new(), "metadata keys are not text");
    assert_eq!(found("100%").await, vec![zara.clone()], "% is literal");
    assert_eq!(found("a_b").await, vec![underscore.clone()], "_ is literal");
    assert_eq!(found("   ").await.len(), 5, "a blank query matches everything");

    // The query combines with filters, sort and pages.
    let body = json!({"query": ".jpg", "sort": "file_name", "order": "asc", "page": 2, "page_size": 2});
    let page = ok_json(app.search_images(&token, &body).await).await;
    assert_eq!(page["total"], 5);
    let names: Vec<&str> = page["items"].as_array().unwrap().iter().map(|i| i["file_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["blue.jpg", "plain.jpg"], "after a_b.jpg and axb.jpg");
    let body = json!({"query": "e", "tags": ["summer"], "is_public": false, "image_type": "user"});
    assert_eq!(ids(&ok_json(app.search_images(&token, &body).await).await), vec![dress.clone()]);

    // A change of name or tags is searchable at once.
    let response = app.update_image(&token, &evening, &json!({"tags": ["gala"], "file_name": "night.png"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(found("evening").await, Vec::<String>::new());
    assert_eq!(found("gala").await, vec![evening.clone()]);
    assert_eq!(found("night").await, vec![evening]);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn listed_items_carry_their_thumbnails(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let with = app.upload_image(&token, "user", "with.jpg", &[]).await;
    let without = app.upload_image(&token, "user", "without.jpg", &[]).await;
    for (size, width) in [("large", 600), ("small", 150)] {
        sqlx::query(
            "INSERT INTO storage_thumbnails (image_id, size_name, file_path, file_size, mime_type, width, height, checksum)
             VALUES ($1::uuid, $2, $3, 100, 'image/jpeg', $4, $4, repeat('a', 64))",
        )
        .bind(&with)
        .bind(size)
        .bind(format!("thumbnails/{with}_{size}.jpg"))
        .bind(width)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let page = ok_json(app.list_images(&token, &[("sort", "file_name")]).await).await;
    assert_eq!(ids(&page), vec![with.clone(), without]);
    let sizes: Vec<&str> = page["items"][0]["thumbnails"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["size"].as_str().unwrap())
        .collect();
    assert_eq!(sizes, ["small", "large"]);
    assert_eq!(page["items"][1]["thumbnails"]["variants"], json!([]));
    assert_eq!(page["items"][0], ok_json(app.get_image(&token, &with).await).await);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn include_urls_adds_each_items_access_urls_to_lists_and_searches(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let private = app.upload_image(&token, "user", "private.jpg", &[("tags", "red")]).await;
    let public = app.upload_image(&token, "user", "public.jpg", &[("tags", "red"), ("is_public", "true")]).await;
    sqlx::query(
        "INSERT INTO storage_thumbnails (image_id, size_name, file_path, file_size, mime_type, width, height, checksum)
         VALUES ($1::uuid, 'small', 'thumbnails/x_small.jpg', 100, 'image/jpeg', 150, 150, repeat('a', 64))",
    )
    .bind(&private)
    .execute(&app.pool)
    .await
    .unwrap();

    let query = [("sort", "file_name"), ("include_urls", "original, small,original")];
    let page = ok_json(app.list_images(&token, &query).await).await;
    assert_eq!(ids(&page), vec![private.clone(), public.clone()]);
    let urls = &page["items"][0]["urls"];
    assert_eq!(urls.as_object().unwrap().keys().collect::<Vec<_>>(), ["original", "small"]);
    assert_eq!((&urls["small"]["signed"], &urls["small"]["variant"]), (&json!(true), &json!("small")));
    let single = app.client.get(app.url(&format!("/storage/images/{public}/access"))).bearer_auth(&token);
    let single = ok_json(single.send().await.unwrap()).await;
    let public_urls = &page["items"][1]["urls"];
    assert_eq!(public_urls["original"], single, "the public URL, as /access gives it");
    assert!(public_urls.get("small").is_none(), "a thumbnail not made yet is left out");
    // The signed one works.
    let path = urls["original"]["url"].as_str().unwrap().strip_prefix(&app.config.server.base_url).unwrap().to_owned();
    assert_eq!(app.client.get(app.url(&path)).send().await.unwrap().status(), StatusCode::OK);

    let search = json!({"query": "public", "include_urls": ["original"]});
    let found = ok_json(app.search_images(&token, &search).await).await;
    assert_eq!(found["items"][0]["urls"]["original"], single);
    // Without it, items are as before.
    let plain = ok_json(app.list_images(&token, &[]).await).await;
    assert!(plain["items"].as_array().unwrap().iter().all(|item| item.get("urls").is_none()));
    assert!(ok_json(app.list_images(&token, &[("include_urls", "")]).await).await["items"][0].get("urls").is_none());

    for response in [
        app.list_images(&token, &[("include_urls", "small,huge")]).await,
        app.search_images(&token, &json!({"include_urls": ["../original"]})).await,
    ] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "invalid_variant");
    }
    let response = app.search_images(&token, &json!({"include_urls": []})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
