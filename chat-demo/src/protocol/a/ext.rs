//! Dialect A's extension requests, decoded from an object after the hello
//! (see [`decode`](super::decode) for the order in which fields count).

use serde_json::{Map, Value};

use super::{ClientFrame, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX};
use crate::protocol::manage::check_topic;
use crate::protocol::reactions::check_emoji;
use crate::protocol::{MAX_MESSAGE_CHARS, MAX_NAME_CHARS, ProtocolError, exceeds_chars, search};

/// `claim`, `topic`, `password` or `delete`, if the object has one of
/// them.
pub(super) fn decode_manage(
    object: &Map<String, Value>,
) -> Result<Option<ClientFrame>, ProtocolError> {
    let token_of = |request: &Map<String, Value>| match request.get("token") {
        Some(Value::String(token)) if !token.is_empty() && token.len() <= 128 => Ok(token.clone()),
        _ => Err(ProtocolError::InvalidManage),
    };
    match object.get("claim") {
        Some(Value::Null) | None => {}
        Some(Value::Bool(true)) => return Ok(Some(ClientFrame::Claim)),
        Some(_) => return Err(ProtocolError::InvalidManage),
    }
    match object.get("topic") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => {
            let token = token_of(request)?;
            let Some(Value::String(topic)) = request.get("topic") else {
                return Err(ProtocolError::InvalidManage);
            };
            check_topic(topic)?;
            return Ok(Some(ClientFrame::SetTopic {
                token,
                topic: topic.clone(),
            }));
        }
        Some(_) => return Err(ProtocolError::InvalidManage),
    }
    match object.get("password") {
        Some(Value::Null) | None => {}
        Some(Value::Object(request)) => {
            let token = token_of(request)?;
            let Some(Value::String(password)) = request.get("password") else {
                return Err(ProtocolError::InvalidManage);
            };
            if !password.is_empty() {
                crate::protocol::password::check(password)?;
            }
            return Ok(Some(ClientFrame::SetPassword {
                token,
                password: password.clone(),
            }));
        }
        Some(_) => return Err(ProtocolError::InvalidManage),
    }
    match object.get("delete") {
        Some(Value::Null) | None => Ok(None),
        Some(Value::Object(request)) => Ok(Some(ClientFrame::Delete {
            token: token_of(request)?,
        })),
        Some(_) => Err(ProtocolError::InvalidManage),
    }
}

pub(super) fn decode_dm(request: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    let (Some(Value::String(to)), Some(Value::String(message))) =
        (request.get("to"), request.get("message"))
    else {
        return Err(ProtocolError::InvalidDm);
    };
    if to.is_empty() || exceeds_chars(to, MAX_NAME_CHARS) || message.trim().is_empty() {
        return Err(ProtocolError::InvalidDm);
    }
    if exceeds_chars(message, MAX_MESSAGE_CHARS) {
        return Err(ProtocolError::MessageTooLong);
    }
    Ok(ClientFrame::Dm {
        to: to.clone(),
        message: message.clone(),
    })
}

pub(super) fn decode_search(request: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    let Some(Value::String(query)) = request.get("query") else {
        return Err(ProtocolError::InvalidSearch);
    };
    let terms = search::terms(query)?;
    let before = match request.get("before") {
        None | Some(Value::Null) => u64::MAX,
        Some(value) => value.as_u64().ok_or(ProtocolError::InvalidSearch)?,
    };
    let limit = match request.get("limit") {
        None | Some(Value::Null) => search::SEARCH_PAGE_DEFAULT,
        Some(value) => {
            let requested = value.as_u64().ok_or(ProtocolError::InvalidSearch)?;
            u32::try_from(requested.min(u64::from(search::SEARCH_PAGE_MAX)))
                .unwrap_or(search::SEARCH_PAGE_MAX)
        }
    };
    Ok(ClientFrame::Search {
        query: query.clone(),
        terms,
        before,
        limit,
    })
}

pub(super) fn decode_react(request: &Map<String, Value>) -> Result<ClientFrame, ProtocolError> {
    let id = request
        .get("id")
        .and_then(Value::as_u64)
        .ok_or(ProtocolError::InvalidReaction)?;
    let Some(Value::String(emoji)) = request.get("emoji") else {
        return Err(ProtocolError::InvalidReaction);
    };
    check_emoji(emoji)?;
    let on = match request.get("on") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(on)) => *on,
        Some(_) => return Err(ProtocolError::InvalidReaction),
    };
    Ok(ClientFrame::React {
        id,
        emoji: emoji.clone(),
        on,
    })
}

pub(super) fn decode_history_request(
    request: &Map<String, Value>,
) -> Result<ClientFrame, ProtocolError> {
    let before = request
        .get("before")
        .and_then(Value::as_u64)
        .ok_or(ProtocolError::InvalidHistoryRequest)?;
    let limit = match request.get("limit") {
        None | Some(Value::Null) => HISTORY_PAGE_DEFAULT,
        Some(value) => {
            let requested = value.as_u64().ok_or(ProtocolError::InvalidHistoryRequest)?;
            // Clamped in u64 first: any larger request just means "as many
            // as you will give me".
            u32::try_from(requested.min(u64::from(HISTORY_PAGE_MAX))).unwrap_or(HISTORY_PAGE_MAX)
        }
    };
    Ok(ClientFrame::HistoryRequest { before, limit })
}
