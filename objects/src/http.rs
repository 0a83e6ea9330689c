//! HTTP at the edge: the request and response types `fetch` takes, and the
//! one adapter that turns a request from a hyper or axum server into one.
//!
//! A request that may become a WebSocket must keep hyper's upgrade handle
//! (`hyper::upgrade::OnUpgrade`) in its extensions, because
//! [`Context::accept_websocket`](crate::Context::accept_websocket) takes the
//! connection from there. [`buffer_request`] keeps the extensions as they
//! are, so a server that calls it for every request never loses that handle.

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Limited};

/// An HTTP request handed to [`Object::fetch`](crate::Object::fetch). The
/// body is buffered; the request's extensions carry what a WebSocket upgrade
/// needs.
pub type Request = http::Request<Bytes>;
/// An HTTP response from [`Object::fetch`](crate::Object::fetch).
pub type Response = http::Response<Bytes>;

/// The request body could not be buffered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the limit given to [`buffer_request`].
    #[error("request body over the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Reading the body failed (the client went away, a malformed chunk).
    #[error("reading the request body failed: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Turns a server's request into a [`Request`] for
/// [`Stub::fetch`](crate::Stub::fetch): reads the body into memory, at most
/// `limit` bytes, and keeps the method, URI, headers and extensions (among
/// them hyper's upgrade handle, which a WebSocket upgrade needs).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let req = http::Request::post("/rooms/lobby")
///     .body(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")))
///     .unwrap();
/// let req = objects::buffer_request(req, 1024).await.unwrap();
/// assert_eq!(req.body().as_ref(), b"hi");
/// # }
/// ```
///
/// # Errors
///
/// [`BodyError::TooLarge`] past `limit` bytes, [`BodyError::Read`] when the
/// body cannot be read.
pub async fn buffer_request<B>(req: http::Request<B>, limit: usize) -> Result<Request, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if over_limit(e.as_ref()) {
                BodyError::TooLarge { limit }
            } else {
                BodyError::Read(e)
            }
        })?
        .to_bytes();
    Ok(http::Request::from_parts(parts, body))
}

/// Whether the error, or one of its causes, is a body over a length limit
/// (ours, or one a layer in front, such as tower-http's, already set).
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn req(body: &'static [u8]) -> http::Request<Full<Bytes>> {
        http::Request::get("/x")
            .header("x-test", "1")
            .body(Full::new(Bytes::from_static(body)))
            .expect("valid request")
    }

    #[tokio::test]
    async fn keeps_parts_and_extensions() {
        let mut r = req(b"hello");
        r.extensions_mut().insert(7u32);
        let out = buffer_request(r, 5).await.expect("within the limit");
        assert_eq!(out.body().as_ref(), b"hello");
        assert_eq!(out.headers()["x-test"], "1");
        assert_eq!(out.extensions().get::<u32>(), Some(&7));
    }

    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        let err = buffer_request(req(b"hello!"), 5)
            .await
            .expect_err("over the limit");
        assert!(matches!(err, BodyError::TooLarge { limit: 5 }), "{err}");
    }
}
