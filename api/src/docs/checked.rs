//! [`Checked`]: a query parameter or JSON field that the document shows with its real type
//! (an enum, a UUID, an integer within bounds) while the handler reads the client's text.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::str::FromStr;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;
use shared::fields::FieldError;

/// The client's text for a value documented as `T` (within the bounds `B`). poem-openapi
/// would refuse a bad value itself with a generic `bad_request` before the handler runs;
/// with this the handler checks it and answers its own code naming the field
/// (`invalid_field`, `invalid_variant`, …), as `docs/api.md` promises.
pub struct Checked<T, B = Unbounded> {
    text: String,
    _documented_as: PhantomData<fn() -> (T, B)>,
}

impl<T, B> Checked<T, B> {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), _documented_as: PhantomData }
    }

    pub fn into_text(self) -> String {
        self.text
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text when it is exactly one of `T`'s values (no blank, no padding), else
    /// `invalid_field` naming `field`. For JSON fields, which have no empty-means-absent
    /// leniency of query strings.
    pub fn exact(self, field: &'static str) -> Result<String, FieldError>
    where
        T: ParseFromParameter,
    {
        match T::parse_from_parameter(&self.text) {
            Ok(_) => Ok(self.text),
            Err(_) => Err(FieldError::new(field, format!("`{}` is not one of the documented values", self.text))),
        }
    }

    /// The value, or `invalid_field` naming `field` and saying what it `must_be`.
    pub fn parse<V: FromStr>(&self, field: &'static str, must_be: &str) -> Result<V, FieldError> {
        self.text.trim().parse().map_err(|_| FieldError::new(field, format!("must be {must_be}")))
    }
}

impl<T, B> std::fmt::Debug for Checked<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Checked").field(&self.text).finish()
    }
}

impl<T, B> Clone for Checked<T, B> {
    fn clone(&self) -> Self {
        Self::new(self.text.clone())
    }
}

/// The inclusive bounds and the default of a number, stated in the document.
pub trait Bounds: Send + Sync + 'static {
    const MINIMUM: Option<f64> = None;
    const MAXIMUM: Option<f64> = None;
    const DEFAULT: Option<i64> = None;
}

/// No bounds beyond those of the type.
pub struct Unbounded;

impl Bounds for Unbounded {}

impl<T: Type, B: Bounds> Type for Checked<T, B> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        let bounds = MetaSchema {
            minimum: B::MINIMUM,
            maximum: B::MAXIMUM,
            default: B::DEFAULT.map(Value::from),
            ..MetaSchema::ANY
        };
        T::schema_ref().merge(bounds)
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.text)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.text))
    }
}

impl<T: Type, B: Bounds> ParseFromParameter for Checked<T, B> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self::new(value))
    }
}

/// In a JSON body a number is taken where `T` is one, a string elsewhere; any other JSON
/// type is refused as before (`bad_request`).
impl<T: Type, B: Bounds> ParseFromJSON for Checked<T, B> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) if !is_number::<T>() => Ok(Self::new(text)),
            Some(Value::Number(number)) if is_number::<T>() => Ok(Self::new(number.to_string())),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl<T: Type, B: Bounds> ToJSON for Checked<T, B> {
    fn to_json(&self) -> Option<Value> {
        if is_number::<T>() {
            return serde_json::from_str(&self.text).ok();
        }
        Some(Value::String(self.text.clone()))
    }
}

fn is_number<T: Type>() -> bool {
    matches!(T::schema_ref(), MetaSchemaRef::Inline(schema) if matches!(schema.ty, "integer" | "number"))
}

/// Optional text of a checked value, as `shared`'s parsers take it.
pub fn text<T, B>(value: Option<Checked<T, B>>) -> Option<String> {
    value.map(Checked::into_text)
}

/// A JSON string, and only a string: poem-openapi's `String` also takes a number or a
/// boolean (`"tags": [false]` would be stored as the tag `false`), which the document,
/// saying `string`, does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self(text)),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// The strings of `texts`.
pub fn strings(texts: Vec<Text>) -> Vec<String> {
    texts.into_iter().map(|text| text.0).collect()
}

/// A page number: 1 (the default) to 2^31 - 1.
pub struct PageNumber;

impl Bounds for PageNumber {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(i32::MAX as f64);
    const DEFAULT: Option<i64> = Some(1);
}

/// Items per page of a listing: 1 to [`MAX_PAGE_SIZE`], 20 by default.
pub struct PageSize;

impl Bounds for PageSize {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_PAGE_SIZE as f64);
    const DEFAULT: Option<i64> = Some(shared::search::DEFAULT_PAGE_SIZE);
}

/// The longest page of any listing.
pub const MAX_PAGE_SIZE: i64 = shared::search::MAX_PAGE_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SortField;

    #[test]
    fn any_text_reaches_the_handler_while_the_document_shows_the_type() {
        let sort = Checked::<SortField>::parse_from_parameter("id; DROP TABLE x").unwrap();
        assert_eq!(sort.as_str(), "id; DROP TABLE x");
        assert_eq!(Checked::<SortField>::schema_ref(), SortField::schema_ref());
        let MetaSchemaRef::Inline(page) = Checked::<i64, PageSize>::schema_ref() else { panic!("inline") };
        assert_eq!((page.ty, page.minimum, page.maximum), ("integer", Some(1.0), Some(100.0)));
        assert_eq!(page.default, Some(Value::from(20)));
        assert!(Checked::<SortField>::parse_from_json(Some(Value::from(3))).is_err());
        assert_eq!(Checked::<SortField>::parse_from_json(Some(Value::from("x"))).unwrap().as_str(), "x");
        assert!(Checked::<i64, PageSize>::parse_from_json(Some(Value::from("1"))).is_err());
        let page = Checked::<i64, PageSize>::parse_from_json(Some(Value::from(1.5))).unwrap();
        assert_eq!(page.as_str(), "1.5");
        assert!(page.parse::<i64>("page", "an integer").is_err());
        assert!(Checked::<SortField>::new("").exact("sort").is_err());
        assert!(Checked::<SortField>::new(" file_size").exact("sort").is_err());
        assert_eq!(Checked::<SortField>::new("file_size").exact("sort").unwrap(), "file_size");
        assert_eq!(Checked::<i64, PageSize>::new("7").to_json(), Some(Value::from(7)));
        assert!(Text::parse_from_json(Some(Value::Bool(false))).is_err());
        assert_eq!(Text::parse_from_json(Some(Value::from("red"))).unwrap(), Text("red".to_owned()));
    }
}
