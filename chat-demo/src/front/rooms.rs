//! `GET /api/rooms`: the public room directory as JSON, one page at a
//! time, in name order.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Deserialize;

use super::AppState;
use crate::directory::{self, DIRECTORY_NAME, PAGE_DEFAULT, Page};

/// The query: `after` (the `next` of the previous page) and `limit`.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// `{"rooms":[{"name","online","lastActivity"}],"next":"<name>"|null}`.
pub(super) async fn list_rooms(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Response {
    let list = directory::List {
        after: query.after,
        limit: query.limit.unwrap_or(PAGE_DEFAULT),
    };
    match state
        .directory
        .get_by_name(DIRECTORY_NAME)
        .call(directory::Request::List(list))
        .await
    {
        Ok(Some(page)) => (
            [(header::CONTENT_TYPE, "application/json")],
            crate::protocol::to_json::<Page>(&page),
        )
            .into_response(),
        Ok(None) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The room directory is not available right now.",
        )
            .into_response(),
    }
}
