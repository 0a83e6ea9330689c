//! Tests of the dialect A codec.
use super::*;

fn hello(text: &str) -> Result<ClientFrame, ProtocolError> {
    decode(text, false)
}

fn hello_name(text: &str) -> String {
    match hello(text) {
        Ok(ClientFrame::Hello { name, .. }) => name,
        other => panic!("expected a hello from {text}, got {other:?}"),
    }
}

fn after(text: &str) -> Result<ClientFrame, ProtocolError> {
    decode(text, true)
}

fn chat(name: &str, message: &str, timestamp: u64) -> ChatMessage {
    ChatMessage {
        name: name.to_owned(),
        message: message.to_owned(),
        timestamp,
        plain: false,
        ..ChatMessage::default()
    }
}

#[test]
fn hello_with_a_name() {
    assert_eq!(
        hello(r#"{"name":"alice"}"#),
        Ok(ClientFrame::Hello {
            name: "alice".into(),
            ext: Extensions::default(),
            key: None,
            password: None,
        })
    );
}

#[test]
fn hello_name_is_not_trimmed() {
    assert_eq!(hello_name(r#"{"name":"  bob "}"#), "  bob ");
}

#[test]
fn missing_null_and_falsy_names_are_anonymous() {
    for text in [
        "{}",
        r#"{"name":null}"#,
        r#"{"name":""}"#,
        r#"{"name":false}"#,
        r#"{"name":0}"#,
        r#"{"name":-0}"#,
        r#"{"name":0.0}"#,
    ] {
        assert_eq!(hello_name(text), DEFAULT_NAME, "{text}");
    }
}

#[test]
fn numbers_and_booleans_become_their_javascript_text() {
    assert_eq!(hello_name(r#"{"name":true}"#), "true");
    assert_eq!(hello_name(r#"{"name":42}"#), "42");
    assert_eq!(hello_name(r#"{"name":-1.5}"#), "-1.5");
    assert_eq!(hello_name(r#"{"name":1e21}"#), "1e+21");
    assert_eq!(hello_name(r#"{"name":1.0}"#), "1");
}

#[test]
fn objects_and_arrays_are_not_names() {
    assert_eq!(hello(r#"{"name":{}}"#), Err(ProtocolError::InvalidName));
    assert_eq!(hello(r#"{"name":["a"]}"#), Err(ProtocolError::InvalidName));
    assert_eq!(hello(r#"{"name":[]}"#), Err(ProtocolError::InvalidName));
}

#[test]
fn name_of_exactly_32_characters_is_accepted() {
    let name = "n".repeat(32);
    assert_eq!(hello_name(&format!(r#"{{"name":"{name}"}}"#)), name);
}

#[test]
fn name_of_33_characters_is_refused_and_closes() {
    let text = format!(r#"{{"name":"{}"}}"#, "n".repeat(33));
    let error = hello(&text).expect_err("too long");
    assert_eq!(error, ProtocolError::NameTooLong);
    assert_eq!(error.client_text(), "Name too long.");
    assert_eq!(error.closes_socket(), Some(1009));
}

#[test]
fn name_length_counts_characters() {
    // 32 emoji: 128 bytes, 64 UTF-16 units, 32 characters.
    let emoji = "😀".repeat(32);
    assert_eq!(hello_name(&format!(r#"{{"name":"{emoji}"}}"#)), emoji);
    let text = format!(r#"{{"name":"{}"}}"#, "é".repeat(33));
    assert_eq!(hello(&text), Err(ProtocolError::NameTooLong));
    // Escapes count as the character they stand for.
    let escaped = r"\u00e9".repeat(32);
    assert_eq!(
        hello_name(&format!(r#"{{"name":"{escaped}"}}"#)),
        "é".repeat(32)
    );
}

#[test]
fn numeric_name_can_be_too_long() {
    // 1e-7 prints as "1e-7"; a long fraction prints all its digits.
    assert_eq!(hello_name(r#"{"name":1e-7}"#), "1e-7");
    assert_eq!(
        hello_name(r#"{"name":0.1234567890123456}"#),
        "0.1234567890123456"
    );
}

#[test]
fn hello_extensions() {
    let frame = hello(r#"{"name":"x","ext":["presence","history"]}"#);
    assert_eq!(
        frame,
        Ok(ClientFrame::Hello {
            name: "x".into(),
            ext: Extensions {
                presence: true,
                history: true,
                ..Extensions::default()
            },
            key: None,
            password: None,
        })
    );
    let frame = hello(r#"{"name":"x","ext":["presence","telepathy",7,null]}"#);
    assert_eq!(
        frame,
        Ok(ClientFrame::Hello {
            name: "x".into(),
            ext: Extensions {
                presence: true,
                history: false,
                ..Extensions::default()
            },
            key: None,
            password: None,
        })
    );
    let frame = hello(r#"{"name":"x","ext":null}"#);
    assert!(matches!(frame, Ok(ClientFrame::Hello { ext, .. }) if ext == Extensions::default()));
    assert_eq!(
        hello(r#"{"name":"x","ext":"presence"}"#),
        Err(ProtocolError::InvalidExtensions)
    );
}

#[test]
fn hello_ignores_other_fields() {
    assert_eq!(hello_name(r#"{"name":"x","message":"hi"}"#), "x");
}

#[test]
fn messages() {
    assert_eq!(
        after(r#"{"message":"hi"}"#),
        Ok(ClientFrame::Message("hi".into()))
    );
    assert_eq!(
        after(r#"{"message":""}"#),
        Ok(ClientFrame::Message(String::new()))
    );
    assert_eq!(
        after(r#"{"message":" x "}"#),
        Ok(ClientFrame::Message(" x ".into()))
    );
    assert_eq!(
        after(r#"{"message":12}"#),
        Ok(ClientFrame::Message("12".into()))
    );
    assert_eq!(
        after(r#"{"message":false}"#),
        Ok(ClientFrame::Message("false".into()))
    );
    assert_eq!(
        after(r#"{"message":0}"#),
        Ok(ClientFrame::Message("0".into()))
    );
}

#[test]
fn message_boundaries() {
    let exactly = "m".repeat(256);
    assert_eq!(
        after(&format!(r#"{{"message":"{exactly}"}}"#)),
        Ok(ClientFrame::Message(exactly))
    );
    let error = after(&format!(r#"{{"message":"{}"}}"#, "m".repeat(257))).expect_err("too long");
    assert_eq!(error, ProtocolError::MessageTooLong);
    assert_eq!(error.client_text(), "Message too long.");
    assert_eq!(error.closes_socket(), None);
    // Multi-byte: 256 three-byte characters pass, 257 do not.
    let cjk = "漢".repeat(256);
    assert_eq!(
        after(&format!(r#"{{"message":"{cjk}"}}"#)),
        Ok(ClientFrame::Message(cjk))
    );
    let cjk = "漢".repeat(257);
    assert_eq!(
        after(&format!(r#"{{"message":"{cjk}"}}"#)),
        Err(ProtocolError::MessageTooLong)
    );
}

#[test]
fn missing_null_and_structured_messages() {
    assert_eq!(after("{}"), Err(ProtocolError::MissingMessage));
    assert_eq!(
        after(r#"{"message":null}"#),
        Err(ProtocolError::MissingMessage)
    );
    assert_eq!(
        after(r#"{"name":"again"}"#),
        Err(ProtocolError::MissingMessage)
    );
    assert_eq!(
        after(r#"{"message":{}}"#),
        Err(ProtocolError::InvalidMessage)
    );
    assert_eq!(
        after(r#"{"message":["a"]}"#),
        Err(ProtocolError::InvalidMessage)
    );
}

#[test]
fn history_requests() {
    assert_eq!(
        after(r#"{"history":{"before":1700000000000,"limit":20}}"#),
        Ok(ClientFrame::HistoryRequest {
            before: 1_700_000_000_000,
            limit: 20
        })
    );
    assert_eq!(
        after(r#"{"history":{"before":5}}"#),
        Ok(ClientFrame::HistoryRequest {
            before: 5,
            limit: HISTORY_PAGE_DEFAULT
        })
    );
    assert_eq!(
        after(r#"{"history":{"before":5,"limit":null}}"#),
        Ok(ClientFrame::HistoryRequest {
            before: 5,
            limit: 50
        })
    );
    assert_eq!(
        after(r#"{"history":{"before":5,"limit":0}}"#),
        Ok(ClientFrame::HistoryRequest {
            before: 5,
            limit: 0
        })
    );
    for limit in ["101", "4294967296", "18446744073709551615"] {
        let text = format!(r#"{{"history":{{"before":5,"limit":{limit}}}}}"#);
        assert_eq!(
            after(&text),
            Ok(ClientFrame::HistoryRequest {
                before: 5,
                limit: HISTORY_PAGE_MAX
            }),
            "{limit}"
        );
    }
}

#[test]
fn malformed_history_requests() {
    for text in [
        r#"{"history":true}"#,
        r#"{"history":[]}"#,
        r#"{"history":{}}"#,
        r#"{"history":{"before":null}}"#,
        r#"{"history":{"before":-1}}"#,
        r#"{"history":{"before":1.5}}"#,
        r#"{"history":{"before":"5"}}"#,
        r#"{"history":{"before":5,"limit":-1}}"#,
        r#"{"history":{"before":5,"limit":2.5}}"#,
        r#"{"history":{"before":5,"limit":"10"}}"#,
    ] {
        assert_eq!(
            after(text),
            Err(ProtocolError::InvalidHistoryRequest),
            "{text}"
        );
    }
    assert_eq!(
        after(r#"{"history":null}"#),
        Err(ProtocolError::MissingMessage)
    );
}

#[test]
fn message_wins_over_history() {
    assert_eq!(
        after(r#"{"message":"hi","history":{"before":5}}"#),
        Ok(ClientFrame::Message("hi".into()))
    );
    assert_eq!(
        after(r#"{"message":null,"history":{"before":5}}"#),
        Ok(ClientFrame::HistoryRequest {
            before: 5,
            limit: 50
        })
    );
}

#[test]
fn invalid_json_and_non_objects() {
    for named in [false, true] {
        for text in ["", "{", "hello", r#"{"name":"x"} trailing"#, "\u{0}"] {
            assert!(
                matches!(decode(text, named), Err(ProtocolError::InvalidJson { .. })),
                "{text:?}"
            );
        }
        for text in ["null", "1", r#""x""#, "[]", r#"[{"name":"x"}]"#, "true"] {
            assert_eq!(
                decode(text, named),
                Err(ProtocolError::NotAnObject),
                "{text}"
            );
        }
    }
    assert_eq!(
        ProtocolError::InvalidJson {
            detail: String::new()
        }
        .client_text(),
        "Invalid JSON."
    );
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{\"a\":"] {
        let deep = open.repeat(100_000);
        for named in [false, true] {
            assert!(matches!(
                decode(&deep, named),
                Err(ProtocolError::InvalidJson { .. })
            ));
        }
        // Also when nested inside an otherwise valid frame.
        let inside = format!(r#"{{"message":"hi","junk":{deep}"#);
        assert!(matches!(
            decode(&inside, true),
            Err(ProtocolError::InvalidJson { .. })
        ));
    }
    // Nesting within the limit is fine (and ignored).
    let shallow = format!(
        r#"{{"message":"hi","junk":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(after(&shallow), Ok(ClientFrame::Message("hi".into())));
}

#[test]
fn encoders_produce_the_spec_shapes() {
    assert_eq!(encode_joined("alice"), r#"{"joined":"alice"}"#);
    assert_eq!(encode_quit("alice"), r#"{"quit":"alice"}"#);
    assert_eq!(encode_ready(), r#"{"ready":true}"#);
    assert_eq!(
        encode_error("Name too long."),
        r#"{"error":"Name too long."}"#
    );
    assert_eq!(
        encode_chat(&chat("alice", "hi", 1_700_000_000_000)),
        r#"{"name":"alice","message":"hi","timestamp":1700000000000}"#
    );
}

#[test]
fn chat_frames_never_carry_plain() {
    let mut message = chat("anonymous", "from b", 7);
    message.plain = true;
    assert_eq!(
        encode_chat(&message),
        r#"{"name":"anonymous","message":"from b","timestamp":7}"#
    );
    assert_eq!(
        encode_history_page(&[message], false, Extensions::default()),
        r#"{"history":{"messages":[{"name":"anonymous","message":"from b","timestamp":7}],"more":false}}"#
    );
}

#[test]
fn extension_frames() {
    assert_eq!(
        encode_presence(3, &["alice", "bob"]),
        r#"{"presence":{"count":3,"users":["alice","bob"]}}"#
    );
    assert_eq!(
        encode_presence(0, &[]),
        r#"{"presence":{"count":0,"users":[]}}"#
    );
    assert_eq!(
        encode_history_page(
            &[chat("a", "1", 1), chat("b", "2", 2)],
            true,
            Extensions::default()
        ),
        r#"{"history":{"messages":[{"name":"a","message":"1","timestamp":1},{"name":"b","message":"2","timestamp":2}],"more":true}}"#
    );
    assert_eq!(
        encode_history_page(&[], false, Extensions::default()),
        r#"{"history":{"messages":[],"more":false}}"#
    );
}

#[test]
fn extension_frames_are_invisible_to_compat_clients() {
    let frames = [
        encode_presence(2, &["timestamp", "error"]),
        encode_history_page(&[chat("joined", "ready", 9)], true, Extensions::default()),
    ];
    for frame in frames {
        let value: Value = serde_json::from_str(&frame).expect("valid JSON");
        let object = value.as_object().expect("an object");
        for field in ["timestamp", "error", "joined", "quit", "ready"] {
            assert!(!object.contains_key(field), "{field} in {frame}");
        }
    }
}

#[test]
fn hostile_text_round_trips() {
    let name = r#"a"b\c<script>x</script>😀"#;
    let message = "line\nbreak\ttab \u{0} nul \u{2028} \"quoted\" \\ 🦀";
    assert!(!exceeds_chars(name, MAX_NAME_CHARS));

    // Client to server.
    let hello = serde_json::json!({ "name": name }).to_string();
    assert_eq!(hello_name(&hello), name);
    let frame = serde_json::json!({ "message": message }).to_string();
    assert_eq!(after(&frame), Ok(ClientFrame::Message(message.into())));

    // Server to client.
    let sent = chat(name, message, 1);
    let value: Value = serde_json::from_str(&encode_chat(&sent)).expect("valid JSON");
    assert_eq!(value["name"], name);
    assert_eq!(value["message"], message);
    for frame in [encode_joined(name), encode_quit(name), encode_error(name)] {
        let value: Value = serde_json::from_str(&frame).expect("valid JSON");
        let (_, text) = value
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("one field");
        assert_eq!(text, name);
    }
    let value: Value = serde_json::from_str(&encode_presence(1, &[name])).expect("valid JSON");
    assert_eq!(value["presence"]["users"][0], name);
    let value: Value =
        serde_json::from_str(&encode_history_page(&[sent], false, Extensions::default()))
            .expect("valid JSON");
    assert_eq!(value["history"]["messages"][0]["name"], name);
    assert_eq!(value["history"]["messages"][0]["message"], message);
}

#[test]
fn javascript_number_text() {
    let cases: [(f64, &str); 16] = [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-7.0, "-7"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (123_456_789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (0.000_001, "0.000001"),
        (1e-7, "1e-7"),
        (-2.5e-8, "-2.5e-8"),
        (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
    ];
    for (number, text) in cases {
        assert_eq!(js_number(number), text, "{number:e}");
    }
    // Integers beyond 2^53 lose precision exactly as in JavaScript.
    assert_eq!(
        hello_name(r#"{"name":12345678901234567890}"#),
        "12345678901234567000"
    );
}
