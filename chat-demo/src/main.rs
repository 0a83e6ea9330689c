//! `chat-demo`: the chat server. Serves the page and the three chat
//! dialects on one address, with rooms stored in a data dir.
//!
//! ```text
//! chat-demo --listen 127.0.0.1:8787 --data-dir ./data
//! chat-demo backup --data-dir ./data --to ./backup
//! chat-demo list|export|import --data-dir ./data
//! ```
//!
//! Without a subcommand it serves (`serve`); the other subcommands are the
//! operations tools in `tools.rs` (see `docs/operations.md`).
//!
//! Every flag also reads an environment variable (see `--help`). Logs go to
//! stderr, filtered by `RUST_LOG` (default `info`). SIGINT or SIGTERM stops
//! accepting, closes every socket with 1001 and flushes storage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chat_demo::{AppState, ChatOptions, ClientIpHeader, serve};
use clap::{Parser, ValueEnum};

mod logging;
mod token_file;
mod tools;

/// How long in-flight HTTP requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Allow --admin-listen on a non-loopback address.
    #[arg(long, env = "CHAT_ADMIN_ALLOW_REMOTE")]
    admin_allow_remote: bool,
}

/// `--trust-client-ip-header` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TrustHeader {
    /// The TCP peer address.
    None,
    /// `CF-Connecting-IP` (behind Cloudflare).
    CfConnectingIp,
    /// The first entry of `X-Forwarded-For`.
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
        Some(tools::Command::Serve(args)) => args,
        Some(tool) => {
            let default_dir = cli.serve.data_dir;
            return tokio::task::spawn_blocking(move || tools::run(tool, default_dir)).await?;
        }
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
            if args.inspector && args.admin_token.as_deref().is_none_or(str::is_empty) {
                anyhow::bail!("{}", chat_demo::InspectorNeedsToken);
            }
            Some((addr, chat_demo::install_prometheus()?))
        }
        None => None,
    };

    let rt = objects::Runtime::builder()
        .data_dir(&args.data_dir)
        .hibernation_timeout(Duration::from_secs(args.hibernation_secs))
        .idle_timeout(Duration::from_secs(args.idle_secs))
        .open()
        .with_context(|| format!("opening the data dir {}", args.data_dir.display()))?;
    let options = ChatOptions {
        client_ip_header: args.trust_client_ip_header.into(),
        allowed_origins: args.allowed_origin.clone(),
        max_connections_per_ip: (args.max_connections_per_ip > 0)
            .then_some(args.max_connections_per_ip),
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
    tracing::info!(%addr, data_dir = %args.data_dir.display(), client_ip_header = %options.client_ip_header, "listening");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some((admin_addr, prometheus)) = admin {
        let router = chat_demo::admin_app(
            &rt,
            chat_demo::AdminOptions {
                token: args.admin_token.clone(),
                inspector: args.inspector,
                prometheus: Some(prometheus),
            },
        )?;
        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("binding the admin address {admin_addr}"))?;
        let admin_addr = admin_listener.local_addr()?;
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
            if let Err(error) = axum::serve(admin_listener, router)
                .with_graceful_shutdown(stop)
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

    tokio::select! {
        () = shutdown_signal() => {}
        result = &mut server => {
            // The server stopped by itself: an accept error.
            rt.shutdown().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("serving")),
                Err(e) => Err(anyhow::Error::from(e).context("server task")),
            };
        }
    }
    tracing::info!("shutting down: no new connections; closing sockets");
    readiness.begin_shutdown();
    stop.send_replace(true);
    rt.shutdown().await;
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after {DRAIN_TIMEOUT:?}; exiting anyway");
        server.abort();
    }
    tracing::info!("stopped");
    Ok(())
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
