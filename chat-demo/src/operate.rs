//! `chat-demo cluster drain | rebalance | restore-shard`: ask a running
//! cluster node, through its admin listener (`--admin-listen`, with
//! `--admin-token`), to move its shards or take a lost node's shard. The
//! node does the work (`POST /cluster/...`); this prints its report and
//! exits 1 when it refused or stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::token_file::TokenFromFile;

/// Where the node's admin listener is, and its token.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The node's admin address (its --admin-listen), e.g. 127.0.0.1:9781.
    #[arg(long, value_name = "ADDR")]
    admin: SocketAddr,
    /// The node's admin token.
    #[arg(long, env = "CHAT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Read the admin token from this file instead.
    #[arg(long, env = "CHAT_ADMIN_TOKEN_FILE", value_name = "PATH", value_parser = crate::token_file::read, conflicts_with = "admin_token")]
    admin_token_file: Option<TokenFromFile>,
}

/// `cluster restore-shard` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The shard to restore (its owner must be down).
    #[arg(long)]
    shard: u32,
    /// A backup of the lost node's data dir (`chat-demo backup`), on the
    /// machine of the node that takes the shard.
    #[arg(long, value_name = "DIR")]
    backup: PathBuf,
}

/// Which operation.
#[derive(Debug)]
pub(crate) enum Op {
    Drain(AdminArgs),
    Rebalance(AdminArgs),
    Restore(RestoreArgs),
}

/// Runs the operation on the node and prints its report. Blocking.
pub(crate) fn run(op: Op) -> anyhow::Result<()> {
    let (admin, path) = match op {
        Op::Drain(a) => (a, "/cluster/drain".to_string()),
        Op::Rebalance(a) => (a, "/cluster/rebalance".to_string()),
        Op::Restore(r) => {
            let backup = r
                .backup
                .canonicalize()
                .with_context(|| format!("the backup {}", r.backup.display()))?;
            let backup = backup
                .to_str()
                .context("the backup's path is not UTF-8")?
                .to_string();
            let path = format!(
                "/cluster/restore-shard?shard={}&backup={}",
                r.shard,
                percent_encode(&backup)
            );
            (r.admin, path)
        }
    };
    let token = admin
        .admin_token_file
        .map(|t| t.0)
        .or(admin.admin_token)
        .context("the node's admin token is needed: --admin-token or --admin-token-file")?;
    let (status, body) =
        tokio::runtime::Handle::current().block_on(post(admin.admin, &path, &token))?;
    print!("{body}");
    if !status.is_success() {
        bail!("the node answered {status}");
    }
    Ok(())
}

/// One HTTP/1.1 POST without a body; the status and the answer's text.
async fn post(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> anyhow::Result<(http::StatusCode, String)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the admin address {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_LENGTH, "0")
        .body(axum::body::Body::empty())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    // Reports are a line per shard: a few KiB.
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `s` for a query string: everything but unreserved characters escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_escaped_for_a_query() {
        assert_eq!(
            super::percent_encode("/tmp/a b&c=d%é"),
            "/tmp/a%20b%26c%3Dd%25%C3%A9"
        );
    }
}
