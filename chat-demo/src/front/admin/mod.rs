//! The operator's door, on its own listener (loopback by default): the
//! Prometheus metrics and, when enabled, the inspector page and its JSON
//! API. Every route needs the admin token (or a signed-in session) when a
//! token is configured; the inspector cannot be enabled without one. Every
//! request must name the admin address in `Host`, so a web page cannot
//! reach it through DNS rebinding. All of it reads, except the cluster
//! operations of a cluster node (`cluster_ops`), which move shards and need
//! the token as a bearer header.

mod cluster_ops;
#[cfg(target_os = "linux")]
mod process;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use objects::{Runtime, ViewOptions};
use serde::Deserialize;

/// The inspector page (text only: every value goes through `textContent`).
const INSPECTOR_HTML: &str = include_str!("../../../assets/inspector.html");
/// The inspector's sign-in form.
const LOGIN_HTML: &str = include_str!("../../../assets/inspector-login.html");

/// The cookie that carries the inspector's session id (never the token).
const COOKIE: &str = "chat_admin_session";

/// Settings of the admin listener.
#[derive(Clone)]
pub struct AdminOptions {
    /// Required on every admin route when set (as `Authorization: Bearer`
    /// or the inspector's cookie).
    pub token: Option<String>,
    /// Serve the inspector page and API (needs a token).
    pub inspector: bool,
    /// Where `/metrics` renders from; `None` answers 404 there.
    pub prometheus: Option<PrometheusHandle>,
    /// The address the admin routes are served on: every request's `Host`
    /// must name it (for a loopback address also as `localhost:<port>`;
    /// for an unspecified one, `0.0.0.0` or `[::]`, any host on its port),
    /// else 421. `None`: no check (routes served some other way, as in
    /// tests).
    pub listen: Option<SocketAddr>,
    /// On a cluster node: the operations `POST /cluster/*` run (see
    /// [`ClusterOps`]); `None` serves none.
    pub cluster: Option<Arc<dyn ClusterOps>>,
}

pub use cluster_ops::{ClusterOps, OpFuture};

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("inspector", &self.inspector)
            .field("prometheus", &self.prometheus.is_some())
            .field("listen", &self.listen)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

/// The inspector was asked for without a token.
#[derive(Debug, thiserror::Error)]
#[error("the inspector needs an admin token (--admin-token or CHAT_ADMIN_TOKEN)")]
pub struct InspectorNeedsToken;

#[derive(Clone)]
struct Admin {
    rt: Runtime,
    token: Option<Arc<str>>,
    prometheus: Option<PrometheusHandle>,
    sign_ins: Arc<session::SignIns>,
    listen: Option<SocketAddr>,
    cluster: Option<Arc<dyn ClusterOps>>,
}

/// The admin routes over `rt`:
///
/// | route | |
/// |---|---|
/// | `GET /metrics` | Prometheus text format |
/// | `GET /inspector` | the inspector page (inspector only) |
/// | `GET, POST /inspector/login` | sign in with the token (sets a cookie) |
/// | `GET /inspector/api/summary` | namespaces, state figures, metrics text |
/// | `GET /inspector/api/objects?ns=&after=&limit=` | a page of objects |
/// | `GET /inspector/api/object?ns=&id=&prefix=&after=&limit=` | one object |
/// | `POST /cluster/drain`, `/cluster/rebalance`, `/cluster/restore-shard` | a cluster node's operations (`cluster_ops`; bearer token only) |
///
/// # Errors
///
/// The inspector is enabled without a token.
pub fn admin_app(rt: &Runtime, options: AdminOptions) -> Result<Router, InspectorNeedsToken> {
    let token = options.token.filter(|t| !t.is_empty()).map(Arc::from);
    if options.inspector && token.is_none() {
        return Err(InspectorNeedsToken);
    }
    let state = Admin {
        rt: rt.clone(),
        token,
        prometheus: options.prometheus,
        sign_ins: Arc::new(session::SignIns::new()),
        listen: options.listen,
        cluster: options.cluster.clone(),
    };
    // Data routes: the token is checked once, in front of all of them.
    let mut router = Router::new().route("/metrics", get(metrics));
    if options.inspector {
        router = router
            .route("/inspector/api/summary", get(summary))
            .route("/inspector/api/objects", get(objects))
            .route("/inspector/api/object", get(object));
    }
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_token,
    ));
    // Cluster operations check the bearer token themselves (no cookie).
    router = cluster_ops::routes(router, options.cluster.as_ref());
    // The page (which sends strangers to sign in) and the sign-in itself.
    if options.inspector {
        router = router
            .route("/inspector", get(inspector_page))
            .route("/inspector/login", get(login_page).post(login))
            .route("/inspector/logout", axum::routing::post(logout));
    }
    Ok(router
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_host,
        ))
        .layer(axum::middleware::map_response(harden))
        .with_state(state))
}

impl Admin {
    /// Whether the request carries the token (`Authorization: Bearer`) or
    /// the cookie of an open session; always true without a configured
    /// token.
    fn allows(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        self.bearer(headers) || session_cookie(headers).any(|id| self.sign_ins.is_open(id))
    }

    /// Whether the request carries the token as `Authorization: Bearer`
    /// (false without a configured token).
    fn bearer(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|given| same(given.trim().as_bytes(), token.as_bytes()))
    }

    /// Whether `Host` names the admin address.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(listen) = self.listen else {
            return true;
        };
        let mut hosts = headers.get_all(header::HOST).iter();
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            return false;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        host_names(host, listen)
    }
}

/// Whether `host` (a `Host` header) names `listen`: its IP and port, or
/// `localhost` on its port when it is a loopback address; any host on its
/// port when it is unspecified (the operator chose to serve everywhere).
fn host_names(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => (name, port),
        _ => return false, // the admin port is never a default one
    };
    if port.parse::<u16>().ok() != Some(listen.port()) {
        return false;
    }
    let ip = listen.ip();
    if ip.is_unspecified() {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|given| given.to_canonical() == ip.to_canonical())
        || (ip.is_loopback() && name == "localhost")
}

/// The session ids in the request's cookies.
fn session_cookie(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Refuses a request whose `Host` does not name the admin address.
async fn require_host(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if admin.host_allowed(request.headers()) {
        next.run(request).await
    } else {
        plain(
            StatusCode::MISDIRECTED_REQUEST,
            "This is the admin address: use its IP and port (or localhost) as the host.",
        )
    }
}

/// Refuses a data route's request without the token.
async fn require_token(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if admin.allows(request.headers()) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

/// Headers on every admin answer: error texts repeat what the caller sent,
/// so no content sniffing; no referrer leaves the inspector.
async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether `given` equals `secret`, in a time that depends only on the
/// length of `given` (the caller's), never on the secret's length or on
/// where the first difference is.
fn same(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut diff = u8::from(given.len() != secret.len());
    for (i, g) in given.iter().enumerate() {
        diff |= g ^ secret[i % secret.len()];
    }
    std::hint::black_box(diff) == 0
}

use super::text as plain;

fn unauthorized() -> Response {
    let mut response = plain(StatusCode::UNAUTHORIZED, "The admin token is required.");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html;charset=UTF-8"),
            // The pages load nothing from elsewhere and are never framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let Some(prometheus) = admin.prometheus else {
        return plain(StatusCode::NOT_FOUND, "Metrics are not recorded.");
    };
    // The gauges walk every live object and read LMDB: off the workers.
    let rt = admin.rt;
    match tokio::task::spawn_blocking(move || {
        rt.publish_metrics();
        prometheus.render() + &process_metrics()
    })
    .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The process's own figures: read from `/proc` on Linux.
#[cfg(target_os = "linux")]
fn process_metrics() -> String {
    process::render()
}

/// The process's own figures: none outside Linux.
#[cfg(not(target_os = "linux"))]
fn process_metrics() -> String {
    String::new()
}

async fn inspector_page(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !admin.allows(&headers) {
        return Redirect::to("/inspector/login").into_response();
    }
    html(INSPECTOR_HTML)
}

async fn login_page() -> Response {
    html(LOGIN_HTML)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(admin): State<Admin>, form: axum::extract::Form<LoginForm>) -> Response {
    if !admin.sign_ins.attempt() {
        tracing::warn!("inspector sign-in refused: too many attempts");
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts; wait a minute and try again.",
        );
    }
    let token = admin.token.as_deref().unwrap_or_default();
    if !same(form.token.trim().as_bytes(), token.as_bytes()) {
        tracing::info!("inspector sign-in refused: wrong token");
        // The form again (its script shows why); no cookie.
        let mut page = html(LOGIN_HTML);
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    // A fresh random session id, kept from scripts and other sites; the
    // token itself never goes into a cookie.
    let Some(id) = admin.sign_ins.open() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No randomness for a session id.",
        );
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        session::SESSION_TTL.as_secs()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/inspector".to_owned()),
        ],
    )
        .into_response()
}

/// Ends the session of the request's cookie (revoked on the server, not
/// only forgotten by the browser) and clears the cookie.
async fn logout(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    for id in session_cookie(&headers) {
        admin.sign_ins.close(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/inspector/login".to_owned()),
        ],
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct Summary {
    stats: objects::RuntimeStats,
    /// The Prometheus text, for the page's live figures.
    metrics: String,
}

async fn summary(State(admin): State<Admin>) -> Response {
    read(move || {
        let stats = admin.rt.stats();
        stats.publish();
        let metrics = admin
            .prometheus
            .as_ref()
            .map(PrometheusHandle::render)
            .unwrap_or_default();
        Ok(Summary { stats, metrics })
    })
    .await
}

#[derive(Deserialize)]
struct ObjectsQuery {
    ns: String,
    after: Option<String>,
    limit: Option<usize>,
}

async fn objects(State(admin): State<Admin>, Query(q): Query<ObjectsQuery>) -> Response {
    let after = q.after.filter(|a| !a.is_empty());
    let limit = q.limit.unwrap_or(objects::MAX_LISTED_OBJECTS);
    let rt = admin.rt.clone();
    read(move || rt.list_objects(&q.ns, after.as_deref(), limit)).await
}

/// Runs an LMDB read off the async workers and answers its result.
async fn read<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> objects::Result<T> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => json(&value),
        Ok(Err(e)) => refused(&e),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct ObjectQuery {
    ns: String,
    id: String,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn object(State(admin): State<Admin>, Query(q): Query<ObjectQuery>) -> Response {
    let opts = ViewOptions::default()
        .with_prefix(q.prefix.filter(|p| !p.is_empty()))
        .with_after(q.after.filter(|a| !a.is_empty()))
        .with_limit(q.limit);
    let rt = admin.rt.clone();
    read(move || rt.view_object(&q.ns, &q.id, &opts)).await
}

/// An API error: the caller's (unknown namespace, bad id) or the store's.
fn refused(e: &objects::Error) -> Response {
    let status = match e {
        objects::Error::Namespace(..) | objects::Error::Id(_) => StatusCode::NOT_FOUND,
        objects::Error::Storage(objects::StorageError::InvalidList(_)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, &e.to_string())
}

/// Installs the process-wide Prometheus recorder (before the runtime
/// opens, so the runtime's handles reach it) and starts its upkeep task,
/// which folds recorded histogram samples into buckets every few seconds
/// so they do not pile up between scrapes. Must run inside a tokio runtime.
///
/// # Errors
///
/// Another recorder is installed already.
pub fn install_prometheus() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let seconds = [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes)?
        .install_recorder()?;
    crate::counters::register();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"correct-horse", b"correct-horse"));
        assert!(!same(b"correct-hors", b"correct-horse"), "a prefix");
        assert!(!same(b"correct-horsee", b"correct-horse"), "longer");
        assert!(!same(b"correct-horse", b"Correct-horse"));
        // The secret repeated is not the secret.
        assert!(!same(b"abab", b"ab"));
        assert!(!same(b"", b"ab"));
        assert!(same(b"", b""));
        assert!(!same(b"x", b""));
    }

    #[test]
    fn hosts_must_name_the_admin_address() {
        let loopback: SocketAddr = "127.0.0.1:8788".parse().expect("addr");
        for ok in ["127.0.0.1:8788", "localhost:8788", "LOCALHOST:8788"] {
            assert!(host_names(ok, loopback), "{ok}");
        }
        for bad in [
            "127.0.0.1:8787",
            "127.0.0.1",
            "localhost",
            "evil.example:8788",
            "rebind.evil.example:8788",
            "127.0.0.2:8788",
            ":8788",
        ] {
            assert!(!host_names(bad, loopback), "{bad}");
        }
        let v6: SocketAddr = "[::1]:9000".parse().expect("addr");
        assert!(host_names("[::1]:9000", v6));
        assert!(host_names("localhost:9000", v6));
        assert!(!host_names("[::2]:9000", v6));
        let public: SocketAddr = "192.0.2.10:9000".parse().expect("addr");
        assert!(host_names("192.0.2.10:9000", public));
        assert!(!host_names("localhost:9000", public), "not loopback");
        let any: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        assert!(host_names("admin.example:9000", any));
        assert!(!host_names("admin.example:9001", any));
    }
}
