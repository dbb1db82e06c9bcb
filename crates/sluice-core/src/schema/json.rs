//! JSON as sources write it: an object's members in their order, a member's value as text.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them).
pub(crate) struct Members<'a>(pub Vec<(String, &'a RawValue)>);

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
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(kv);
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
