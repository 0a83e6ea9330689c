//! Which browser pages may open a chat socket: the WebSocket `Origin`
//! policy.
//!
//! Browsers send `Origin` on every WebSocket handshake, and a socket is not
//! subject to the same-origin policy: without this check any page on the
//! web could open sockets into our rooms from its visitors' browsers (and
//! spend their IPs' rate limit). Non-browser clients send no `Origin` and
//! are let in: the check protects browsers' users, not the server.

use http::{HeaderMap, header};

/// The WebSocket origin policy.
///
/// Allowed: requests without an `Origin` header (non-browser clients); the
/// server's own origin, that is scheme, host and port all equal to the
/// request's (the scheme the request came in by, the `Host` header's host,
/// and its port or the scheme's default port); `localhost`, `127.0.0.1`
/// and `[::1]` on any port (development); and every origin in `extra`,
/// compared as `scheme://host[:port]` (case-insensitive, default ports
/// implied), or any origin at all if `extra` holds `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    extra: Vec<Origin>,
    /// Configured entries that are not origins: compared as text.
    extra_text: Vec<String>,
}

impl OriginPolicy {
    /// The policy with the configured extra origins.
    pub fn new(extra: &[String]) -> OriginPolicy {
        let mut policy = OriginPolicy::default();
        for entry in extra {
            let entry = entry.trim();
            if entry == "*" {
                policy.any = true;
            } else if let Some(origin) = Origin::parse(entry) {
                policy.extra.push(origin);
            } else {
                policy.extra_text.push(entry.to_ascii_lowercase());
            }
        }
        policy
    }

    /// Checks a handshake's headers; `scheme` is the one the request came
    /// in by (see [`request_scheme`]).
    ///
    /// # Errors
    ///
    /// The refused `Origin` value, for the 403 text.
    pub fn check(&self, headers: &HeaderMap, scheme: Scheme) -> Result<(), String> {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let Some(value) = values.next() else {
            return Ok(());
        };
        let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if values.next().is_some() {
            return Err(raw);
        }
        if self.any || self.extra_text.contains(&raw.trim().to_ascii_lowercase()) {
            return Ok(());
        }
        let Some(origin) = Origin::parse(raw.trim()) else {
            return Err(raw);
        };
        // Our own origin: the request's scheme, and the Host header's port
        // or that scheme's default (never the Origin's own port).
        let same_origin = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| Authority::parse(h, scheme.default_port()))
            .is_some_and(|host| host == origin.authority() && origin.scheme() == Some(scheme));
        if same_origin || origin.is_loopback() || self.extra.contains(&origin) {
            Ok(())
        } else {
            Err(raw)
        }
    }
}

/// The scheme a request came in by, as a browser names it in `Origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http` (and `ws`).
    Http,
    /// `https` (and `wss`).
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The scheme of a request to this server: HTTP (it serves no TLS),
/// unless a trusted proxy in front says with `X-Forwarded-Proto` (its last
/// value: the one the nearest proxy set) that the client came in by HTTPS.
/// Without a trusted proxy the header is ignored: a client could send it.
pub fn request_scheme(headers: &HeaderMap, behind_trusted_proxy: bool) -> Scheme {
    if !behind_trusted_proxy {
        return Scheme::Http;
    }
    let last = headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back();
    match last {
        Some(proto) if proto.trim().eq_ignore_ascii_case("https") => Scheme::Https,
        _ => Scheme::Http,
    }
}

/// `host[:port]`, lower-cased, with the port made explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: u16,
}

impl Authority {
    /// Parses `host[:port]` (IPv6 in brackets); a missing port is
    /// `default_port`.
    fn parse(text: &str, default_port: u16) -> Option<Authority> {
        let text = text.trim().to_ascii_lowercase();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let host = format!("[{inside}]");
            match after {
                "" => (host, None),
                after => (host, Some(after.strip_prefix(':')?)),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (text.clone(), None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let port = match port {
            Some(port) => port.parse().ok()?,
            None => default_port,
        };
        Some(Authority { host, port })
    }
}

/// A parsed `Origin`: `scheme://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let text = text.strip_suffix('/').unwrap_or(text);
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let Authority { host, port } = Authority::parse(rest, default_port)?;
        Some(Origin { scheme, host, port })
    }

    fn authority(&self) -> Authority {
        Authority {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// The page scheme this origin names (`ws`/`wss` as their HTTP
    /// counterparts).
    fn scheme(&self) -> Option<Scheme> {
        match self.scheme.as_str() {
            "http" | "ws" => Some(Scheme::Http),
            "https" | "wss" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, http::HeaderValue::from_static(host));
        if let Some(origin) = origin {
            map.insert(header::ORIGIN, http::HeaderValue::from_static(origin));
        }
        map
    }

    #[test]
    fn default_policy() {
        let policy = OriginPolicy::default();
        let allowed = [
            (None, "chat.example:8080"),
            (Some("http://chat.example:8080"), "chat.example:8080"),
            (Some("http://Chat.Example"), "chat.example:80"),
            (Some("http://chat.example"), "chat.example"),
            (Some("http://chat.example:80"), "chat.example"),
            (Some("http://localhost:3000"), "chat.example"),
            (Some("https://127.0.0.1"), "chat.example"),
            (Some("http://[::1]:8787"), "chat.example"),
        ];
        for (origin, host) in allowed {
            assert_eq!(
                policy.check(&headers(origin, host), Scheme::Http),
                Ok(()),
                "{origin:?}"
            );
        }
        let refused = [
            (Some("http://evil.example"), "chat.example"),
            (Some("http://chat.example:8081"), "chat.example:8080"),
            // A Host without a port is the scheme's default port, not
            // whatever port the Origin names.
            (Some("http://chat.example:8081"), "chat.example"),
            (Some("http://chat.example:443"), "chat.example"),
            // The scheme counts: we were reached by plain HTTP.
            (Some("https://chat.example"), "chat.example"),
            (Some("https://chat.example:443"), "chat.example:443"),
            (Some("https://chat.example:8080"), "chat.example:8080"),
            (Some("http://chat.example.evil.example"), "chat.example"),
            (Some("http://localhost.evil.example"), "chat.example"),
            (Some("null"), "chat.example"),
            (Some("file://"), "chat.example"),
            (Some("http://user@chat.example"), "chat.example"),
        ];
        for (origin, host) in refused {
            assert!(
                policy.check(&headers(origin, host), Scheme::Http).is_err(),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn behind_a_tls_proxy() {
        let policy = OriginPolicy::default();
        let https = |origin, host| policy.check(&headers(Some(origin), host), Scheme::Https);
        assert_eq!(https("https://chat.example", "chat.example"), Ok(()));
        assert_eq!(https("https://chat.example:443", "chat.example"), Ok(()));
        assert_eq!(https("wss://chat.example", "chat.example"), Ok(()));
        assert!(https("http://chat.example", "chat.example").is_err());
        assert!(https("https://chat.example:8443", "chat.example").is_err());
    }

    #[test]
    fn the_forwarded_scheme_needs_a_trusted_proxy() {
        let mut map = HeaderMap::new();
        map.append("x-forwarded-proto", http::HeaderValue::from_static("https"));
        assert_eq!(request_scheme(&map, false), Scheme::Http, "untrusted");
        assert_eq!(request_scheme(&map, true), Scheme::Https);
        // The nearest proxy's value (the last) counts.
        map.append(
            "x-forwarded-proto",
            http::HeaderValue::from_static("https, http"),
        );
        assert_eq!(request_scheme(&map, true), Scheme::Http);
        assert_eq!(request_scheme(&HeaderMap::new(), true), Scheme::Http);
    }

    #[test]
    fn extra_origins_and_wildcard() {
        let policy = OriginPolicy::new(&["https://app.example/".into(), "null".into()]);
        let check =
            |policy: &OriginPolicy, origin| policy.check(&headers(Some(origin), "x"), Scheme::Http);
        assert_eq!(check(&policy, "https://APP.example:443"), Ok(()));
        assert_eq!(check(&policy, "null"), Ok(()));
        assert!(check(&policy, "http://app.example").is_err());
        assert!(check(&policy, "https://app.example:8443").is_err());
        let any = OriginPolicy::new(&["*".into()]);
        assert_eq!(check(&any, "http://evil.example"), Ok(()));
    }

    #[test]
    fn two_origin_headers_are_refused() {
        let mut map = headers(Some("http://localhost"), "localhost");
        map.append(header::ORIGIN, http::HeaderValue::from_static("http://x"));
        assert!(OriginPolicy::default().check(&map, Scheme::Http).is_err());
    }
}
