//! Extension `search` end to end: results newest first across dialects,
//! paging, errors, the rate budget, and the index surviving a restart.

mod common;

use common::{Server, Setup, T0};
use serde_json::{Value, json};

fn search(query: &str, before: Option<u64>, limit: u32) -> Value {
    json!({ "search": { "query": query, "before": before, "limit": limit } })
}

/// The ids and texts of a search answer, and its cursor.
fn results(frame: &Value) -> (Vec<(u64, String)>, Option<u64>) {
    let page = &frame["search"];
    let messages = page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a search page: {frame}"))
        .iter()
        .map(|m| {
            (
                m["timestamp"].as_u64().expect("id"),
                m["message"].as_str().expect("text").to_owned(),
            )
        })
        .collect();
    (messages, page["next"].as_u64())
}

#[tokio::test]
async fn search_finds_words_and_prefixes_newest_first_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named_ext("find", "alice", &["search"]).await;
    let mut bee = server.b("find").await;
    let mut cat = server.c("room=find&name=cat").await;
    assert_eq!(alice.json().await, json!({ "joined": "cat" }));
    // One at a time, each seen before the next: ids in this order.
    alice.say("Hello world").await;
    alice.json().await;
    alice.say("help me").await;
    alice.json().await;
    bee.send_text("HELLO from b").await;
    alice.json().await;
    cat.say("worldwide <b>hello</b>").await;
    alice.json().await;
    cat.say("nothing here").await;
    assert_eq!(alice.json().await["timestamp"], T0 + 4);
    server.clock.advance(60_000); // a fresh rate budget

    alice.send_json(search("hel", None, 10)).await;
    let (found, next) = results(&alice.json().await);
    assert_eq!(
        found,
        [
            (T0 + 3, "worldwide <b>hello</b>".to_owned()),
            (T0 + 2, "HELLO from b".to_owned()),
            (T0 + 1, "help me".to_owned()),
            (T0, "Hello world".to_owned()),
        ],
        "prefix, case-insensitive, every dialect, newest first"
    );
    assert_eq!(next, None);

    alice.send_json(search("WORLD hello", None, 1)).await;
    let (found, next) = results(&alice.json().await);
    assert_eq!(found, [(T0 + 3, "worldwide <b>hello</b>".to_owned())]);
    assert_eq!(next, Some(T0 + 3));
    alice.send_json(search("WORLD hello", next, 1)).await;
    let (found, next) = results(&alice.json().await);
    assert_eq!(found, [(T0, "Hello world".to_owned())]);
    alice.send_json(search("WORLD hello", next, 1)).await;
    assert_eq!(results(&alice.json().await), (vec![], None));

    alice.send_json(search("orld", None, 10)).await;
    assert_eq!(results(&alice.json().await), (vec![], None), "no infixes");

    // Errors, each answered in place.
    for bad in [
        json!({ "search": { "query": "" } }),
        json!({ "search": { "query": "a b c d e" } }),
        json!({ "search": { "query": "x".repeat(65) } }),
        json!({ "search": "hello" }),
    ] {
        alice.send_json(bad).await;
        let error = alice.json().await;
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(r#"Expected "search""#)),
            "{error}"
        );
    }
    server.stop().await;
    drop((alice, bee, cat));

    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut again, _) = server.a_named_ext("find", "again", &["search"]).await;
    again.send_json(search("from", None, 10)).await;
    assert_eq!(
        results(&again.json().await).0,
        [(T0 + 2, "HELLO from b".to_owned())],
        "the index is in storage"
    );
    let (mut plain, _) = server.a_named("find", "plain").await;
    plain.send_json(search("from", None, 10)).await;
    assert_eq!(
        plain.json().await,
        json!({ "error": "Expected an object with a \"message\" field." }),
        "not opted in: not understood"
    );
    server.stop().await;
}

#[tokio::test]
async fn searches_are_charged_to_the_rate_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let (mut alice, _) = server.a_named_ext("cost", "alice", &["search"]).await;
    for _ in 0..5 {
        alice.send_json(search("anything", None, 5)).await;
        assert_eq!(results(&alice.json().await), (vec![], None));
    }
    alice.send_json(search("anything", None, 5)).await;
    assert_eq!(
        alice.json().await,
        json!({ "error": "Your IP is being rate-limited, please try again later." })
    );
    alice.say("and no message either").await;
    assert!(alice.json().await.get("error").is_some());
    server.stop().await;
}

/// Writes a room for the storage measurement in `docs/chat-demo.md`: 100
/// messages of everyday text (3 to 14 words), every fifth with three
/// reactions and every tenth a reply, into the data dir named by
/// `CHAT_MEASURE_DIR`. Run with `--ignored`; then export the room and
/// count bytes as that section shows.
#[tokio::test]
#[ignore = "writes a measurement data dir; run by hand"]
async fn storage_cost_room() {
    let Ok(dir) = std::env::var("CHAT_MEASURE_DIR") else {
        panic!("set CHAT_MEASURE_DIR to an empty directory");
    };
    let server = Server::start(std::path::Path::new(&dir), Setup::default()).await;
    let ext = &["search", "reactions", "threads"];
    let (mut alice, _) = server.a_named_ext("measure", "alice", ext).await;
    let sentences = [
        "good morning everyone",
        "did anyone see the build failing on main this morning?",
        "yes, it is the flaky network test again, I will rerun it",
        "thanks!",
        "lunch at noon? the new place near the station is supposed to be good",
        "I can't make it today, maybe tomorrow",
        "the release notes draft is in the shared folder, please have a look before Friday",
        "looks good to me",
        "can we move the meeting to 3pm",
        "sure, done",
    ];
    let mut ids = Vec::new();
    for n in 0..100usize {
        server.clock.advance(5_000);
        let text = sentences[n % sentences.len()];
        if n % 10 == 9 {
            alice
                .send_json(json!({ "message": text, "replyTo": ids[n - 3] }))
                .await;
        } else {
            alice.say(text).await;
        }
        let frame = alice.json().await;
        let id = frame["timestamp"]
            .as_u64()
            .unwrap_or_else(|| panic!("{frame}"));
        ids.push(id);
        if n % 5 == 0 {
            for emoji in ["👍", "🎉", "❤️"] {
                server.clock.advance(5_000);
                alice
                    .send_json(json!({ "react": { "id": id, "emoji": emoji } }))
                    .await;
                assert!(alice.json().await.get("reactions").is_some());
            }
        }
    }
    server.stop().await;
}
