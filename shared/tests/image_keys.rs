//! The queries of `storage_image_keys` against the real PostgreSQL: a key per image, read
//! one at a time or a page at once, shredded with its image or on its own, listed for
//! rotation page by page, and re-wrapped only if no one else did it first.

use shared::db::image_keys;
use shared::model::ImageId;
use shared::test_support::insert_bare_image;
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_key_is_stored_once_read_alone_or_by_page_and_shredded(pool: PgPool) {
    let (a, b, keyless) =
        (insert_bare_image(&pool).await, insert_bare_image(&pool).await, insert_bare_image(&pool).await);
    assert!(image_keys::insert(&pool, a, "m1", &[1; 72]).await.unwrap());
    assert!(image_keys::insert(&pool, b, "m1", &[2; 72]).await.unwrap());
    assert!(!image_keys::insert(&pool, a, "m2", &[9; 72]).await.unwrap(), "an image keeps its first key");
    let row = image_keys::get(&pool, a).await.unwrap().unwrap();
    assert_eq!((row.image_id, row.key_id.as_str(), row.wrapped_key.as_slice()), (a, "m1", &[1u8; 72][..]));
    assert_eq!(image_keys::get(&pool, keyless).await.unwrap(), None);

    let mut page = image_keys::get_many(&pool, &[a, b, keyless, ImageId::new()]).await.unwrap();
    page.sort_by_key(|row| row.image_id);
    assert_eq!(page.iter().map(|row| row.image_id).collect::<Vec<_>>(), [a, b]);
    assert!(image_keys::get_many(&pool, &[]).await.unwrap().is_empty());

    assert!(image_keys::delete(&pool, a).await.unwrap());
    assert!(!image_keys::delete(&pool, a).await.unwrap(), "shredded already");
    assert_eq!(image_keys::get(&pool, a).await.unwrap(), None);
    // A key cannot outlive its image's row, nor exist without one.
    sqlx::query("DELETE FROM storage_files WHERE id = $1").bind(b.0).execute(&pool).await.unwrap();
    assert_eq!(image_keys::get(&pool, b).await.unwrap(), None);
    assert!(image_keys::insert(&pool, ImageId::new(), "m1", &[3; 72]).await.is_err());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn rotation_pages_through_the_keys_of_other_master_keys_and_updates_only_unchanged_rows(pool: PgPool) {
    let mut old = Vec::new();
    for index in 0..5 {
        let id = insert_bare_image(&pool).await;
        let key_id = if index == 2 {
            "m2"
        } else if index == 4 {
            "m0"
        } else {
            "m1"
        };
        image_keys::insert(&pool, id, key_id, &[index; 72]).await.unwrap();
        if key_id != "m2" {
            old.push(id);
        }
    }
    old.sort();
    let first = image_keys::list_not_under(&pool, "m2", None, 3).await.unwrap();
    let second = image_keys::list_not_under(&pool, "m2", Some(first[2].image_id), 3).await.unwrap();
    let listed: Vec<ImageId> = first.iter().chain(&second).map(|row| row.image_id).collect();
    assert_eq!(listed, old, "every key not under m2, each once, in id order");
    assert!(image_keys::list_not_under(&pool, "m2", Some(*old.last().unwrap()), 3).await.unwrap().is_empty());

    let row = &first[0];
    assert!(image_keys::rewrap(&pool, row.image_id, &row.key_id, "m2", &[7; 72]).await.unwrap());
    assert!(!image_keys::rewrap(&pool, row.image_id, &row.key_id, "m2", &[8; 72]).await.unwrap(), "already done");
    let now = image_keys::get(&pool, row.image_id).await.unwrap().unwrap();
    assert_eq!((now.key_id.as_str(), now.wrapped_key.as_slice()), ("m2", &[7u8; 72][..]));
    let counts = image_keys::count_by_key_id(&pool).await.unwrap();
    assert_eq!(counts.iter().map(|(_, count)| count).sum::<i64>(), 5);
    assert_eq!(counts.last(), Some(&("m2".to_owned(), 2)));
}
