//! The front door: an axum router that maps paths to room objects and
//! hands each WebSocket upgrade over, with no state of its own.

mod admin;
mod client_ip;
mod deadline;
mod health;
pub use health::NodeHealth;
mod layers;
mod listener;
pub mod origin;
mod rooms;
mod unavailable;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use objects::{Namespace, ObjectId, Runtime};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::admission::Admission;
use crate::connections::{Connections, IpBudget};
use crate::directory::Directory;
use crate::limiter::RateLimiter;
use crate::protocol::limit::RateLimitOptions;
use crate::protocol::{Dialect, RoomNameError, RoomRef, c, parse_room};
use crate::room::{ChatRoom, RoomEnv, StoreGuard};

pub use admin::{
    AdminOptions, ClusterOps, InspectorNeedsToken, OpFuture, admin_app, install_prometheus,
};
use client_ip::ClientIp;
pub use client_ip::{ClientIpHeader, UnknownClientIpHeader, ip_key};
use listener::{ConnectionHold, TcpSlots};
pub use listener::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_MAX_TCP_CONNECTIONS_PER_IP, HttpLimits,
};
pub use origin::OriginPolicy;
pub use unavailable::ROOM_UNAVAILABLE;

/// The chat page (dialect A with our extensions).
const INDEX_HTML: &str = include_str!("../../assets/index.html");

/// Largest request body the front door reads. The routes take no bodies;
/// anything larger is refused with 413.
pub const MAX_BODY_BYTES: usize = 4096;

/// Name of the room namespace in the data dir (it keys room ids: changing
/// it orphans every room).
const ROOMS: &str = "rooms";
/// Name of the rate limiter namespace.
const LIMITERS: &str = "rate-limiters";
/// Name of the public room directory's namespace.
const DIRECTORY: &str = "directory";

/// Default of [`ChatOptions::max_connections_per_ip`].
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default of [`ChatOptions::history_max_messages`].
pub const DEFAULT_HISTORY_MAX_MESSAGES: u64 = 100_000;
/// Default of [`ChatOptions::joins_per_minute`].
pub const DEFAULT_JOINS_PER_MINUTE: u32 = 30;
/// Default of [`ChatOptions::history_pages_per_minute`].
pub const DEFAULT_HISTORY_PAGES_PER_MINUTE: u32 = 60;
/// Default of [`ChatOptions::trusted_proxy_hops`].
pub const DEFAULT_TRUSTED_PROXY_HOPS: usize = 1;
/// Default of [`ChatOptions::ipv6_prefix`].
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Settings of the chat service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatOptions {
    /// Where the client IP comes from (default: the peer address).
    pub client_ip_header: ClientIpHeader,
    /// Trusted proxies in front that append to `X-Forwarded-For`: the
    /// client is the entry this many places from the right. Default
    /// [`DEFAULT_TRUSTED_PROXY_HOPS`].
    pub trusted_proxy_hops: usize,
    /// IPv6 clients are counted (rate limit, connection caps) per prefix
    /// of this many bits. Default [`DEFAULT_IPV6_PREFIX`] (a /64).
    pub ipv6_prefix: u8,
    /// HTTP timeouts and TCP connection caps.
    pub http: HttpLimits,
    /// WebSockets one client IP may open per minute (all at once, then
    /// one every `60 / n` seconds); one more gets 429. 0: no limit.
    /// Default [`DEFAULT_JOINS_PER_MINUTE`].
    pub joins_per_minute: u32,
    /// History pages (extension `history`) one client IP may ask for per
    /// minute, across rooms (all at once, then one every `60 / n`
    /// seconds); past it the rate limit error. 0: no limit. Default
    /// [`DEFAULT_HISTORY_PAGES_PER_MINUTE`].
    pub history_pages_per_minute: u32,
    /// The per-IP rate limit (default: the original's, 5 s per message,
    /// 20 s of burst).
    pub rate_limit: RateLimitOptions,
    /// Browser origins allowed to open chat sockets, besides the ones always
    /// allowed: the server's own (the origin whose host and port are the
    /// request's `Host`) and `localhost`, `127.0.0.1`, `[::1]` on any port.
    /// Each is `scheme://host[:port]`; `*` allows every origin. Requests
    /// without `Origin` (non-browser clients) are always allowed; others
    /// get 403. Default: none.
    pub allowed_origins: Vec<String>,
    /// Most open WebSocket connections per client IP (the rate limit's
    /// key), across rooms and dialects; one more gets 429. `None`: no
    /// limit. Default: [`DEFAULT_MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: Option<usize>,
    /// How long rooms keep their messages; older ones are deleted by each
    /// room's alarm. `None` (the default, as in the original) keeps them
    /// for ever.
    pub history_retention: Option<std::time::Duration>,
    /// The most messages a room keeps; past it the room's alarm deletes
    /// the oldest. `None`: no cap. Default
    /// [`DEFAULT_HISTORY_MAX_MESSAGES`].
    pub history_max_messages: Option<u64>,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            client_ip_header: ClientIpHeader::default(),
            trusted_proxy_hops: DEFAULT_TRUSTED_PROXY_HOPS,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            http: HttpLimits::default(),
            joins_per_minute: DEFAULT_JOINS_PER_MINUTE,
            history_pages_per_minute: DEFAULT_HISTORY_PAGES_PER_MINUTE,
            rate_limit: RateLimitOptions::default(),
            allowed_origins: Vec::new(),
            max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP),
            history_retention: None,
            history_max_messages: Some(DEFAULT_HISTORY_MAX_MESSAGES),
        }
    }
}

/// What the front door's handlers share: the room namespace and settings.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    rooms: Namespace<ChatRoom>,
    directory: Namespace<Directory>,
    client_ip_header: ClientIpHeader,
    trusted_proxy_hops: usize,
    ipv6_prefix: u8,
    http: HttpLimits,
    origins: Arc<OriginPolicy>,
    connections: Arc<Connections>,
    readiness: Arc<health::Readiness>,
    /// Open TCP connections (HTTP and WebSocket), for the caps.
    tcp: Arc<TcpSlots>,
    /// Joins per client IP per minute.
    joins: Arc<IpBudget>,
    /// The origin of the join budget's clock (tokio's, so tests can pause
    /// it).
    started: tokio::time::Instant,
}

impl AppState {
    /// Registers the room, rate limiter and health probe namespaces on `rt`.
    ///
    /// # Errors
    ///
    /// The namespaces are already registered on this runtime.
    pub fn new(rt: &Runtime, options: ChatOptions) -> objects::Result<AppState> {
        let limiters = rt.namespace::<RateLimiter>(LIMITERS, options.rate_limit)?;
        // In a cluster, rooms on other nodes ask these.
        limiters.accept::<crate::limiter::Check>();
        let connections = Arc::new(Connections::new(options.max_connections_per_ip));
        let directory = rt.namespace::<Directory>(DIRECTORY, ())?;
        use crate::directory::{List, Remove, Update};
        directory
            .accept::<Update>()
            .accept::<Remove>()
            .accept::<List>();
        let rooms = rt.namespace::<ChatRoom>(
            ROOMS,
            RoomEnv::new(
                limiters,
                options.history_retention,
                directory.clone(),
                options.history_max_messages,
                IpBudget::new(options.history_pages_per_minute),
                Some(StoreGuard::new(rt.store_usage())),
            ),
        )?;
        Ok(AppState {
            rooms,
            directory,
            client_ip_header: options.client_ip_header,
            trusted_proxy_hops: options.trusted_proxy_hops,
            ipv6_prefix: options.ipv6_prefix,
            tcp: Arc::new(TcpSlots::new(
                options.http.max_connections,
                options.http.max_connections_per_ip,
            )),
            http: options.http,
            joins: Arc::new(IpBudget::new(options.joins_per_minute)),
            started: tokio::time::Instant::now(),
            origins: Arc::new(OriginPolicy::new(&options.allowed_origins)),
            connections,
            readiness: Arc::new(health::Readiness::new(rt)?),
        })
    }

    /// From now on `/readyz` answers 503 `not ready: shutting down`. Call it
    /// first thing at shutdown, so load balancers stop sending traffic.
    pub fn begin_shutdown(&self) {
        self.readiness.begin_shutdown();
    }

    /// On a cluster node: `/readyz` asks `node` too (see [`NodeHealth`]).
    pub fn set_node_health(&self, node: Arc<dyn NodeHealth>) {
        self.readiness.set_node(node);
    }

    /// Open WebSocket connections of a client IP (as the per-IP limit
    /// counts them: taken at the upgrade, given back when the connection
    /// is dropped).
    pub fn connections_of(&self, ip: &str) -> usize {
        self.connections.count(ip)
    }

    /// TCP connections open now (HTTP and WebSocket), as the caps count
    /// them.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.total()
    }

    /// The room namespace.
    pub fn rooms(&self) -> &Namespace<ChatRoom> {
        &self.rooms
    }

    /// The id of the room a path segment names: by name, or a private id
    /// this namespace minted.
    fn room_id(&self, raw: &str) -> Result<ObjectId, NoSuchRoom> {
        match parse_room(raw) {
            Ok(RoomRef::Named(name)) => Ok(self.rooms.id_from_name(&name)),
            Ok(RoomRef::Private(hex)) => self
                .rooms
                .id_from_string(&hex)
                .map_err(|_| NoSuchRoom::UnknownId),
            Err(RoomNameError::TooLong) => Err(NoSuchRoom::NameTooLong),
        }
    }
}

/// Why a room path names no room (both answer 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoSuchRoom {
    /// Over 32 characters and not a private id.
    NameTooLong,
    /// 64 lowercase hex digits that this namespace did not mint.
    UnknownId,
}

impl IntoResponse for NoSuchRoom {
    fn into_response(self) -> Response {
        let body = match self {
            NoSuchRoom::NameTooLong => "Name too long",
            NoSuchRoom::UnknownId => {
                "Unknown room id: private room ids come from POST /api/room on this server"
            }
        };
        text(StatusCode::NOT_FOUND, body)
    }
}

/// The routes, over `state`:
///
/// | route | |
/// |---|---|
/// | `GET /` | the chat page |
/// | `POST /api/room` | a new private room id (64 hex digits) |
/// | `GET /api/room/{name}/websocket` | dialect A socket |
/// | `GET /room/{name}/websocket` | dialect B socket |
/// | `GET /ws?room=&name=` | dialect C socket |
/// | `GET /healthz` | 200 while the process serves |
/// | `GET /readyz` | 200 when storage commits a write and shutdown has not begun; else 503 |
///
/// Serve it with connect info so the peer address is known
/// ([`serve`] does); without it the client IP is `unknown`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
/// use chat_demo::{AppState, ChatOptions, app};
/// use tower::ServiceExt;
///
/// let dir = tempfile::tempdir()?;
/// let rt = objects::Runtime::builder().data_dir(dir.path()).open()?;
/// let router = app(AppState::new(&rt, ChatOptions::default())?);
/// let req = http::Request::get("/nowhere").body(axum::body::Body::empty())?;
/// assert_eq!(router.oneshot(req).await?.status(), 404);
/// rt.shutdown().await;
/// # Ok(()) }
/// ```
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/", layers::page_route(get(page)))
        .route("/api/room", post(create_room).fallback(method_not_allowed))
        .route("/api/room/{name}/websocket", get(dialect_a))
        .route("/room/{name}/websocket", get(dialect_b))
        .route("/ws", get(dialect_c))
        .route("/api/rooms", get(rooms::list_rooms))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .with_state(state);
    layers::around(router)
}

/// Serves [`app`] on `listener`, with the peer address of each connection,
/// until `shutdown` completes (then stops accepting and lets in-flight
/// requests finish; WebSockets belong to the runtime, which closes them in
/// [`Runtime::shutdown`]).
///
/// # Errors
///
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Behind a trusted proxy every connection comes from the proxy: only
    // the total cap applies.
    let per_ip = (state.client_ip_header == ClientIpHeader::None).then_some(state.ipv6_prefix);
    let serving = listener::Serving {
        limits: state.http.clone(),
        slots: state.tcp.clone(),
        per_ip,
        router: app(state),
    };
    listener::run(listener, serving, shutdown).await
}

/// Serves any `router` (the admin routes, say) with the same accept loop
/// as [`serve`]: the header deadline and the TCP caps of `limits` (the
/// per-IP one keyed per /64 for IPv6), connect info for each request,
/// and a drain at `shutdown`.
///
/// # Errors
///
/// An I/O error from the listener.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let serving = listener::Serving {
        slots: Arc::new(TcpSlots::new(
            limits.max_connections,
            limits.max_connections_per_ip,
        )),
        limits,
        per_ip: Some(DEFAULT_IPV6_PREFIX),
        router,
    };
    listener::run(listener, serving, shutdown).await
}

async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn create_room(State(state): State<AppState>) -> Response {
    match state.rooms.new_unique_id() {
        Ok(id) => (
            [
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::CONTENT_TYPE, "text/plain;charset=UTF-8"),
            ],
            id.to_hex(),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot mint a room id");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not create a room.",
            )
        }
    }
}

async fn method_not_allowed() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found")
}

async fn dialect_a(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    let refusal = (StatusCode::BAD_REQUEST, "expected websocket");
    named_room(&state, &name, Dialect::A, ip, refusal, req).await
}

async fn dialect_b(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    let refusal = (StatusCode::UPGRADE_REQUIRED, "Expected WebSocket");
    named_room(&state, &name, Dialect::B, ip, refusal, req).await
}

/// Dialects A and B: the room from the path, then the upgrade check (its
/// refusal differs per dialect), then the hand-over.
async fn named_room(
    state: &AppState,
    room: &str,
    dialect: Dialect,
    ip: String,
    (status, refusal): (StatusCode, &'static str),
    req: Request,
) -> Response {
    let id = match state.room_id(room) {
        Ok(id) => id,
        Err(no_room) => return no_room.into_response(),
    };
    if !is_websocket(req.headers()) {
        return text(status, refusal);
    }
    let admission = Admission {
        dialect,
        ip,
        name: None,
        ext: None,
        password: None,
    };
    hand_over(state, &id, admission, req).await
}

/// The query of a dialect-C socket.
#[derive(Debug, Deserialize)]
struct CQuery {
    room: Option<String>,
    name: Option<String>,
    /// Opt-in extensions, comma-separated (`presence,typing`).
    ext: Option<String>,
    /// The room's password, for a room that has one.
    password: Option<String>,
}

async fn dialect_c(
    State(state): State<AppState>,
    Query(query): Query<CQuery>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    let id = match state.room_id(c::room_from_query(query.room.as_deref())) {
        Ok(id) => id,
        Err(no_room) => return no_room.into_response(),
    };
    if !is_websocket(req.headers()) {
        return text(StatusCode::UPGRADE_REQUIRED, "Expected WebSocket");
    }
    // The name is known before the upgrade: an over-long one is refused
    // here, with dialect A's error text, rather than on the socket.
    let name = match c::name_from_query(query.name.as_deref()) {
        Ok(name) => name,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.client_text()),
    };
    let admission = Admission {
        dialect: Dialect::C,
        ip,
        name: Some(name),
        ext: query.ext,
        password: query.password,
    };
    hand_over(&state, &id, admission, req).await
}

/// Whether the request asks for a WebSocket upgrade.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// What is wrong with a request that asks for a WebSocket upgrade, if
/// anything: the room is only reached (activated, its storage read) by a
/// complete, valid handshake on a connection that can be upgraded.
fn handshake_problem(req: &Request) -> Option<&'static str> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(want)))
        })
    };
    if req.method() != http::Method::GET {
        return Some("the method must be GET");
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Some("Connection must include Upgrade");
    }
    if !has_token(header::SEC_WEBSOCKET_VERSION, "13") {
        return Some("Sec-WebSocket-Version must be 13");
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key_ok = match (keys.next(), keys.next()) {
        (Some(key), None) => is_websocket_key(key.as_bytes()),
        _ => false,
    };
    if !key_ok {
        return Some("Sec-WebSocket-Key must be one base64-encoded 16-byte value");
    }
    None
}

/// The refusal of a request whose connection cannot be upgraded (not
/// HTTP/1.1 from our server: `oneshot` in tests, for one).
const NOT_UPGRADABLE: &str = "Bad WebSocket handshake: this connection cannot be upgraded";

/// Whether `key` is base64 of 16 bytes: 22 characters of the alphabet and
/// `==` (RFC 6455, 4.2.1).
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Hands a WebSocket upgrade to the room, with the admission header set
/// by us, after the handshake check, the origin policy and the per-IP
/// connection limit: nothing before this point activates a room. Every
/// answer but a 101 is counted in `chat_upgrades_refused_total` by reason.
async fn hand_over(
    state: &AppState,
    id: &ObjectId,
    admission: Admission,
    req: Request,
) -> Response {
    match admit(state, id, admission, req).await {
        Ok(response) => response,
        Err(refused) => {
            let (reason, response) = *refused;
            crate::counters::upgrade_refused(reason);
            response
        }
    }
}

/// A refused upgrade: why (the metric's `reason`), and the answer.
type Refused = Box<(&'static str, Response)>;

/// [`hand_over`]'s work: the 101, or the reason for a refusal and its
/// answer.
async fn admit(
    state: &AppState,
    id: &ObjectId,
    admission: Admission,
    req: Request,
) -> Result<Response, Refused> {
    if let Some(problem) = handshake_problem(&req) {
        let body = format!("Bad WebSocket handshake: {problem}");
        return Err(Box::new((
            "handshake",
            text(StatusCode::BAD_REQUEST, &body),
        )));
    }
    let scheme = origin::request_scheme(
        req.headers(),
        state.client_ip_header != ClientIpHeader::None,
    );
    if let Err(origin) = state.origins.check(req.headers(), scheme) {
        tracing::debug!(%origin, "origin refused");
        let body = format!(
            "Origin not allowed: {origin:?} may not open chat sockets on this server \
             (the operator can allow it with --allowed-origin)"
        );
        return Err(Box::new(("origin", text(StatusCode::FORBIDDEN, &body))));
    }
    // The runtime's adapter keeps the upgrade handle in the extensions.
    let body = |status, body| Err(Box::new(("body", text(status, body))));
    let mut req = match tokio::time::timeout(
        state.http.body_timeout,
        objects::buffer_request(req, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(req)) => req,
        Ok(Err(objects::BodyError::TooLarge { .. })) => {
            return body(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
        }
        Ok(Err(_)) => return body(StatusCode::BAD_REQUEST, "Request body unreadable"),
        Err(_) => return body(StatusCode::REQUEST_TIMEOUT, "Request body too slow"),
    };
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return Err(Box::new((
            "not_upgradable",
            text(StatusCode::BAD_REQUEST, NOT_UPGRADABLE),
        )));
    }
    // A slot for this connection: dropped below unless the room accepts
    // the socket; then the connection holds it, and it is given back when
    // the connection is dropped, however it ends.
    let ip = admission.ip.clone();
    let Some(slot) = state.connections.acquire(&ip) else {
        tracing::debug!(%ip, "too many connections");
        return Err(Box::new((
            "connections_per_ip",
            text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many open connections from your IP; close some and try again.",
            ),
        )));
    };
    let now_ms = u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if !state.joins.charge(&ip, now_ms) {
        tracing::debug!(%ip, "too many joins");
        return Err(Box::new((
            "joins_per_minute",
            text(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many new connections from your IP; wait a minute and try again.",
            ),
        )));
    }
    admission.set_on(req.headers_mut());
    let hold = req.extensions().get::<ConnectionHold>().cloned();
    match state.rooms.get(id).fetch(req).await {
        Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Some(hold) = hold {
                hold.keep(slot);
            }
            Ok(response.map(Body::from))
        }
        // The room's own refusal (a wrong password, the room full, ...).
        Ok(response) => Err(Box::new(("room", response.map(Body::from)))),
        Err(error) => Err(Box::new(unavailable::fetch_failed(&error))),
    }
}

/// A plain-text answer (every refusal of the front door and the admin
/// routes).
pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        body.to_owned(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key(b"AAAAAAAAAAAAAAAAAAAA+/==")); // 24 chars
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25jZQ!=",
            b"dGhlIHNhbXBsZSBub25jZ\xc3\xa9=",
            b"dGhlIHNhbXBsZSBub25jZQAA",
        ] {
            assert!(!is_websocket_key(bad), "{bad:?}");
        }
    }
}
