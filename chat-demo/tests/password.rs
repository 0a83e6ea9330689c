//! Password-protected rooms: who gets in, in each dialect; failed attempts
//! cost the IP's rate budget; the password survives a restart.

mod common;

use common::{Client, Server, Setup, T0, chat_of, next_ip};
use serde_json::{Value, json};

const SECRET: &str = "open sesame";

fn error(text: &str) -> Value {
    json!({ "error": text })
}

/// The status and body of a refused upgrade.
async fn refused(server: &Server, path: &str) -> (u16, String) {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.url(path),
    )
    .expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", next_ip().parse().expect("ip"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Claims `vault` and sets its password; returns the owner's client.
async fn protected(server: &Server) -> Client {
    let (mut owner, _) = server.a_named_ext("vault", "owner", &["manage"]).await;
    assert_eq!(owner.json().await["room"]["password"], false);
    owner.say("inside").await;
    owner.json().await;
    owner.send_json(json!({ "claim": true })).await;
    let token = owner.json().await["owner"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    owner.json().await;
    owner
        .send_json(json!({ "password": { "token": token, "password": SECRET } }))
        .await;
    assert_eq!(
        owner.json().await,
        json!({ "room": { "owned": true, "topic": "", "password": true } })
    );
    owner
}

#[tokio::test]
async fn every_dialect_needs_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut owner = protected(&server).await;

    // A: the hello needs it; a refused hello leaves the socket unnamed,
    // free to try again.
    let mut a = server.a("vault").await;
    a.send_json(json!({ "name": "ann" })).await;
    assert_eq!(a.json().await, error("This room needs a password."));
    a.send_json(json!({ "name": "ann", "password": "sesame" }))
        .await;
    assert_eq!(a.json().await, error("Wrong password."));
    a.send_json(json!({ "name": "ann", "password": SECRET }))
        .await;
    assert_eq!(
        a.json_until_ready().await,
        vec![
            json!({ "joined": "owner" }),
            json!({ "name": "owner", "message": "inside", "timestamp": T0 }),
            json!({ "joined": "ann" }),
        ]
    );
    assert_eq!(
        owner.json().await,
        json!({ "joined": "ann" }),
        "only the one that got in"
    );

    // C: the query needs it; B cannot join at all. Both are refused
    // before the upgrade, with the reason as the body.
    for (query, status, reason) in [
        (
            "/ws?room=vault&name=cid",
            403,
            "This room needs a password.",
        ),
        (
            "/ws?room=vault&name=cid&password=nope",
            403,
            "Wrong password.",
        ),
        (
            "/room/vault/websocket",
            403,
            "This room needs a password; plain relay clients cannot join it.",
        ),
    ] {
        assert_eq!(
            refused(&server, query).await,
            (status, reason.to_owned()),
            "{query}"
        );
    }
    let mut c = server.c("room=vault&name=cid&password=open%20sesame").await;
    assert_eq!(c.json().await["message"], "inside", "the history");
    assert_eq!(owner.json().await, json!({ "joined": "cid" }));
    assert_eq!(a.json().await, json!({ "joined": "cid" }));

    // Nobody saw the refused ones come or go: the next frame is chat.
    a.say("we are in").await;
    assert_eq!(chat_of(&owner.json().await).1, "we are in");
    assert_eq!(c.json().await["message"], "we are in");
    server.stop().await;
    drop((owner, a, c));

    // After a restart the room still needs it.
    let server = Server::start(dir.path(), Setup::default()).await;
    let mut a = server.a("vault").await;
    a.send_json(json!({ "name": "ann" })).await;
    assert_eq!(a.json().await, error("This room needs a password."));
    a.send_json(json!({ "name": "ann", "password": SECRET }))
        .await;
    assert_eq!(
        a.json_until_ready().await.len(),
        2 + 1,
        "two messages of backlog and its own join"
    );
    server.stop().await;
}

#[tokio::test]
async fn attempts_cost_the_rate_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Setup::default()).await;
    let _owner = protected(&server).await;
    let ip = next_ip();
    let mut guesser = Client::connect(&server.url("/api/room/vault/websocket"), &ip).await;
    for n in 0..5 {
        guesser
            .send_json(json!({ "name": "g", "password": format!("guess {n}") }))
            .await;
        assert_eq!(guesser.json().await, error("Wrong password."));
    }
    // Spent: even the right password is not checked now.
    guesser
        .send_json(json!({ "name": "g", "password": SECRET }))
        .await;
    assert_eq!(
        guesser.json().await,
        error("Your IP is being rate-limited, please try again later.")
    );
    server.clock.advance(5_000);
    guesser
        .send_json(json!({ "name": "g", "password": SECRET }))
        .await;
    assert_eq!(
        guesser.json_until_ready().await.last(),
        Some(&json!({ "joined": "g" }))
    );
    server.stop().await;
}
