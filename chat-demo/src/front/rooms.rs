//! `GET /api/rooms`: the public room directory as JSON, one page at a
//! time, in name order.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::directory::{DIRECTORY_NAME, DirectoryCall, DirectoryReply, PAGE_DEFAULT, RoomStatus};

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
    #[derive(Serialize)]
    struct Page {
        rooms: Vec<RoomStatus>,
        next: Option<String>,
    }
    let call = DirectoryCall::List {
        after: query.after,
        limit: query.limit.unwrap_or(PAGE_DEFAULT),
    };
    match state.directory.get_by_name(DIRECTORY_NAME).call(call).await {
        Ok(DirectoryReply::Page { rooms, next }) => (
            [(header::CONTENT_TYPE, "application/json")],
            crate::protocol::to_json(&Page { rooms, next }),
        )
            .into_response(),
        Ok(DirectoryReply::Done) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The room directory is not available right now.",
        )
            .into_response(),
    }
}
