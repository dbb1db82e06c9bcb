//! JSON as sources write it: an object's members in their order, a member's value as text.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them); a key
/// is borrowed from the text unless it has escapes.
pub(crate) struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key borrowed from the text where it can be.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The text a member's value is typed from: a string unescaped, a number or boolean as written,
/// an object or array as compact JSON; `None` for `null`.
pub(crate) fn member_text(v: &RawValue) -> Option<Cow<'_, str>> {
    let raw = v.get().trim();
    match raw.as_bytes().first() {
        Some(b'n') => None,
        // A string without escapes is its bytes between the quotes (the document was parsed).
        Some(b'"') if !raw.contains('\\') => Some(Cow::Borrowed(&raw[1..raw.len() - 1])),
        Some(b'"') => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        Some(b'{' | b'[') => Some(Cow::Owned(
            serde_json::from_str::<serde_json::Value>(raw)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| raw.to_string()),
        )),
        _ => Some(Cow::Borrowed(raw)),
    }
}
