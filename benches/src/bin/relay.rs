//! `relay`: the bare floor relay (dialect A, no storage, no history, no rate
//! limit), to run `chatload` against; see `benches::relay`.
//!
//! ```text
//! relay --listen 127.0.0.1:9797
//! ```

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;

/// A bare dialect-A chat relay: the floor to compare chat-demo with.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9797")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("relay listening on ws://{}", listener.local_addr()?);
    tokio::select! {
        r = benches::relay::serve(listener) => r?,
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
