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
    /// `X-Forwarded-For`, set by most reverse proxies: the entry the
    /// outermost trusted proxy appended: the N-th from the right for N
    /// trusted proxy hops.
    XForwardedFor,
}

impl ClientIpHeader {
    /// The client IP the header gives, if trusted, present and an IP
    /// address. Otherwise the caller falls back to the peer address.
    ///
    /// `X-Forwarded-For` is read from the right: each proxy appends the
    /// address it got the request from, so with `hops` trusted proxies in
    /// front the client is the `hops`-th entry from the right; anything to
    /// its left was sent by the client and proves nothing. Fewer entries
    /// than hops (a request that skipped a proxy) give `None`. `hops` 0
    /// counts as 1.
    pub fn read(self, headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
        let raw = match self {
            ClientIpHeader::None => return None,
            ClientIpHeader::CfConnectingIp => headers.get("cf-connecting-ip")?.to_str().ok()?,
            ClientIpHeader::XForwardedFor => {
                // Several header lines are one list, in order.
                let mut entries = Vec::new();
                for line in headers.get_all("x-forwarded-for") {
                    entries.extend(line.to_str().ok()?.split(','));
                }
                let from_right = hops.max(1);
                let at = entries.len().checked_sub(from_right)?;
                entries[at]
            }
        };
        raw.trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    }
}

/// The key a client IP is counted under (rate limits, connection caps):
/// an IPv4 address as is, an IPv6 address cut to its first `v6_prefix`
/// bits (`2001:db8:1:2::/64`), since one subscriber usually holds a whole
/// /64 and could otherwise take a fresh key per request.
pub fn ip_key(ip: IpAddr, v6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = v6_prefix.min(128);
            if prefix == 128 {
                return v6.to_string();
            }
            let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
            let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{prefix}")
        }
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
        let ip = state
            .client_ip_header
            .read(&parts.headers, state.trusted_proxy_hops)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip())
            });
        Ok(ClientIp(ip.map_or_else(
            || "unknown".to_owned(),
            |ip| ip_key(ip, state.ipv6_prefix),
        )))
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
        assert_eq!(ClientIpHeader::None.read(&h, 1), None);
        assert_eq!(
            ClientIpHeader::CfConnectingIp.read(&h, 1),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(
            ClientIpHeader::XForwardedFor.read(&h, 2),
            "198.51.100.1".parse().ok()
        );
    }

    #[test]
    fn junk_and_mapped_addresses() {
        let h = headers(&[
            ("x-forwarded-for", "not an ip"),
            ("cf-connecting-ip", "::ffff:192.0.2.1"),
        ]);
        assert_eq!(ClientIpHeader::XForwardedFor.read(&h, 1), None);
        assert_eq!(
            ClientIpHeader::CfConnectingIp.read(&h, 1),
            "192.0.2.1".parse().ok()
        );
        assert_eq!(
            ClientIpHeader::XForwardedFor.read(&HeaderMap::new(), 1),
            None
        );
    }

    #[test]
    fn forwarded_for_is_read_from_the_right() {
        // The client sent "6.6.6.6" itself; nginx appended the real peer.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.1")]);
        let xff = ClientIpHeader::XForwardedFor;
        assert_eq!(xff.read(&h, 1), "198.51.100.1".parse().ok(), "one proxy");
        assert_eq!(xff.read(&h, 2), "6.6.6.6".parse().ok(), "two proxies");
        assert_eq!(xff.read(&h, 3), None, "fewer entries than hops");
        assert_eq!(xff.read(&h, 0), xff.read(&h, 1), "0 hops means 1");
        // Two header lines are one list: the last line's last entry wins.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "10.0.0.1, 203.0.113.5"),
        ]);
        assert_eq!(xff.read(&split, 1), "203.0.113.5".parse().ok());
        assert_eq!(xff.read(&split, 3), "6.6.6.6".parse().ok());
        // A junk entry where the client should be is no IP at all, not the
        // next one along.
        let junk = headers(&[("x-forwarded-for", "1.2.3.4, junk")]);
        assert_eq!(xff.read(&junk, 1), None);
    }

    #[test]
    fn ipv6_is_keyed_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a, 64), "2001:db8:1:2::/64");
        assert_eq!(ip_key(a, 64), ip_key(b, 64), "one /64, one key");
        assert_ne!(ip_key(a, 64), ip_key(other, 64), "the next /64 differs");
        assert_eq!(ip_key(a, 48), ip_key(other, 48), "a /48 holds both");
        assert_eq!(ip_key(a, 128), "2001:db8:1:2:aaaa::1", "/128: the address");
        assert_eq!(ip_key(a, 200), ip_key(a, 128), "clamped to 128");
        assert_eq!(ip_key(a, 0), "::/0");
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(ip_key(v4, 64), "192.0.2.1", "IPv4 as is");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(ip_key(mapped, 64), "192.0.2.1", "mapped IPv4 as IPv4");
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
