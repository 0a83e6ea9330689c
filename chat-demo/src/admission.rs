//! What the front door tells a room about a socket it hands over: the
//! dialect, the client's IP and (dialect C) the user name from the query.
//!
//! It travels as one request header that the front door sets itself,
//! replacing any copy the client sent, so a client cannot choose its own IP
//! or dialect. A header (rather than a request extension) keeps the room's
//! `fetch` a plain HTTP request that could cross machines later.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::protocol::Dialect;

/// The header carrying the [`Admission`], as JSON in visible ASCII.
pub(crate) const ADMISSION_HEADER: HeaderName = HeaderName::from_static("x-chat-admission");

/// A socket's admission into a room, decided by the front door.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Admission {
    /// Which wire dialect the socket speaks.
    pub(crate) dialect: Dialect,
    /// The client's IP (the rate limit key).
    pub(crate) ip: String,
    /// Dialect C: the raw `name` query value (trimmed and checked by the
    /// room, which answers an over-long one on the socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Dialect C: the raw `ext` query value, the extensions the client opts
    /// in to (read by the room with `c::ext_from_query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ext: Option<String>,
    /// Dialect C: the raw `password` query value, for a room that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
}

impl Admission {
    /// Encodes as a header value: JSON with every non-ASCII character and
    /// DEL escaped as `\uXXXX` (serde_json already escapes the other control
    /// characters), which header values accept.
    pub(crate) fn to_header(&self) -> HeaderValue {
        let json = crate::protocol::to_json(self);
        let mut ascii = String::with_capacity(json.len());
        for ch in json.chars() {
            if ch.is_ascii() && ch != '\u{7f}' {
                ascii.push(ch);
            } else {
                // Non-ASCII only occurs inside JSON strings, where a \u
                // escape (a surrogate pair beyond the BMP) means the same.
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        // Invariant: `ascii` holds only ASCII from 0x20 to 0x7e (serde_json
        // escapes control characters, and we escaped everything else), all
        // of which header values accept.
        HeaderValue::from_str(&ascii).unwrap_or_else(|_| HeaderValue::from_static("{}"))
    }

    /// Reads the admission the front door set, if there is exactly one and
    /// it decodes.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Admission> {
        let mut values = headers.get_all(ADMISSION_HEADER).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        serde_json::from_slice(value.as_bytes()).ok()
    }

    /// Sets the admission on a request's headers, replacing every copy the
    /// client may have sent.
    pub(crate) fn set_on(&self, headers: &mut HeaderMap) {
        headers.insert(ADMISSION_HEADER, self.to_header());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(admission: &Admission) -> Option<Admission> {
        let mut headers = HeaderMap::new();
        admission.set_on(&mut headers);
        Admission::from_headers(&headers)
    }

    #[test]
    fn round_trips_hostile_names() {
        for name in [
            "bob",
            "",
            "ünïcødé 漢字 🦀",
            "quote\" back\\ nl\n tab\t nul\u{0} del\u{7f} ls\u{2028}",
        ] {
            let admission = Admission {
                dialect: Dialect::C,
                ip: "192.0.2.1".into(),
                name: Some(name.into()),
                ext: Some(format!("presence,{name}")),
                password: Some(name.into()),
            };
            let value = admission.to_header();
            assert!(value.to_str().is_ok(), "visible ASCII: {value:?}");
            assert_eq!(round_trip(&admission), Some(admission), "{name:?}");
        }
    }

    #[test]
    fn client_copies_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.append(
            ADMISSION_HEADER,
            HeaderValue::from_static(r#"{"dialect":"A","ip":"evil"}"#),
        );
        headers.append(ADMISSION_HEADER, HeaderValue::from_static("junk"));
        assert_eq!(
            Admission::from_headers(&headers),
            None,
            "two copies are refused"
        );
        let real = Admission {
            dialect: Dialect::B,
            ip: "203.0.113.9".into(),
            name: None,
            ext: None,
            password: None,
        };
        real.set_on(&mut headers);
        assert_eq!(Admission::from_headers(&headers), Some(real));
    }

    #[test]
    fn garbage_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(Admission::from_headers(&headers), None);
        headers.insert(ADMISSION_HEADER, HeaderValue::from_static("{"));
        assert_eq!(Admission::from_headers(&headers), None);
    }
}
