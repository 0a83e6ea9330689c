//! `chat-demo`: the chat server. Serves the page and the three chat
//! dialects on one address, with rooms stored in a data dir.
//!
//! ```text
//! chat-demo --listen 127.0.0.1:8787 --data-dir ./data
//! chat-demo backup --data-dir ./data --to ./backup
//! chat-demo list|export|import --data-dir ./data
//! chat-demo cluster init ./certs --nodes n1,n2,n3   # feature `cluster`
//! chat-demo cluster issue ./certs --nodes n4
//! chat-demo --cluster-node n1 --cluster-etcd http://127.0.0.1:2379 \
//!     --cluster-quic 127.0.0.1:7001 --cluster-certs ./certs/n1 ...
//! ```
//!
//! Without a subcommand it serves (`serve`); the other subcommands are the
//! operations tools in `tools.rs` (see `docs/operations.md`).
//!
//! Every flag also reads an environment variable (see `--help`). Logs go to
//! stderr, filtered by `RUST_LOG` (default `info`). SIGINT or SIGTERM stops
//! accepting, closes every socket with 1001, drains in-flight requests and
//! stops the runtime, each step bounded by a `--shutdown-*` flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chat_demo::{AppState, ChatOptions, ClientIpHeader, serve};
use clap::{Parser, ValueEnum};

#[cfg(feature = "cluster")]
mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "no_cluster.rs"]
mod cluster;
mod logging;
#[cfg(feature = "cluster")]
mod operate;
mod token_file;
mod tools;

/// Most connections to the admin address at once (an operator's browser
/// and a scraper need a handful).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The Edge Chat Demo on objects: rooms, history and rate limits in one
/// binary.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// What to do; without a subcommand the server runs (`serve`).
    #[command(subcommand)]
    command: Option<tools::Command>,

    /// The flags of `serve`, for when no subcommand is given.
    #[command(flatten)]
    serve: Args,

    /// Log format on stderr: `text`, or `json` (one object per line, with
    /// level, target, message, fields and spans).
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, global = true, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
}

/// The flags of `serve`.
#[derive(Debug, clap::Args)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Directory of the store (created if missing; one process at a time).
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Take the client IP (the rate limit key) from this header, set by a
    /// trusted proxy in front. Only enable it behind such a proxy: clients
    /// could otherwise choose their own IP.
    #[arg(long, env = "CHAT_TRUST_CLIENT_IP_HEADER", value_enum, default_value_t = TrustHeader::None)]
    trust_client_ip_header: TrustHeader,

    /// WebSockets one client IP may open per minute (all at once, then
    /// evenly spread); one more gets 429. 0 for no limit.
    #[arg(long, env = "CHAT_JOINS_PER_MINUTE", default_value_t = chat_demo::DEFAULT_JOINS_PER_MINUTE)]
    joins_per_minute: u32,

    /// History pages one client IP may ask for per minute, across rooms;
    /// past it the rate limit error. 0 for no limit.
    #[arg(long, env = "CHAT_HISTORY_PAGES_PER_MINUTE", default_value_t = chat_demo::DEFAULT_HISTORY_PAGES_PER_MINUTE)]
    history_pages_per_minute: u32,

    /// Trusted proxies in front that append to `X-Forwarded-For`; the
    /// client is the entry this many places from the right.
    #[arg(long, env = "CHAT_TRUSTED_PROXY_HOPS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    trusted_proxy_hops: u16,

    /// IPv6 clients are counted (rate limit, connection caps) per prefix
    /// of this many bits.
    #[arg(long, env = "CHAT_IPV6_PREFIX", default_value_t = chat_demo::DEFAULT_IPV6_PREFIX, value_parser = clap::value_parser!(u8).range(1..=128))]
    ipv6_prefix: u8,

    /// Seconds a connection may take to send a whole request head: from
    /// its start for the first request, from the first byte for later
    /// ones.
    #[arg(long, env = "CHAT_HTTP_HEADER_TIMEOUT_SECS", default_value_t = chat_demo::DEFAULT_HEADER_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_header_timeout_secs: u64,

    /// Seconds a connection may stay idle between a response and the
    /// first byte of its next request. Behind a proxy that keeps idle
    /// connections to the server, keep it above the proxy's idle timeout.
    #[arg(long, env = "CHAT_HTTP_KEEPALIVE_TIMEOUT_SECS", default_value_t = chat_demo::DEFAULT_KEEP_ALIVE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_keepalive_timeout_secs: u64,

    /// Seconds an upgrade request's body may take.
    #[arg(long, env = "CHAT_HTTP_BODY_TIMEOUT_SECS", default_value_t = chat_demo::DEFAULT_BODY_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    http_body_timeout_secs: u64,

    /// Most TCP connections open at once (WebSockets included); more are
    /// closed at once. Default: the process's file limit (`ulimit -n`)
    /// minus 64 for the store, the listeners and the logs.
    #[arg(long, env = "CHAT_MAX_TCP_CONNECTIONS")]
    max_tcp_connections: Option<usize>,

    /// Most TCP connections open at once from one peer IP (IPv6: one
    /// prefix); 0 for no limit. Not applied behind a trusted proxy.
    #[arg(long, env = "CHAT_MAX_TCP_CONNECTIONS_PER_IP", default_value_t = chat_demo::DEFAULT_MAX_TCP_CONNECTIONS_PER_IP)]
    max_tcp_connections_per_ip: usize,

    /// Most bytes the store may hold (the LMDB map size). Messages are
    /// refused with an error frame once less than 1/32 of it is left.
    #[arg(long, env = "CHAT_STORE_MAX_BYTES", default_value_t = objects::StoreOptions::default().max_size)]
    store_max_bytes: usize,

    /// Microseconds a write that finds the store's writer idle waits for
    /// others to share its disk sync. 0 (the default) syncs at once; under a
    /// light, steady load a millisecond or two trades that much latency for
    /// fewer syncs (docs/storage.md, "Commit delay").
    #[arg(long, env = "CHAT_COMMIT_DELAY_US", default_value_t = 0)]
    commit_delay_us: u64,

    /// Most objects of one kind (rooms, rate limiters) in memory at once;
    /// past it the idlest leave early (a room's sockets stay open).
    #[arg(long, env = "CHAT_MAX_LIVE_OBJECTS", default_value_t = 10_000)]
    max_live_objects: usize,

    /// Seconds after which a room whose only work is open sockets is
    /// evicted from memory (its sockets stay open).
    #[arg(long, env = "CHAT_HIBERNATION_SECS", default_value_t = 10)]
    hibernation_secs: u64,

    /// Seconds after which an idle object (room without sockets, rate
    /// limiter) is evicted from memory.
    #[arg(long, env = "CHAT_IDLE_SECS", default_value_t = 70)]
    idle_secs: u64,

    /// A browser origin (`scheme://host[:port]`, or `*` for any) allowed to
    /// open chat sockets, besides this server's own and localhost; repeat
    /// for several (comma-separated in the environment variable). Requests
    /// without an Origin header are always allowed.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origin: Vec<String>,

    /// Most open WebSocket connections per client IP; 0 for no limit.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = chat_demo::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize,

    /// Days rooms keep their messages (older ones are deleted by each
    /// room's alarm); 0 keeps them for ever, as the original does.
    #[arg(long, env = "CHAT_HISTORY_DAYS", default_value_t = 0)]
    history_days: u64,

    /// The most messages a room keeps (its alarm deletes the oldest past
    /// it); 0 for no cap.
    #[arg(long, env = "CHAT_HISTORY_MAX_MESSAGES", default_value_t = chat_demo::DEFAULT_HISTORY_MAX_MESSAGES)]
    history_max_messages: u64,

    /// Serve the operator's routes (`/metrics`, and the inspector when
    /// enabled) on this address. Off by default; a loopback address unless
    /// --admin-allow-remote is given.
    #[arg(long, env = "CHAT_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// Token every admin route then requires (`Authorization: Bearer
    /// <token>`, or the inspector's sign-in). Required by --inspector.
    #[arg(long, env = "CHAT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Read the admin token from this file instead (its whole content,
    /// without surrounding whitespace), so it shows neither in `ps` nor in
    /// the environment.
    #[arg(long, env = "CHAT_ADMIN_TOKEN_FILE", value_name = "PATH", value_parser = token_file::read, conflicts_with = "admin_token")]
    admin_token_file: Option<token_file::TokenFromFile>,

    /// Serve the inspector page on the admin address: namespaces, objects,
    /// their storage, alarms and sockets, and live metrics (read-only).
    #[arg(long, env = "CHAT_INSPECTOR", requires = "admin_listen")]
    inspector: bool,

    /// Allow --admin-listen on a non-loopback address (needs
    /// --admin-token).
    #[arg(long, env = "CHAT_ADMIN_ALLOW_REMOTE")]
    admin_allow_remote: bool,

    /// At shutdown, seconds WebSockets get to take their Close frame
    /// (1001) before the server goes on without them.
    #[arg(long, env = "CHAT_SHUTDOWN_SOCKETS_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    shutdown_sockets_timeout_secs: u64,

    /// At shutdown, seconds in-flight HTTP requests get to finish.
    #[arg(long, env = "CHAT_SHUTDOWN_HTTP_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    shutdown_http_timeout_secs: u64,

    /// At shutdown, seconds the runtime gets to finish its events, commit
    /// and stop its storage writer; past it the process exits with status
    /// 1 (what was acknowledged is on disk already).
    #[arg(long, env = "CHAT_SHUTDOWN_RUNTIME_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    shutdown_runtime_timeout_secs: u64,

    // The `--cluster-*` flags (the cargo feature `cluster`; none without).
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

/// `--trust-client-ip-header` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TrustHeader {
    /// The TCP peer address.
    None,
    /// `CF-Connecting-IP` (behind Cloudflare).
    CfConnectingIp,
    /// `X-Forwarded-For`, read from the right (see --trusted-proxy-hops).
    XForwardedFor,
}

impl From<TrustHeader> for ClientIpHeader {
    fn from(h: TrustHeader) -> Self {
        match h {
            TrustHeader::None => ClientIpHeader::None,
            TrustHeader::CfConnectingIp => ClientIpHeader::CfConnectingIp,
            TrustHeader::XForwardedFor => ClientIpHeader::XForwardedFor,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);

    let mut args = match cli.command {
        None => cli.serve,
        Some(tools::Command::Serve(args)) => *args,
        Some(tool) => {
            let default_dir = cli.serve.data_dir;
            return tokio::task::spawn_blocking(move || tools::run(tool, default_dir)).await?;
        }
    };

    // Cluster flags that cannot work stop here, with status 2, as clap's
    // own refusals do: nothing has started.
    let cluster = match args.cluster.config() {
        Ok(cluster) => cluster,
        Err(problem) => <Cli as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, problem)
            .exit(),
    };
    if let Some(token) = args.admin_token_file.take() {
        args.admin_token = Some(token.0);
    }

    // The recorder goes in before the runtime opens, so the runtime's
    // metric handles reach it; without an admin address nothing records.
    let admin = match args.admin_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() && !args.admin_allow_remote {
                anyhow::bail!(
                    "--admin-listen {addr} is not a loopback address; add --admin-allow-remote to serve the admin routes there"
                );
            }
            if args.admin_allow_remote && args.admin_token.as_deref().is_none_or(str::is_empty) {
                anyhow::bail!(
                    "--admin-allow-remote needs --admin-token (or CHAT_ADMIN_TOKEN): the admin routes would be open to the network"
                );
            }
            if args.inspector && args.admin_token.as_deref().is_none_or(str::is_empty) {
                anyhow::bail!("{}", chat_demo::InspectorNeedsToken);
            }
            Some((addr, chat_demo::install_prometheus()?))
        }
        None => None,
    };

    // A cluster node joins first: its runtime mints ids under the
    // cluster's secret, so every node finds a room under the same id.
    let node = match cluster {
        Some(config) => Some(config.join().await?),
        None => None,
    };
    let mut builder = objects::Runtime::builder();
    if let Some(node) = &node {
        builder = builder.id_secret(node.id_secret());
    }
    let rt = builder
        .options(
            objects::RuntimeOptions::default()
                .with_mailbox_bytes(chat_demo::ROOM_MAILBOX_BYTES)
                .with_store(
                    objects::StoreOptions::default()
                        .with_max_size(args.store_max_bytes)
                        .with_commit_delay(Duration::from_micros(args.commit_delay_us)),
                ),
        )
        .data_dir(&args.data_dir)
        .hibernation_timeout(Duration::from_secs(args.hibernation_secs))
        .idle_timeout(Duration::from_secs(args.idle_secs))
        .max_live_objects(args.max_live_objects.max(1))
        .websocket(chat_demo::websocket_options())
        .open()
        .with_context(|| format!("opening the data dir {}", args.data_dir.display()))?;
    let options = ChatOptions {
        client_ip_header: args.trust_client_ip_header.into(),
        trusted_proxy_hops: usize::from(args.trusted_proxy_hops),
        joins_per_minute: args.joins_per_minute,
        history_pages_per_minute: args.history_pages_per_minute,
        ipv6_prefix: args.ipv6_prefix,
        http: chat_demo::HttpLimits {
            header_timeout: Duration::from_secs(args.http_header_timeout_secs),
            keep_alive_timeout: Duration::from_secs(args.http_keepalive_timeout_secs),
            body_timeout: Duration::from_secs(args.http_body_timeout_secs),
            max_connections: args
                .max_tcp_connections
                .unwrap_or_else(default_max_tcp_connections),
            max_connections_per_ip: args.max_tcp_connections_per_ip,
        },
        allowed_origins: args.allowed_origin.clone(),
        max_connections_per_ip: (args.max_connections_per_ip > 0)
            .then_some(args.max_connections_per_ip),
        history_max_messages: (args.history_max_messages > 0).then_some(args.history_max_messages),
        history_retention: (args.history_days > 0)
            .then(|| Duration::from_secs(args.history_days.saturating_mul(86_400))),
        ..ChatOptions::default()
    };
    let state = AppState::new(&rt, options.clone())?;
    let readiness = state.clone();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("chat-demo listening on http://{addr}");
    tracing::info!(%addr, data_dir = %args.data_dir.display(), client_ip_header = %options.client_ip_header, max_tcp_connections = options.http.max_connections, "listening");
    // Every namespace is registered: now this node may run objects (the
    // listener takes connections once the server below starts).
    if let Some(node) = &node {
        state.set_node_health(node.health());
        node.serve(&rt)?;
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some((admin_addr, prometheus)) = admin {
        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("binding the admin address {admin_addr}"))?;
        let admin_addr = admin_listener.local_addr()?;
        let router = chat_demo::admin_app(
            &rt,
            chat_demo::AdminOptions {
                token: args.admin_token.clone(),
                inspector: args.inspector,
                prometheus: Some(prometheus),
                listen: Some(admin_addr),
                cluster: node.as_ref().map(cluster::Node::ops),
            },
        )?;
        println!("chat-demo admin on http://{admin_addr} (metrics at /metrics)");
        if args.inspector {
            println!("chat-demo inspector on http://{admin_addr}/inspector");
        }
        tracing::info!(%admin_addr, inspector = args.inspector, token = args.admin_token.is_some(), "admin routes listening");
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(error) = chat_demo::serve_router(
                admin_listener,
                router,
                chat_demo::HttpLimits {
                    max_connections: ADMIN_MAX_CONNECTIONS,
                    max_connections_per_ip: 0,
                    ..chat_demo::HttpLimits::default()
                },
                stop,
            )
            .await
            {
                tracing::error!(%error, "admin listener failed");
            }
        });
    }
    let mut server = tokio::spawn(serve(listener, state, async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));

    let timeouts = [
        args.shutdown_sockets_timeout_secs,
        args.shutdown_http_timeout_secs,
        args.shutdown_runtime_timeout_secs,
    ]
    .map(Duration::from_secs);
    tokio::select! {
        () = shutdown_signal() => {}
        result = &mut server => {
            // The server stopped by itself: an accept error.
            if let Some(node) = &node {
                node.leave(timeouts[2]).await;
            }
            let _ = rt.shutdown_within(timeouts[2]).await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("serving")),
                Err(e) => Err(anyhow::Error::from(e).context("server task")),
            };
        }
    }
    // The sequence, each wait bounded by its flag (docs/operations.md,
    // "Stopping"): in a cluster with --cluster-drain-on-stop, hand the
    // rooms to the other nodes first (while this one still forwards);
    // stop accepting, close the WebSockets with 1001, drain in-flight
    // HTTP requests, then stop the runtime (events finish and commit, the
    // writer flushes).
    if let Some(node) = &node {
        node.drain_on_stop(timeouts[2]).await;
    }
    readiness.begin_shutdown();
    stop.send_replace(true);
    tracing::info!("shutting down: /readyz is 503, no new connections");
    let sockets = rt.close_websockets(timeouts[0]).await;
    if sockets.clean {
        tracing::info!("shutting down: every WebSocket closed with 1001");
    } else {
        tracing::warn!(
            sockets_open = sockets.sockets_open,
            "shutting down: WebSockets still closing after {:?}; going on",
            timeouts[0]
        );
    }
    if tokio::time::timeout(timeouts[1], &mut server).await.is_ok() {
        tracing::info!("shutting down: in-flight HTTP requests done");
    } else {
        tracing::warn!(
            "shutting down: HTTP requests still running after {:?}; cutting them",
            timeouts[1]
        );
        server.abort();
    }
    // Out of the cluster before the runtime stops: its rooms are then
    // unavailable (503) at once rather than answering "shutting down".
    if let Some(node) = &node {
        node.leave(timeouts[2]).await;
    }
    let runtime = rt.shutdown_within(timeouts[2]).await;
    if !runtime.clean {
        tracing::error!(
            objects_running = runtime.objects_running,
            sockets_open = runtime.sockets_open,
            "shutting down: the runtime did not finish within {:?}; exiting with status 1 \
             (what was acknowledged is on disk)",
            timeouts[2]
        );
        // Not a return from main: dropping the async runtime would wait
        // for the storage writer, which may be what hangs.
        std::process::exit(1);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Descriptors kept free of TCP connections: LMDB, the listeners, logs.
const RESERVED_FILES: usize = 64;

/// The default TCP connection cap: the soft file limit (read from
/// `/proc/self/limits`, so no libc call) minus [`RESERVED_FILES`]; the
/// library's default where that file does not exist.
fn default_max_tcp_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            let soft = line
                .trim_start_matches("Max open files")
                .split_whitespace()
                .next()?;
            match soft {
                "unlimited" => Some(usize::MAX),
                n => n.parse::<usize>().ok(),
            }
        });
    match soft {
        Some(soft) => soft.saturating_sub(RESERVED_FILES).max(1),
        None => chat_demo::DEFAULT_MAX_TCP_CONNECTIONS,
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
