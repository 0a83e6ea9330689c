//! Our pages in a real browser: headless Debian `chromium`, driven over the
//! DevTools protocol. Two pages chat in one room, and a message holding
//! markup is shown as text; the operator's inspector signs in, walks from
//! the namespaces to a room's stored messages and sockets, and shows the
//! hostile names and messages in them as text. Skipped, with the reason
//! printed, when chromium is not installed (`.ci/run` installs it, so CI
//! always runs this).

use std::collections::HashMap;
use std::net::SocketAddr;
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
        let reply = self.send_raw(session, method, params).await;
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// The whole reply, `error` included.
    async fn send_raw(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.out.send(msg.to_string()).expect("devtools writer");
        tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer"))
            .expect("reply")
    }
}

/// One tab.
struct Page<'a> {
    cdp: &'a Cdp,
    session: String,
}

impl<'a> Page<'a> {
    async fn open(cdp: &'a Cdp, url: &str) -> Page<'a> {
        Self::open_in(cdp, url, None).await
    }

    /// Opens a tab in its own browser context: its own local storage, as
    /// if another person's browser.
    async fn open_isolated(cdp: &'a Cdp, url: &str) -> Page<'a> {
        let context = cdp
            .send(None, "Target.createBrowserContext", json!({}))
            .await;
        let id = context["browserContextId"].as_str().expect("context id");
        Self::open_in(cdp, url, Some(id)).await
    }

    async fn open_in(cdp: &'a Cdp, url: &str, context: Option<&str>) -> Page<'a> {
        let mut params = json!({ "url": "about:blank" });
        if let Some(id) = context {
            params["browserContextId"] = json!(id);
        }
        let target = cdp.send(None, "Target.createTarget", params).await;
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
    /// change: an event, not a timer. A navigation that replaces the
    /// document while waiting ends that evaluation with an error; the wait
    /// then starts over in the new document.
    async fn wait_for(&self, cond: &str) {
        let expr = format!(
            "new Promise(resolve => {{
                const check = () => {{ try {{ if ({cond}) {{ obs.disconnect(); resolve(true); }} }} catch (e) {{}} }};
                const obs = new MutationObserver(check);
                obs.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                check();
            }})"
        );
        let params = json!({ "expression": expr, "awaitPromise": true, "returnByValue": true });
        let wait = async {
            loop {
                let reply = self
                    .cdp
                    .send_raw(Some(&self.session), "Runtime.evaluate", params.clone())
                    .await;
                if reply["result"]["result"]["value"] == json!(true) {
                    return;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("never true: {cond}"));
    }

    /// Clicks the first element matching `selector` (it must exist).
    async fn click(&self, selector: &str) {
        let selector = serde_json::to_string(selector).expect("json");
        let clicked = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector}); if (!e) return false; e.click(); return true; }})()"
            ))
            .await;
        assert_eq!(clicked, json!(true), "nothing to click at {selector}");
    }

    /// Clicks the first element matching `selector` inside the element
    /// that the JavaScript expression `within` yields (both must exist).
    async fn click_in(&self, within: &str, selector: &str) {
        let selector = serde_json::to_string(selector).expect("json");
        let clicked = self
            .eval(&format!(
                "(() => {{ const e = ({within})?.querySelector({selector}); if (!e) return false; e.click(); return true; }})()"
            ))
            .await;
        assert_eq!(
            clicked,
            json!(true),
            "nothing to click at {selector} in {within}"
        );
    }

    /// Saves a PNG of the page at `width`×`height` CSS pixels.
    async fn screenshot(&self, path: &str, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        self.eval("window.scrollTo(0, 0); true").await;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().expect("png");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
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

/// Whether Debian's chromium is installed (says why not when it is not).
fn have_chromium() -> bool {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        println!("skipped: Debian's chromium is not installed (apt-get install chromium)");
    }
    found
}

/// A headless chromium with its own profile, and its DevTools endpoint.
struct Browser {
    child: tokio::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let mut child = tokio::process::Command::new("chromium")
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
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
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
        Browser {
            child,
            url,
            _profile: profile,
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The number of `Page.javascriptDialogOpening` events seen (an `alert`
/// from injected markup would open one).
async fn dialogs(cdp: &Cdp) -> usize {
    cdp.events
        .lock()
        .await
        .iter()
        .filter(|e| e["method"] == "Page.javascriptDialogOpening")
        .count()
}

/// The chat server on 127.0.0.1:0 over a fresh runtime.
struct Chat {
    rt: objects::Runtime,
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Chat {
    async fn start(dir: &std::path::Path) -> Chat {
        let rt = objects::Runtime::builder()
            .data_dir(dir)
            .open()
            .expect("runtime");
        // Every page comes from 127.0.0.1, one IP: a burst of about 40
        // writes rather than 5 lets one test use every feature.
        let options = ChatOptions {
            rate_limit: chat_demo::protocol::limit::RateLimitOptions {
                per_message_ms: 5_000,
                grace_ms: 200_000,
            },
            ..ChatOptions::default()
        };
        let state = AppState::new(&rt, options).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(chat_demo::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Chat {
            rt,
            addr,
            stop,
            server,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_and_markup_stays_text() {
    if !have_chromium() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = Chat::start(dir.path()).await;
    let addr = chat.addr;

    let mut browser = Browser::start().await;
    let cdp = Cdp::connect(&browser.url).await;
    let alice = Page::open(&cdp, &format!("http://{addr}/?name=alice#general")).await;
    alice
        .wait_for("document.body.dataset.ready === 'true'")
        .await;
    // Bob in his own browser context: his own local storage, so his own
    // user key for direct messages.
    let bob = Page::open_isolated(&cdp, &format!("http://{addr}/?name=bob#general")).await;
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
    assert_eq!(dialogs(&cdp).await, 0, "no script ran");

    // Typing: alice types; bob's page says so, then lets it expire (5 s
    // without a new signal).
    alice
        .eval(
            "(() => { const i = document.querySelector('#message-input'); i.value = 'still typ';
               i.dispatchEvent(new Event('input', { bubbles: true })); return true; })()",
        )
        .await;
    bob.wait_for("document.querySelector('#typing').textContent === 'alice is typing…'")
        .await;
    assert_eq!(
        alice
            .eval("document.querySelector('#typing').textContent")
            .await,
        json!(""),
        "not told of oneself"
    );
    bob.wait_for("document.querySelector('#typing').textContent === ''")
        .await;

    // Reactions: bob reacts to "hello bob" through its button; both pages
    // show the count, pressed only on bob's.
    let hello = "[...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.msg-text').textContent === 'hello bob')";
    bob.click_in(hello, ".react-add[data-emoji='👍']").await;
    for page in [&alice, &bob] {
        page.wait_for(&format!(
            "{hello}.querySelector('.reaction[data-emoji=\"👍\"]')?.textContent === '👍 1'"
        ))
        .await;
    }
    let pressed = format!("{hello}.querySelector('.reaction').getAttribute('aria-pressed')");
    assert_eq!(bob.eval(&pressed).await, json!("true"));
    assert_eq!(alice.eval(&pressed).await, json!("false"));
    assert_eq!(
        alice
            .eval(&format!("{hello}.querySelector('.reaction').title"))
            .await,
        json!("bob")
    );
    // Clicking it again takes it back.
    bob.click_in(hello, ".reaction[data-emoji='👍']").await;
    alice
        .wait_for(&format!("{hello}.querySelector('.reaction') === null"))
        .await;

    // Threads: alice replies to bob's markup message; the reply quotes it
    // as text, the parent counts the reply, and the thread view shows the
    // two alone.
    let hostile = format!(
        "[...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.msg-text').textContent === {})",
        serde_json::to_string(markup).expect("json")
    );
    alice.click_in(&hostile, ".reply-button").await;
    alice
        .wait_for("!document.querySelector('#reply-bar').hidden")
        .await;
    alice.send_message("a threaded reply").await;
    let reply = "[...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.msg-text').textContent === 'a threaded reply')";
    for page in [&alice, &bob] {
        page.wait_for(&format!(
            "{reply}?.querySelector('.reply-quote')?.textContent.includes('bob: <script>')"
        ))
        .await;
        page.wait_for(&format!(
            "{hostile}.querySelector('.reply-count')?.textContent === '1 reply'"
        ))
        .await;
    }
    assert_eq!(
        alice
            .eval("document.querySelector('#reply-bar').hidden")
            .await,
        json!(true),
        "the reply bar closes once sent"
    );
    bob.click_in(&hostile, ".reply-count").await;
    bob.wait_for("document.body.classList.contains('threaded')")
        .await;
    assert_eq!(
        bob.eval("[...document.querySelectorAll('#messages .msg')].filter(m => getComputedStyle(m).display !== 'none').map(m => m.querySelector('.msg-text').textContent)")
            .await,
        json!([markup, "a threaded reply"])
    );
    bob.click("#thread-close").await;
    bob.wait_for("!document.body.classList.contains('threaded')")
        .await;
    for page in [&alice, &bob] {
        assert_eq!(
            page.eval("document.querySelectorAll('#messages b, #messages script').length")
                .await,
            json!(0)
        );
    }
    assert_eq!(dialogs(&cdp).await, 0, "no script ran");

    // Direct messages: bob picks alice in the roster and writes to her;
    // both pages show it as direct, and the keys differ (own contexts).
    let keys = "localStorage.getItem('chat-user-key')";
    assert_ne!(alice.eval(keys).await, bob.eval(keys).await);
    let alice_li = "[...document.querySelectorAll('#roster li')].find(li => li.querySelector('.who').textContent === 'alice')";
    bob.click_in(alice_li, ".dm-button").await;
    bob.wait_for("!document.querySelector('#dm-bar').hidden")
        .await;
    bob.send_message("<i>just</i> for you").await;
    let direct = "[...document.querySelectorAll('#messages .msg.dm')].find(m => m.querySelector('.msg-text').textContent === '<i>just</i> for you')";
    alice
        .wait_for(&format!(
            "{direct}?.querySelector('.dm-label').textContent === 'direct to you'"
        ))
        .await;
    bob.wait_for(&format!(
        "{direct}?.querySelector('.dm-label').textContent === 'direct to alice'"
    ))
    .await;
    for page in [&alice, &bob] {
        assert_eq!(
            page.eval("document.querySelectorAll('#messages i').length")
                .await,
            json!(0)
        );
    }
    bob.click("#dm-cancel").await;
    assert_eq!(
        bob.eval("document.querySelector('#dm-bar').hidden").await,
        json!(true)
    );

    // Search: words and prefixes, results shown as text; a click on one
    // brings its message into view.
    bob.eval("document.querySelector('#search-input').value = 'SCRIPT aler'; true")
        .await;
    bob.click("#search-button").await;
    bob.wait_for("document.querySelector('#search-status').textContent === '1 found.'")
        .await;
    assert_eq!(
        bob.eval("document.querySelector('#search-results li .what').textContent")
            .await,
        json!(markup)
    );
    bob.eval("document.querySelector('#search-input').value = 'hel'; true")
        .await;
    bob.click("#search-button").await;
    bob.wait_for("document.querySelector('#search-status').textContent === '1 found.'")
        .await;
    assert_eq!(
        bob.eval(
            "[...document.querySelectorAll('#search-results li .what')].map(e => e.textContent)"
        )
        .await,
        json!(["hello bob"])
    );
    bob.click("#search-results li").await;
    bob.wait_for(&format!("{hello}.classList.contains('flash')"))
        .await;
    for page in [&alice, &bob] {
        assert_eq!(
            page.eval(
                "document.querySelectorAll('#search-results b, #search-results script').length"
            )
            .await,
            json!(0)
        );
    }

    // Room discovery: a third page on the join view lists #general with
    // the two of them online, as text.
    let carol = Page::open_isolated(&cdp, &format!("http://{addr}/")).await;
    carol
        .wait_for("[...document.querySelectorAll('#room-list button')].some(b => b.dataset.room === 'general' && b.textContent.startsWith('#general2 online'))")
        .await;
    carol.click("#room-list button[data-room='general']").await;
    assert_eq!(
        carol
            .eval("document.querySelector('#room-input').value")
            .await,
        json!("general")
    );

    // Leave a screenshot for the docs when asked to.
    if let Ok(path) = std::env::var("CHAT_SCREENSHOT") {
        let shot = alice
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let data = shot["data"].as_str().expect("png");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
    }

    // Room management: alice claims #general (her token is kept by her
    // page), sets a topic holding markup that both pages show as text,
    // and deletes the room: bob's page is sent back to the join view.
    alice.click("#claim-button").await;
    alice
        .wait_for("document.querySelector('#manage-status').textContent === 'You own this room.'")
        .await;
    bob.wait_for(
        "document.querySelector('#manage-status').textContent === 'Someone owns this room.'",
    )
    .await;
    assert_eq!(
        alice
            .eval("localStorage.getItem('chat-owner:general').length")
            .await,
        json!(64)
    );
    alice
        .eval("document.querySelector('#topic-input').value = 'Plans <i>now</i>'; true")
        .await;
    alice.click("#topic-button").await;
    for page in [&alice, &bob] {
        page.wait_for("document.querySelector('#room-topic').textContent === 'Plans <i>now</i>'")
            .await;
        assert_eq!(
            page.eval("document.querySelectorAll('#room-topic i').length")
                .await,
            json!(0)
        );
    }
    assert_eq!(
        bob.eval("document.querySelector('#delete-button').hidden")
            .await,
        json!(true),
        "only the owner's page offers deletion"
    );
    // A password: a newcomer's page asks for it, then gets in.
    alice
        .eval("document.querySelector('#new-password-input').value = 'pw 1'; true")
        .await;
    alice.click("#password-button").await;
    alice
        .wait_for("document.querySelector('#password-button').textContent === 'Change'")
        .await;
    let dave = Page::open_isolated(&cdp, &format!("http://{addr}/?name=dave#general")).await;
    dave.wait_for("!document.querySelector('#password-field').hidden")
        .await;
    dave.eval("document.querySelector('#room-password-input').value = 'pw 1'; true")
        .await;
    dave.click("#join-button").await;
    dave.wait_for("document.body.dataset.ready === 'true'")
        .await;
    alice
        .wait_for("[...document.querySelectorAll('#roster li')].some(li => li.textContent.includes('dave'))")
        .await;
    alice.click("#delete-button").await;
    alice.click("#delete-button").await;
    for page in [&alice, &bob, &dave] {
        page.wait_for("document.body.dataset.view === 'join'").await;
    }
    assert_eq!(dialogs(&cdp).await, 0, "no script ran, no dialog opened");

    browser.stop().await;
    chat.stop().await;
}

/// The admin token of the inspector test.
const TOKEN: &str = "s3cret-token";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A dialect-A chat user on its own socket.
struct ChatUser {
    ws: Ws,
}

impl ChatUser {
    /// Connects to `room` (escaped here), says hello as `name` and reads
    /// up to `ready`.
    async fn join(addr: SocketAddr, room: &str, name: &str) -> ChatUser {
        let url = format!("ws://{addr}/api/room/{}/websocket", escape_segment(room));
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut user = ChatUser { ws };
        user.send(json!({ "name": name })).await;
        user.until(|f| *f == json!({ "ready": true })).await;
        user
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// Reads JSON frames until one satisfies `want`.
    async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(t.as_str())
                            && want(&v)
                        {
                            return v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the socket ended: {other:?}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("a frame in time")
    }

    /// Sends a chat message and waits for its echo (so it is stored).
    async fn say(&mut self, text: &str) {
        self.send(json!({ "message": text })).await;
        self.until(|f| f["message"] == text).await;
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }
}

/// Percent-escapes everything but unreserved characters, for a path segment.
fn escape_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// JavaScript that types `token` into the sign-in form and submits it.
fn sign_in(token: &str) -> String {
    let token = serde_json::to_string(token).expect("json");
    format!(
        "(() => {{ const i = document.querySelector('input[name=token]'); i.value = {token};
           i.form.requestSubmit(); return true; }})()"
    )
}

/// A JS string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_shows_rooms_as_text() {
    if !have_chromium() {
        return;
    }
    // The only recorder of this test binary, installed before the runtime
    // opens so the runtime's counters reach the page's live figures.
    let prometheus = chat_demo::install_prometheus().expect("prometheus recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = Chat::start(dir.path()).await;
    let (rt, addr) = (chat.rt.clone(), chat.addr);
    let admin = chat_demo::admin_app(
        &rt,
        chat_demo::AdminOptions {
            token: Some(TOKEN.into()),
            inspector: true,
            prometheus: Some(prometheus),
            listen: None,
            cluster: None,
        },
    )
    .expect("admin routes");
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let admin_addr = admin_listener.local_addr().expect("admin addr");
    let admin_server = tokio::spawn(async move { axum::serve(admin_listener, admin).await });

    // A room named with markup, holding a message that is markup.
    let room = "<b>ops</b>";
    let hostile = "hi <img src=x onerror=alert(1)> & <script>alert(2)</script>";
    let mut alice = ChatUser::join(addr, room, "alice").await;
    alice.say(hostile).await;

    let mut browser = Browser::start().await;
    let cdp = Cdp::connect(&browser.url).await;
    let page = Page::open(&cdp, &format!("http://{admin_addr}/inspector")).await;

    // Not signed in: the page sends us to the sign-in form.
    page.wait_for(
        "location.pathname === '/inspector/login'
         && document.querySelector('input[type=password][name=token]') !== null",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('label[for=token]').textContent")
            .await,
        json!("Admin token")
    );
    page.eval(&sign_in("not-the-token")).await;
    page.wait_for(
        "document.querySelector('#login-error').textContent.includes('not the admin token')",
    )
    .await;
    page.eval(&sign_in(TOKEN)).await;
    page.wait_for(
        "location.pathname === '/inspector'
         && document.querySelector('#namespaces button[data-ns=\"rooms\"]') !== null",
    )
    .await;

    // Namespaces → the room, found by its name.
    page.click("#namespaces button[data-ns=\"rooms\"]").await;
    let room_button = format!(
        "[...document.querySelectorAll('#objects button[data-id]')].find(b => b.textContent === {})",
        js(room)
    );
    page.wait_for(&format!("{room_button} !== undefined")).await;
    page.eval(&format!("{room_button}.click(), true")).await;
    let shows_message = format!(
        "document.querySelector('#object-heading').textContent === {}
         && document.querySelector('#entries').textContent.includes({})",
        js(room),
        js(hostile)
    );
    page.wait_for(&shows_message).await;

    // The markup is text: no element came out of it, and no script ran.
    assert_eq!(
        page.eval("document.querySelectorAll('main img, main b, main script, #error *:is(img, b, script)').length")
            .await,
        json!(0)
    );
    assert_eq!(
        page.eval("document.querySelector('#crumbs').textContent.includes('<b>ops</b>')")
            .await,
        json!(true)
    );
    // One stored message, under `msg/` and its 20-digit timestamp, as
    // JSON; the room's message count; and the search marker, `idx-through`
    // (the message waits for a batch of 16 before it is indexed, so there
    // is no `idx/<prefix>/<id>` entry yet).
    assert_eq!(
        page.eval(
            r"[...document.querySelectorAll('#entries tbody tr')]
               .map(r => [r.dataset.key.replace(/\d/g, '9'), r.dataset.kind])"
        )
        .await,
        json!([
            ["count", "json"],
            ["idx-through", "json"],
            ["msg/99999999999999999999", "json"]
        ])
    );
    let stored = page
        .eval(
            "JSON.parse(document.querySelector('#entries tbody tr[data-key^=\"msg/\"] pre').textContent)",
        )
        .await;
    assert_eq!(stored["message"], json!(hostile));
    assert_eq!(stored["name"], json!("alice"));
    // Alice's socket: open, tagged with its dialect, her session attached.
    let sockets = page
        .eval(
            "[...document.querySelectorAll('#sockets tbody tr')].map(r => ({
               open: r.dataset.open,
               tags: [...r.cells[1].querySelectorAll('.pill')].map(p => p.textContent),
               attachment: JSON.parse(r.cells[2].textContent),
             }))",
        )
        .await;
    let sockets = sockets.as_array().expect("sockets");
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert_eq!(sockets[0]["open"], json!("true"));
    assert_eq!(sockets[0]["tags"], json!(["A"]));
    assert_eq!(sockets[0]["attachment"]["name"], json!("alice"));
    assert_eq!(sockets[0]["attachment"]["dialect"], json!("A"));

    // The live figures: counters, labelled gauges, histograms as count
    // and sum only.
    page.wait_for(
        "document.querySelector('#metrics [data-metric=\"objects_websocket_messages_in_total\"]') !== null
         && document.querySelector('#metrics [data-metric=\"objects_call_seconds_count\"]') !== null
         && [...document.querySelectorAll('#metrics [data-metric=\"objects_live\"] .labels')]
              .some(l => l.textContent.includes('namespace=\"rooms\"'))",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelectorAll('#metrics [data-metric$=\"_bucket\"]').length")
            .await,
        json!(0)
    );

    // The view lives in the URL: a reload comes back to it.
    let hash = page.eval("location.hash").await;
    assert!(
        hash.as_str()
            .is_some_and(|h| h.starts_with("#ns=rooms&id=")),
        "{hash}"
    );
    page.eval("window.beforeReload = true; location.reload(); true")
        .await;
    page.wait_for(&format!("!window.beforeReload && {shows_message}"))
        .await;

    // The key filter.
    page.eval(
        "(() => { const i = document.querySelector('#prefix-input'); i.value = 'none/';
           i.form.requestSubmit(); return true; })()",
    )
    .await;
    page.wait_for(
        "location.hash.endsWith('&prefix=none%2F')
         && document.querySelector('#entries tbody td.empty')?.textContent.includes('none/')",
    )
    .await;
    page.click("#prefix-clear").await;
    page.wait_for(&shows_message).await;

    if let Ok(path) = std::env::var("INSPECTOR_SCREENSHOT") {
        page.screenshot(&path, 1280, 860).await;
    }

    // A refused request shows its status and text.
    page.eval("location.hash = '#ns=no-such-namespace'; true")
        .await;
    page.wait_for("document.querySelector('#error [data-status=\"404\"]')?.textContent.includes('no-such-namespace')")
        .await;
    page.eval("location.hash = ''; true").await;
    page.wait_for("document.querySelector('#error').childElementCount === 0")
        .await;

    assert_eq!(dialogs(&cdp).await, 0, "no script ran");
    let thrown: Vec<Value> = cdp
        .events
        .lock()
        .await
        .iter()
        .filter(|e| e["method"] == "Runtime.exceptionThrown")
        .cloned()
        .collect();
    assert!(thrown.is_empty(), "the page threw: {thrown:?}");

    // Signing out drops the cookie.
    page.click("#sign-out-button").await;
    page.wait_for("location.pathname === '/inspector/login'")
        .await;
    assert_eq!(
        page.eval("fetch('/inspector/api/summary').then(r => r.status)")
            .await,
        json!(401)
    );

    alice.close().await;
    browser.stop().await;
    admin_server.abort();
    chat.stop().await;
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
