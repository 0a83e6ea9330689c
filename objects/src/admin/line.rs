//! The JSON-lines form of export entries; `docs/operations.md` documents
//! it for users.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AdminError, Entry, ObjectInfo};
use crate::error::Result;
use crate::id::{ObjectId, parse_hex};
use crate::storage::StoredValue;
use data_encoding::BASE64;

/// The longest line [`Entry::to_json_line`] writes and an importer needs
/// to read, in bytes (256 KiB): a value of at most
/// [`MAX_VALUE_BYTES`](crate::MAX_VALUE_BYTES) (128 KiB) is at most 171 KiB
/// as base64 (a JSON value is copied as is), a key of at most 2 KiB at most
/// 12 KiB escaped, and the rest of a line (type, namespace, id, name) fits
/// in what is left. An entry whose line would be longer is an error on
/// export, so every exported line can be imported.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// The JSON form of a line (see `docs/operations.md`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    format: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    encoding: Option<&'a str>,
    /// Always `Some` when present, even for a JSON `null`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    value: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    at_ms: Option<u64>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl Line<'_> {
    fn bare(kind: &'static str) -> Line<'static> {
        Line {
            kind,
            format: None,
            secret: None,
            namespace: None,
            id: None,
            name: None,
            key: None,
            encoding: None,
            value: None,
            at_ms: None,
        }
    }

    fn object(kind: &'static str, o: &ObjectInfo) -> Line<'static> {
        Line {
            namespace: Some(o.namespace.clone()),
            id: Some(o.id.to_hex()),
            name: o.name.clone(),
            ..Line::bare(kind)
        }
    }
}

impl Entry {
    /// The entry as one line of JSON (no newline). Stored JSON values are
    /// copied verbatim, so a round trip through lines is exact.
    ///
    /// # Errors
    ///
    /// [`AdminError::Invalid`] for an [`StoredValue::Json`] that is not JSON.
    pub fn to_json_line(&self) -> Result<String> {
        let line = match self {
            Entry::Store { format, secret } => Line {
                format: Some(*format),
                secret: Some(ObjectId::from_parts(*secret, None).to_hex()),
                ..Line::bare("store")
            },
            Entry::Object(o) => Line::object("object", o),
            Entry::Key { object, key, value } => {
                let (encoding, raw) = match value {
                    StoredValue::Json(text) => ("json", text.clone()),
                    StoredValue::Bytes(b) => ("base64", format!("\"{}\"", BASE64.encode(b))),
                };
                let raw = RawValue::from_string(raw)
                    .map_err(|e| AdminError::Invalid(format!("value of key {key:?}: {e}")))?;
                Line {
                    key: Some(key.clone()),
                    encoding: Some(encoding),
                    value: Some(raw),
                    ..Line::object("key", object)
                }
            }
            Entry::Alarm { object, at_ms } => Line {
                at_ms: Some(*at_ms),
                ..Line::object("alarm", object)
            },
        };
        let text = serde_json::to_string(&line).map_err(|e| AdminError::Invalid(e.to_string()))?;
        if text.len() > MAX_LINE_BYTES {
            return Err(AdminError::Invalid(format!(
                "an export line of {} bytes is over the limit of {MAX_LINE_BYTES}",
                text.len()
            ))
            .into());
        }
        Ok(text)
    }

    /// Parses one line made by [`Entry::to_json_line`].
    ///
    /// # Errors
    ///
    /// [`AdminError::Malformed`] naming what is wrong.
    pub fn from_json_line(line: &str) -> Result<Entry, AdminError> {
        let bad = |m: &str| AdminError::Malformed(m.to_string());
        let l: Line<'_> =
            serde_json::from_str(line).map_err(|e| AdminError::Malformed(e.to_string()))?;
        let object = |l: &Line<'_>| -> Result<ObjectInfo, AdminError> {
            let namespace = l
                .namespace
                .clone()
                .ok_or_else(|| bad("missing \"namespace\""))?;
            let id = l.id.as_deref().ok_or_else(|| bad("missing \"id\""))?;
            let id = parse_hex(id).map_err(|_| bad("\"id\" is not 64 hex digits"))?;
            Ok(ObjectInfo::new(namespace, id, l.name.clone()))
        };
        match l.kind {
            "store" => {
                let format = l.format.ok_or_else(|| bad("missing \"format\""))?;
                let secret = l
                    .secret
                    .as_deref()
                    .ok_or_else(|| bad("missing \"secret\""))?;
                let secret =
                    parse_hex(secret).map_err(|_| bad("\"secret\" is not 64 hex digits"))?;
                Ok(Entry::Store { format, secret })
            }
            "object" => Ok(Entry::Object(object(&l)?)),
            "key" => {
                let object = object(&l)?;
                let key = l.key.clone().ok_or_else(|| bad("missing \"key\""))?;
                let raw = l.value.as_deref().ok_or_else(|| bad("missing \"value\""))?;
                let value = match l.encoding {
                    Some("json") => StoredValue::Json(raw.get().to_string()),
                    Some("base64") => {
                        let text: &str = serde_json::from_str(raw.get())
                            .map_err(|_| bad("a base64 \"value\" must be a string"))?;
                        StoredValue::Bytes(
                            // Strict: padding and zero trailing bits, so one
                            // text decodes to one byte string.
                            BASE64
                                .decode(text.as_bytes())
                                .map_err(|_| bad("\"value\" is not valid base64"))?
                                .into(),
                        )
                    }
                    Some(_) => return Err(bad("\"encoding\" must be \"json\" or \"base64\"")),
                    None => return Err(bad("missing \"encoding\"")),
                };
                Ok(Entry::Key { object, key, value })
            }
            "alarm" => {
                let object = object(&l)?;
                let at_ms = l.at_ms.ok_or_else(|| bad("missing \"at_ms\""))?;
                Ok(Entry::Alarm { object, at_ms })
            }
            other => Err(AdminError::Malformed(format!(
                "unknown \"type\" {other:?} (store, object, key or alarm)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn object() -> ObjectInfo {
        ObjectInfo::new("rooms", [7; 32], Some("general".into()))
    }

    #[test]
    fn lines_round_trip_exactly() {
        let entries = [
            Entry::Store {
                format: 1,
                secret: [9; 32],
            },
            Entry::Object(ObjectInfo::new("rooms", [1; 32], None)),
            Entry::Key {
                object: object(),
                key: "msg/1".into(),
                value: StoredValue::Json(r#"{"z":1,"a":[null, 2.5]}"#.into()),
            },
            Entry::Key {
                object: object(),
                key: "n".into(),
                value: StoredValue::Json("null".into()),
            },
            Entry::Key {
                object: object(),
                key: "raw\n\"".into(),
                value: StoredValue::Bytes(Bytes::from_static(&[0, 255, 10])),
            },
            Entry::Alarm {
                object: object(),
                at_ms: 1_700_000_000_000,
            },
        ];
        for e in entries {
            let line = e.to_json_line().expect("line");
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(Entry::from_json_line(&line).expect("parse"), e, "{line}");
        }
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let cases = [
            ("", "EOF"),
            ("{}", "type"),
            (r#"{"type":"nope"}"#, "unknown \"type\""),
            (r#"{"type":"key","namespace":"r","id":"00"}"#, "64 hex"),
            (
                r#"{"type":"key","namespace":"r","id":"0000000000000000000000000000000000000000000000000000000000000000","key":"k","encoding":"base64","value":"%%"}"#,
                "base64",
            ),
            (
                // Not canonical: the last digit's low bits are not zero.
                r#"{"type":"key","namespace":"r","id":"0000000000000000000000000000000000000000000000000000000000000000","key":"k","encoding":"base64","value":"Zh=="}"#,
                "base64",
            ),
            (r#"{"type":"alarm","extra":1}"#, "unknown field"),
        ];
        for (line, want) in cases {
            let e = Entry::from_json_line(line).expect_err(line).to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
