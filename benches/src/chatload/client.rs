//! The simulated clients: connect, say hello, send, and record what
//! arrives.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::*;

/// Where to connect: a loopback socket address plus what goes in the URL.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) authority: String,
    pub(super) prefix: String,
}

/// Checks that `url` is `ws://` on a loopback host and resolves it.
pub(super) async fn target(url: &str) -> anyhow::Result<Target> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("only ws:// URLs are supported, got {url:?}");
    }
    let authority = uri.authority().context("URL without a host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => SocketAddr::new(ip, port),
        Ok(ip) => bail!("refusing {ip}: chatload only connects to loopback addresses"),
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
                bail!("localhost does not resolve to loopback addresses only: {addrs:?}");
            }
            addrs[0]
        }
        Err(_) => bail!("refusing host {host:?}: chatload only connects to loopback addresses"),
    };
    Ok(Target {
        addr,
        authority: authority.as_str().to_owned(),
        prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// A small PRNG (splitmix64) for phases and the run tag.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn seeded() -> Rng {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ (u64::from(std::process::id()) << 32))
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `10.x.y.z` for index `n` (mod 2^24): header text, never an address
/// anything connects to.
pub(super) fn fake_ip(n: u32) -> String {
    let [_, b, c, d] = (n & 0x00FF_FFFF).to_be_bytes();
    format!("10.{b}.{c}.{d}")
}

pub(super) type Ws = WebSocketStream<TcpStream>;

/// What run phase the clients are in.
pub(super) const JOINING: u8 = 0;
pub(super) const SENDING: u8 = 1;
pub(super) const STOP_SENDING: u8 = 2;
pub(super) const CLOSE: u8 = 3;

/// State shared by the clients of a run.
pub(super) struct Shared {
    /// The front doors; a client connects to the one its seat names.
    pub(super) targets: Vec<Target>,
    pub(super) ip_header: Option<http::HeaderName>,
    pub(super) tag: String,
    pub(super) epoch: Instant,
    /// Room sizes (clients ready), fixed when sending starts.
    pub(super) room_sizes: OnceLock<Vec<u64>>,
    pub(super) sent: AtomicU64,
    /// Clients between announcing a send and having sent it.
    pub(super) in_send: AtomicUsize,
    pub(super) acked: AtomicU64,
    pub(super) expected: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) settled: AtomicUsize,
    pub(super) settled_notify: tokio::sync::Notify,
    /// Latency from the scheduled send, sharded by client.
    pub(super) latency: Vec<Mutex<Histogram<u64>>>,
    /// Latency from the actual send, sharded the same way.
    pub(super) latency_from_send: Vec<Mutex<Histogram<u64>>>,
    pub(super) first_error: Mutex<Option<String>>,
    pub(super) connect: Semaphore,
    pub(super) connect_timeout: Duration,
    /// Seeded backlog texts each room's clients should see, oldest first.
    pub(super) backlog: Vec<Vec<String>>,
    /// Clients that reached `ready`, per room.
    pub(super) ready_per_room: Vec<AtomicU64>,
}

impl Shared {
    pub(super) fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// `at` in µs since the run started.
    pub(super) fn micros_at(&self, at: tokio::time::Instant) -> u64 {
        let since = at.into_std().saturating_duration_since(self.epoch);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }

    pub(super) fn error(&self, e: String) {
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(e);
    }

    pub(super) fn settle(&self) {
        self.settled.fetch_add(1, Ordering::SeqCst);
        self.settled_notify.notify_one();
    }

    pub(super) async fn connect(&self, target: usize, room: &str, ip: &str) -> anyhow::Result<Ws> {
        let target = &self.targets[target];
        let url = format!(
            "ws://{}{}/api/room/{room}/websocket",
            target.authority, target.prefix
        );
        let mut req = url.into_client_request()?;
        if let Some(h) = &self.ip_header {
            req.headers_mut().insert(h.clone(), ip.parse()?);
        }
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config)).await?;
        Ok(ws)
    }
}

/// The server frames chatload reads (unknown fields ignored).
#[derive(Deserialize)]
pub(super) struct Frame {
    pub(super) message: Option<String>,
    pub(super) timestamp: Option<u64>,
    pub(super) error: Option<String>,
    pub(super) ready: Option<bool>,
}

/// Which sequence numbers one receiver got from one sender.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    pub(super) bits: Vec<u64>,
    pub(super) max: Option<u32>,
}

impl Seen {
    /// Marks `seq`; false if it was already marked.
    pub(super) fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
    pub(super) fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    pub(super) fn union(&mut self, other: &Seen) {
        if self.bits.len() < other.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }
    /// How many of `all` this one lacks.
    pub(super) fn missing_from(&self, all: &Seen) -> u64 {
        all.bits
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !self.bits.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// One client's results.
#[derive(Debug, Default)]
pub(super) struct ClientStats {
    pub(super) ready: bool,
    pub(super) ready_us: u64,
    pub(super) backlog_ok: bool,
    pub(super) sent: u64,
    pub(super) errors_after_send: u64,
    pub(super) rate_limited: u64,
    pub(super) other_errors: u64,
    pub(super) deliveries: u64,
    pub(super) duplicated: u64,
    pub(super) out_of_order: u64,
    pub(super) timestamp_regressions: u64,
    pub(super) disconnected: bool,
    pub(super) seen: HashMap<u32, Seen>,
}

/// One chatload message, as its text carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) client: u32,
    pub(super) seq: u32,
    /// When the sender's schedule said to send it, µs since the run began.
    pub(super) scheduled_us: u64,
    /// When it was actually sent.
    pub(super) sent_us: u64,
}

/// Parses `cl <tag> <client> <seq> <scheduled µs> <sent µs>`.
pub(super) fn parse_text(text: &str, tag: &str) -> Option<Stamp> {
    let mut parts = text.split(' ');
    if parts.next()? != "cl" || parts.next()? != tag {
        return None;
    }
    let stamp = Stamp {
        client: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        scheduled_us: parts.next()?.parse().ok()?,
        sent_us: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(stamp)
}

/// Who one client is and how it sends.
pub(super) struct Seat {
    pub(super) id: u32,
    /// Which of the front doors (index into `Shared::targets`).
    pub(super) target: usize,
    pub(super) room_index: usize,
    pub(super) room: String,
    pub(super) ip: String,
    pub(super) period: Option<Duration>,
    pub(super) first_send: Duration,
}

pub(super) async fn client(
    shared: Arc<Shared>,
    seat: Seat,
    mut phase: watch::Receiver<u8>,
) -> ClientStats {
    let Seat {
        id,
        target,
        room_index,
        room,
        ip,
        period,
        first_send,
    } = seat;
    let mut stats = ClientStats::default();
    // Connect, hello, and read to `ready`, bounded in concurrency and time.
    let joined = {
        let _permit = shared.connect.acquire().await;
        let start = Instant::now();
        let join = async {
            let mut ws = shared.connect(target, &room, &ip).await?;
            ws.send(Message::text(format!(r#"{{"name":"c{id}"}}"#)))
                .await?;
            let mut backlog: VecDeque<String> = VecDeque::new();
            loop {
                let text = match ws.next().await {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => bail!("closed before ready: {c:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => bail!("connection ended before ready"),
                };
                let frame: Frame = serde_json::from_str(&text)?;
                if frame.ready == Some(true) {
                    break;
                }
                if let Some(e) = frame.error {
                    bail!("error before ready: {e}");
                }
                if let (Some(m), Some(_)) = (frame.message, frame.timestamp) {
                    backlog.push_back(m);
                    if backlog.len() > SERVER_BACKLOG {
                        backlog.pop_front();
                    }
                }
            }
            Ok::<_, anyhow::Error>((ws, backlog))
        };
        match tokio::time::timeout(shared.connect_timeout, join).await {
            Ok(Ok((ws, backlog))) => {
                stats.ready_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                let want = &shared.backlog[room_index];
                stats.backlog_ok = backlog.iter().eq(want.iter());
                shared.ready_per_room[room_index].fetch_add(1, Ordering::SeqCst);
                Some(ws)
            }
            Ok(Err(e)) => {
                shared.error(format!("client {id}: {e:#}"));
                None
            }
            Err(_) => {
                shared.error(format!(
                    "client {id}: not ready within {:?}",
                    shared.connect_timeout
                ));
                None
            }
        }
    };
    stats.ready = joined.is_some();
    shared.settle();
    let Some(mut ws) = joined else { return stats };

    let mut last_timestamp = 0u64;
    let mut own_acks = 0u64;
    let mut seq = 0u32;
    let mut ticker: Option<tokio::time::Interval> = None;
    let shard = &shared.latency[id as usize % SHARDS];
    let shard_from_send = &shared.latency_from_send[id as usize % SHARDS];
    loop {
        let sending = *phase.borrow() == SENDING;
        if let (true, None, Some(p)) = (sending, &ticker, period) {
            ticker = Some(schedule(tokio::time::Instant::now() + first_send, p));
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == CLOSE { break; }
            }
            scheduled = next_tick(&mut ticker), if sending => {
                // Announce the send, then look at the phase again: the
                // run stops sending by setting the phase and then waiting
                // until no send is announced, so it never counts a send
                // that happens after it looked (whose echo the closing
                // connection would then lose).
                shared.in_send.fetch_add(1, Ordering::SeqCst);
                if *phase.borrow() != SENDING {
                    shared.in_send.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let text = format!(
                    r#"{{"message":"cl {} {id} {seq} {} {}"}}"#,
                    shared.tag,
                    shared.micros_at(scheduled),
                    shared.micros()
                );
                seq += 1;
                stats.sent += 1;
                shared.sent.fetch_add(1, Ordering::SeqCst);
                let sent = ws.send(Message::text(text)).await;
                shared.in_send.fetch_sub(1, Ordering::SeqCst);
                if sent.is_err() {
                    stats.disconnected = true;
                    break;
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => { stats.disconnected = true; break; }
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                    stats.other_errors += 1;
                    continue;
                };
                if let Some(e) = frame.error {
                    if e.contains("rate-limited") { stats.rate_limited += 1 } else { stats.other_errors += 1 }
                    if own_acks < stats.sent {
                        own_acks += 1;
                        stats.errors_after_send += 1;
                        shared.acked.fetch_add(1, Ordering::SeqCst);
                    }
                    continue;
                }
                let (Some(message), Some(ts)) = (frame.message, frame.timestamp) else { continue };
                if ts <= last_timestamp { stats.timestamp_regressions += 1; }
                last_timestamp = ts;
                let Some(Stamp { client: from, seq: from_seq, scheduled_us, sent_us }) =
                    parse_text(&message, &shared.tag) else { continue };
                let now = shared.micros();
                stats.deliveries += 1;
                shared.delivered.fetch_add(1, Ordering::SeqCst);
                let seen = stats.seen.entry(from).or_default();
                if !seen.insert(from_seq) {
                    stats.duplicated += 1;
                    continue;
                }
                if seen.max.is_some_and(|m| from_seq < m) {
                    stats.out_of_order += 1;
                }
                seen.max = Some(seen.max.map_or(from_seq, |m| m.max(from_seq)));
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(now.saturating_sub(scheduled_us).max(1));
                shard_from_send
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(now.saturating_sub(sent_us).max(1));
                if from == id && own_acks < stats.sent {
                    own_acks += 1;
                    shared.acked.fetch_add(1, Ordering::SeqCst);
                    let size = shared.room_sizes.get().map_or(0, |s| s[room_index]);
                    shared.expected.fetch_add(size, Ordering::SeqCst);
                }
            }
        }
    }
    if !stats.disconnected {
        let close = async {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
    }
    stats
}

/// A sender's schedule: a tick every `period` from `start`. Ticks missed
/// while the client was held up fire at once, each returning its own
/// scheduled time, which the message carries: latency is measured from it.
pub(super) fn schedule(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(start, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    t
}

/// The scheduled time of the next tick of `ticker`, or never.
pub(super) async fn next_tick(ticker: &mut Option<tokio::time::Interval>) -> tokio::time::Instant {
    match ticker {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

/// Seeds `texts` into `room`, oldest first, from connections with their own
/// fake IPs (a few messages each, within the rate limit's burst); waits for
/// each message's echo so the order is the given one.
pub(super) async fn seed(
    shared: &Shared,
    room: &str,
    texts: &[String],
    first_ip: u32,
) -> anyhow::Result<()> {
    for (i, chunk) in texts.chunks(SEEDS_PER_IP).enumerate() {
        let ip = fake_ip(first_ip + i as u32);
        let mut ws = shared.connect(0, room, &ip).await?;
        ws.send(Message::text(format!(r#"{{"name":"seed{i}"}}"#)))
            .await?;
        let mut ready = false;
        for text in chunk {
            ws.send(Message::text(
                serde_json::json!({ "message": text }).to_string(),
            ))
            .await?;
        }
        let mut echoed = 0;
        while echoed < chunk.len() {
            let Some(frame) = ws.next().await else {
                bail!("seeding: connection ended")
            };
            let Message::Text(t) = frame? else { continue };
            let frame: Frame = serde_json::from_str(&t)?;
            if let Some(e) = frame.error {
                bail!("seeding: server said {e}");
            }
            ready |= frame.ready == Some(true);
            if ready && frame.message.as_ref().is_some_and(|m| chunk.contains(m)) {
                echoed += 1;
            }
        }
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    }
    Ok(())
}
