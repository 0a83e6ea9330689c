//! The value codec: every stored value starts with a tag byte saying how
//! the rest is encoded (JSON from `put`, raw bytes from `put_bytes`; see
//! `docs/storage.md`).

use bytes::{Buf, Bytes};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StorageError;
use super::layout;

/// How a stored value is encoded (the first byte of every value).
pub(crate) fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, StorageError> {
    let mut v = vec![layout::TAG_JSON];
    serde_json::to_writer(&mut v, value).map_err(|e| StorageError::Codec(Box::new(e)))?;
    Ok(Bytes::from(v))
}

pub(super) fn encode_raw(value: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + value.len());
    v.push(layout::TAG_BYTES);
    v.extend_from_slice(value);
    Bytes::from(v)
}

pub(super) fn decode<T: DeserializeOwned>(stored: &Bytes) -> Result<T, StorageError> {
    match stored.first() {
        Some(&layout::TAG_JSON) => {
            serde_json::from_slice(&stored[1..]).map_err(|e| StorageError::Codec(Box::new(e)))
        }
        Some(&layout::TAG_BYTES) => Err(StorageError::Codec(
            "value was stored as raw bytes; read it with get_bytes".into(),
        )),
        _ => Err(StorageError::Corrupt("value has an unknown tag".into())),
    }
}

/// The value without its tag byte. Advances in place: `Bytes::slice`
/// would allocate a shared header for a buffer that one owner holds.
pub(super) fn payload(mut stored: Bytes) -> Bytes {
    stored.advance(1.min(stored.len()));
    stored
}

/// A value as it is stored: the JSON text that `put` wrote (byte for byte)
/// or the bytes that `put_bytes` wrote. Export, import, listings outside an
/// object and the inspector all use this one type.
///
/// It serialises (for the inspector) as `{"kind":"json","value":<the
/// JSON>}`, `{"kind":"text","value":"…"}` for bytes that are UTF-8, or
/// `{"kind":"hex","value":"…"}` for other bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    /// Written with `put`: its JSON text.
    Json(String),
    /// Written with `put_bytes`.
    Bytes(Bytes),
}

impl StoredValue {
    /// Decodes a value written with `put` as `T`.
    ///
    /// # Errors
    ///
    /// [`StorageError::Codec`] if it does not decode as `T` or was written
    /// with `put_bytes`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StorageError> {
        match self {
            StoredValue::Json(text) => {
                serde_json::from_str(text).map_err(|e| StorageError::Codec(Box::new(e)))
            }
            StoredValue::Bytes(_) => Err(StorageError::Codec(
                "value was stored as raw bytes; read it with get_bytes".into(),
            )),
        }
    }

    /// Reads a value from its stored form (tag byte, then payload).
    pub(crate) fn from_stored(v: &[u8]) -> Result<StoredValue, StorageError> {
        match v.split_first() {
            Some((&layout::TAG_JSON, text)) => std::str::from_utf8(text)
                .map(|t| StoredValue::Json(t.to_string()))
                .map_err(|_| StorageError::Corrupt("a JSON value is not UTF-8".into())),
            Some((&layout::TAG_BYTES, raw)) => Ok(StoredValue::Bytes(Bytes::copy_from_slice(raw))),
            _ => Err(StorageError::Corrupt("a value has an unknown tag".into())),
        }
    }

    /// The stored form: tag byte, then payload.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let (tag, payload) = match self {
            StoredValue::Json(text) => (layout::TAG_JSON, text.as_bytes()),
            StoredValue::Bytes(b) => (layout::TAG_BYTES, b.as_ref()),
        };
        let mut v = Vec::with_capacity(1 + payload.len());
        v.push(tag);
        v.extend_from_slice(payload);
        v
    }
}

impl serde::Serialize for StoredValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("StoredValue", 2)?;
        match self {
            StoredValue::Json(text) => {
                match serde_json::value::RawValue::from_string(text.clone()) {
                    Ok(raw) => {
                        st.serialize_field("kind", "json")?;
                        st.serialize_field("value", &raw)?;
                    }
                    // Not JSON after all (a store edited by hand): show it.
                    Err(_) => {
                        st.serialize_field("kind", "text")?;
                        st.serialize_field("value", text)?;
                    }
                }
            }
            StoredValue::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => {
                    st.serialize_field("kind", "text")?;
                    st.serialize_field("value", t)?;
                }
                Err(_) => {
                    st.serialize_field("kind", "hex")?;
                    st.serialize_field("value", &data_encoding::HEXLOWER.encode(b))?;
                }
            },
        }
        st.end()
    }
}
