//! Who the client is, for the rate limit: the peer address, or a header
//! set by a trusted proxy when the operator says there is one.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;

use super::AppState;

/// Where the client IP comes from.
///
/// Only trust a header when a proxy in front sets it and strips any copy
/// the client sent: otherwise every client can pick its own IP and the
/// rate limit means nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientIpHeader {
    /// The TCP peer address (the default).
    #[default]
    None,
    /// `CF-Connecting-IP`, set by Cloudflare.
    CfConnectingIp,
    /// The first entry of `X-Forwarded-For`, set by most reverse proxies.
    XForwardedFor,
}

impl ClientIpHeader {
    /// The client IP the header gives, if trusted, present and an IP
    /// address. Otherwise the caller falls back to the peer address.
    pub(crate) fn read(self, headers: &HeaderMap) -> Option<IpAddr> {
        let raw = match self {
            ClientIpHeader::None => return None,
            ClientIpHeader::CfConnectingIp => headers.get("cf-connecting-ip")?.to_str().ok()?,
            ClientIpHeader::XForwardedFor => headers
                .get("x-forwarded-for")?
                .to_str()
                .ok()?
                .split(',')
                .next()?,
        };
        raw.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }
}

/// The error for an unknown [`ClientIpHeader`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown client IP header {0:?}: expected none, cf-connecting-ip or x-forwarded-for")]
pub struct UnknownClientIpHeader(String);

impl FromStr for ClientIpHeader {
    type Err = UnknownClientIpHeader;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientIpHeader::None),
            "cf-connecting-ip" => Ok(ClientIpHeader::CfConnectingIp),
            "x-forwarded-for" => Ok(ClientIpHeader::XForwardedFor),
            _ => Err(UnknownClientIpHeader(s.to_owned())),
        }
    }
}

impl fmt::Display for ClientIpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientIpHeader::None => "none",
            ClientIpHeader::CfConnectingIp => "cf-connecting-ip",
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
        })
    }
}

/// The client's IP as text: the trusted header's if enabled and valid, the
/// peer's otherwise, `unknown` when served without connect info (as in
/// `oneshot` tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientIp(pub(crate) String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = state.client_ip_header.read(&parts.headers).or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_canonical())
        });
        Ok(ClientIp(
            ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn headers_are_read_only_when_trusted() {
        let h = headers(&[
            ("cf-connecting-ip", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1, 10.0.0.1"),
        ]);
        assert_eq!(ClientIpHeader::None.read(&h), None);
        assert_eq!(
            ClientIpHeader::CfConnectingIp.read(&h),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(
            ClientIpHeader::XForwardedFor.read(&h),
            "198.51.100.1".parse().ok()
        );
    }

    #[test]
    fn junk_and_mapped_addresses() {
        let h = headers(&[
            ("x-forwarded-for", "not an ip"),
            ("cf-connecting-ip", "::ffff:192.0.2.1"),
        ]);
        assert_eq!(ClientIpHeader::XForwardedFor.read(&h), None);
        assert_eq!(
            ClientIpHeader::CfConnectingIp.read(&h),
            "192.0.2.1".parse().ok()
        );
        assert_eq!(ClientIpHeader::XForwardedFor.read(&HeaderMap::new()), None);
    }

    #[test]
    fn names_round_trip() {
        for h in [
            ClientIpHeader::None,
            ClientIpHeader::CfConnectingIp,
            ClientIpHeader::XForwardedFor,
        ] {
            assert_eq!(h.to_string().parse::<ClientIpHeader>(), Ok(h));
        }
        assert!("forwarded".parse::<ClientIpHeader>().is_err());
    }
}
