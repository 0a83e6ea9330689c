//! The two HTTP waits, each with its own bound: a request head that does
//! not arrive whole within the header timeout is cut off (the first one
//! counted from the connection's start), and a keep-alive connection idle
//! past the keep-alive timeout is closed. Each test sets one bound to a
//! second and the other to an hour, and waits for the server's close.

mod common;

use std::time::Duration;

use chat_demo::{ClientIpHeader, HttpLimits};
use common::{PATIENCE, Server, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOUR: Duration = Duration::from_secs(3600);

async fn start(dir: &std::path::Path, header: Duration, keep_alive: Duration) -> Server {
    let setup = Setup {
        client_ip_header: ClientIpHeader::None,
        http: HttpLimits {
            header_timeout: header,
            keep_alive_timeout: keep_alive,
            ..HttpLimits::default()
        },
        ..Setup::default()
    };
    Server::start(dir, setup).await
}

async fn connect(server: &Server) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(server.addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Sends a request for a 404 and reads the whole answer (its length is
/// known), leaving the connection open.
async fn request_404(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let whole = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed mid-answer: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"Not Found") {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, whole)
        .await
        .expect("answered in time");
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
}

/// Reads until the server closes the connection; true if it did (EOF or
/// reset) rather than sending bytes.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the server closes the connection in time")
    {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

/// Waits (on yields) until the server counts `n` TCP connections.
async fn tcp_count_is(server: &Server, n: usize) {
    let wait = async {
        while server.state.tcp_connections() != n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("never {n} TCP connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_cut_off_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), Duration::from_secs(1), HOUR).await;
    // Idle after a request: the keep-alive bound (an hour) applies, not
    // the header one.
    let mut kept_alive = connect(&server).await;
    request_404(&mut kept_alive).await;
    let mut silent = connect(&server).await;
    let mut half = connect(&server).await;
    half.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");

    assert!(closed_by_server(&mut half).await, "half a head cut off");
    assert!(closed_by_server(&mut silent).await, "silent one cut off");
    tcp_count_is(&server, 1).await;
    // Idle for longer than the header timeout, and still served.
    request_404(&mut kept_alive).await;
    drop(kept_alive);
    tcp_count_is(&server, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_by_the_keep_alive_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), HOUR, Duration::from_secs(1)).await;
    // A head on its way: the header bound (an hour) applies to it.
    let mut half = connect(&server).await;
    half.write_all(b"GET /nowhere HTTP/1.1\r\n")
        .await
        .expect("half a head");
    let mut kept_alive = connect(&server).await;
    request_404(&mut kept_alive).await;

    assert!(closed_by_server(&mut kept_alive).await, "idle one closed");
    tcp_count_is(&server, 1).await;
    // The slow head was not cut by the keep-alive bound: it completes.
    half.write_all(b"Host: x\r\n\r\n").await.expect("the rest");
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, half.read_exact(&mut head))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(&head, b"HTTP/1.1 404");
    drop(half);
    tcp_count_is(&server, 0).await;
    server.stop().await;
}
