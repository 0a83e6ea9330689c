//! Our chat page in a real browser: headless Debian `chromium`, driven over
//! the DevTools protocol. Two pages chat in one room, and a message holding
//! markup is shown as text. Skipped, with the reason printed, when chromium
//! is not installed (`.ci/run` installs it, so CI always runs this).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chat_demo::{AppState, ChatOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Safety net for every wait; a passing run needs a fraction of it.
const PATIENCE: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A DevTools connection to one browser.
struct Cdp {
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("devtools socket");
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(Message::text(m)).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (p, e) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                match v.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        if let Some(tx) = p.lock().await.remove(&id) {
                            let _ = tx.send(v);
                        }
                    }
                    None => e.lock().await.push(v),
                }
            }
        });
        Cdp {
            out,
            pending,
            events,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.out.send(msg.to_string()).expect("devtools writer");
        let reply = tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer"))
            .expect("reply");
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }
}

/// One tab.
struct Page<'a> {
    cdp: &'a Cdp,
    session: String,
}

impl<'a> Page<'a> {
    async fn open(cdp: &'a Cdp, url: &str) -> Page<'a> {
        let target = cdp
            .send(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().expect("target id").to_string();
        let attached = cdp
            .send(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let session = attached["sessionId"].as_str().expect("session").to_string();
        let page = Page { cdp, session };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page.call("Page.navigate", json!({ "url": url })).await;
        page
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.send(Some(&self.session), method, params).await
    }

    /// Evaluates JavaScript (promises awaited) and returns its value.
    async fn eval(&self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Resolves when `cond` (a JS expression) holds, re-checked on every DOM
    /// change: an event, not a timer.
    async fn wait_for(&self, cond: &str) {
        let expr = format!(
            "new Promise(resolve => {{
                const check = () => {{ try {{ if ({cond}) {{ obs.disconnect(); resolve(true); }} }} catch (e) {{}} }};
                const obs = new MutationObserver(check);
                obs.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                check();
            }})"
        );
        tokio::time::timeout(PATIENCE, self.eval(&expr))
            .await
            .unwrap_or_else(|_| panic!("never true: {cond}"));
    }

    async fn send_message(&self, text: &str) {
        let text = serde_json::to_string(text).expect("json");
        self.eval(&format!(
            "(() => {{ const i = document.querySelector('#message-input'); i.value = {text};
               i.dispatchEvent(new Event('input', {{ bubbles: true }}));
               document.querySelector('#send-button').click(); return true; }})()"
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_and_markup_stays_text() {
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: Debian's chromium is not installed (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = objects::Runtime::builder()
        .data_dir(dir.path())
        .open()
        .expect("runtime");
    let state = AppState::new(&rt, ChatOptions::default()).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(chat_demo::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let profile = tempfile::tempdir().expect("profile");
    let mut chromium = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");
    // Chromium announces its DevTools endpoint on stderr.
    let mut lines = BufReader::new(chromium.stderr.take().expect("stderr")).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find("ws://") {
                return line[at..].trim().to_string();
            }
        }
        panic!("chromium exited without a DevTools endpoint");
    })
    .await
    .expect("chromium started");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let cdp = Cdp::connect(&url).await;
    let alice = Page::open(&cdp, &format!("http://{addr}/?name=alice#general")).await;
    alice
        .wait_for("document.body.dataset.ready === 'true'")
        .await;
    let bob = Page::open(&cdp, &format!("http://{addr}/?name=bob#general")).await;
    bob.wait_for("document.body.dataset.ready === 'true'").await;
    alice.wait_for("[...document.querySelectorAll('#roster li')].some(li => li.textContent.includes('bob'))").await;

    alice.send_message("hello bob").await;
    bob.wait_for("[...document.querySelectorAll('#messages .msg-text')].some(e => e.textContent === 'hello bob')")
        .await;

    let markup = "<script>alert(1)</script><b>x</b>";
    bob.send_message(markup).await;
    let seen = format!(
        "[...document.querySelectorAll('#messages .msg-text')].some(e => e.textContent === {})",
        serde_json::to_string(markup).expect("json")
    );
    alice.wait_for(&seen).await;
    for page in [&alice, &bob] {
        assert_eq!(
            page.eval("document.querySelectorAll('#messages b, #messages script').length")
                .await,
            json!(0)
        );
        assert_eq!(
            page.eval("document.querySelector('#messages .msg-name') !== null")
                .await,
            json!(true)
        );
    }
    let dialogs = cdp
        .events
        .lock()
        .await
        .iter()
        .filter(|e| e["method"] == "Page.javascriptDialogOpening")
        .count();
    assert_eq!(dialogs, 0, "no script ran");

    // Leave a screenshot for the docs when asked to.
    if let Ok(path) = std::env::var("CHAT_SCREENSHOT") {
        let shot = alice
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().expect("png");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
    }

    let _ = chromium.kill().await;
    let _ = stop.send(());
    let _ = server.await;
    rt.shutdown().await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| u32::from(val(*c))).collect();
        let n = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
