//! The minimal front door the WebSocket tests share: every request on
//! 127.0.0.1:0 goes to one object's `fetch`, with its extensions kept so the
//! upgrade works.

use std::net::SocketAddr;

use objects::{Namespace, Object};

/// Serves `ns`'s object named `name` on a fresh loopback port.
pub(crate) async fn serve<O: Object>(ns: Namespace<O>, name: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let ns = ns.clone();
        async move {
            let req = match objects::buffer_request(req, 1 << 20).await {
                Ok(req) => req,
                Err(e) => {
                    return http::Response::builder()
                        .status(413)
                        .body(axum::body::Body::from(e.to_string()))
                        .expect("response");
                }
            };
            match ns.get_by_name(name).fetch(req).await {
                Ok(resp) => resp.map(axum::body::Body::from),
                Err(e) => http::Response::builder()
                    .status(500)
                    .body(axum::body::Body::from(e.to_string()))
                    .expect("response"),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
