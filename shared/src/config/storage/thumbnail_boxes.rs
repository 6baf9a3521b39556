//! `storage.thumbnailSizes` in either of its two shapes: today's map of boxes by name, or
//! the architecture document's list of `{name, width, height}`. Both give the same map, and
//! a name written twice in the list is refused rather than one box silently winning.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};

use super::ThumbnailSize;

/// One entry of the list shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedBox {
    name: String,
    width: u32,
    height: u32,
}

pub(super) fn named_boxes<'de, D: Deserializer<'de>>(input: D) -> Result<BTreeMap<String, ThumbnailSize>, D::Error> {
    input.deserialize_any(Boxes)
}

struct Boxes;

impl<'de> Visitor<'de> for Boxes {
    type Value = BTreeMap<String, ThumbnailSize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of boxes by name (small: {width: 150, height: 150}) or a list of {name, width, height}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut boxes = BTreeMap::new();
        while let Some((name, size)) = entries.next_entry::<String, ThumbnailSize>()? {
            boxes.insert(name, size);
        }
        Ok(boxes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut boxes = BTreeMap::new();
        while let Some(NamedBox { name, width, height }) = entries.next_element()? {
            if boxes.insert(name.clone(), ThumbnailSize { width, height }).is_some() {
                return Err(A::Error::custom(format!("the thumbnail name `{name}` is written twice")));
            }
        }
        Ok(boxes)
    }
}
