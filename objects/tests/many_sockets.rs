//! 10,000 WebSockets on one object. The clients live in a child process (the
//! test binary run again), since both ends in one process would pass the
//! per-process file limit.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use objects::BoxError;
use objects::{Context, Error, Message, Object, Request, Response, Result, Runtime, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOCKETS: usize = 10_000;
const CHILD_ENV: &str = "OBJECTS_MANY_SOCKETS_CHILD";

struct Hub;

impl Object for Hub {
    type Env = ();
    type Call = String;
    type Reply = usize;
    async fn new(_: &mut Context, _: Arc<()>) -> Result<Self, BoxError> {
        Ok(Hub)
    }
    async fn fetch(&mut self, ctx: &mut Context, mut req: Request) -> Result<Response, BoxError> {
        let (_ws, resp) = ctx.accept_websocket(&mut req, &[]).map_err(Error::from)?;
        Ok(resp)
    }
    async fn call(&mut self, ctx: &mut Context, msg: String) -> Result<usize, BoxError> {
        let all = ctx.websockets(None);
        let n = all.len();
        if !msg.is_empty() {
            ctx.broadcast(all, msg);
        }
        Ok(n)
    }
    async fn websocket_message(
        &mut self,
        _: &mut Context,
        _: WebSocket,
        _: Message,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The child: opens the sockets, says "ready", then waits for one text frame
/// on each and says "got N".
#[test]
fn many_sockets_child() {
    let Ok(addr) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of the test below
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let mut socks = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let mut s = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .expect("write");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.expect("read head");
                head.push(b[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            socks.push(s);
        }
        println!("ready");
        let mut got = 0;
        for s in &mut socks {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.expect("frame head");
            let mut payload = vec![0u8; usize::from(h[1] & 0x7f)];
            s.read_exact(&mut payload).await.expect("payload");
            if h[0] == 0x81 && payload == b"hello all" {
                got += 1;
            }
        }
        println!("got {got}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sockets_on_one_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("open");
    let hubs = rt.namespace::<Hub>("hubs", ()).expect("ns");
    let addr = common::serve(hubs.clone(), "hub").await;

    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "many_sockets_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    wait_for(&mut rx, "ready").await;
    let hub = hubs.get_by_name("hub");
    assert_eq!(hub.call(String::new()).await.expect("count"), SOCKETS);
    assert_eq!(
        hub.call("hello all".into()).await.expect("broadcast"),
        SOCKETS
    );
    assert_eq!(wait_for(&mut rx, "got ").await, format!("got {SOCKETS}"));
    let status = child.wait().expect("child");
    assert!(status.success());
    let _ = std::io::stdout().flush();
    rt.shutdown().await;
}

async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, prefix: &str) -> String {
    while let Some(line) = rx.recv().await {
        // The harness may print "test ... " on the same line first.
        if let Some(at) = line.find(prefix) {
            return line[at..].to_string();
        }
    }
    panic!("child ended before {prefix:?}");
}
