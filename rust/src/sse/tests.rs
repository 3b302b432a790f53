//! Spec-rule tests, realistic OpenAI fixtures, and split-anywhere property tests.

use super::*;

fn parse_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, bool) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.feed(chunk));
    }
    (events, parser.finish())
}

fn ev(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.to_string(),
        id: None,
        retry: None,
    }
}

fn datas(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

// --- a tiny deterministic splitter -----------------------------------------------------------

// Deterministic, so a failing split is reproducible from its seed.
use crate::rng::Rng;

/// Every way of cutting `bytes` once, then `rounds` random cuttings into up to 24 pieces
/// (empty pieces included: a zero-length read must change nothing).
fn splittings(bytes: &[u8], rounds: usize) -> Vec<Vec<&[u8]>> {
    let mut out: Vec<Vec<&[u8]>> = (0..=bytes.len())
        .map(|i| vec![&bytes[..i], &bytes[i..]])
        .collect();
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ bytes.len() as u64);
    for _ in 0..rounds {
        let mut cuts: Vec<usize> = (0..1 + rng.below(24))
            .map(|_| rng.below(bytes.len() + 1))
            .collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        out.push(cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect());
    }
    out
}

// --- realistic OpenAI chat.completion.chunk streams ------------------------------------------

struct StreamShape {
    eol: &'static str,
    include_usage: bool,
    keep_alive: bool,
    tool_call: bool,
    pieces: &'static [&'static str],
}

const PLAIN: StreamShape = StreamShape {
    eol: "\n",
    include_usage: false,
    keep_alive: false,
    tool_call: false,
    pieces: &["Hello", ", ", "world", "!"],
};

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn openai_stream(shape: &StreamShape) -> Vec<u8> {
    let eol = shape.eol;
    let head = r#""id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1""#;
    let usage_null = if shape.include_usage {
        r#","usage":null"#
    } else {
        ""
    };
    let mut out = String::new();
    let event = |out: &mut String, json: String| {
        if shape.keep_alive {
            out.push_str(&format!(": keep-alive{eol}{eol}"));
        }
        out.push_str(&format!("data: {json}{eol}{eol}"));
    };
    event(
        &mut out,
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
        ),
    );
    for piece in shape.pieces {
        event(
            &mut out,
            format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#,
                json_str(piece)
            ),
        );
    }
    if shape.tool_call {
        event(
            &mut out,
            format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_9x","type":"function","function":{{"name":"get_weather","arguments":""}}}}]}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
            ),
        );
        for args in [r#"{\"city\":"#, r#" \"Paris\"}"#] {
            event(
                &mut out,
                format!(
                    r#"{{{head},"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{args}"}}}}]}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
                ),
            );
        }
    }
    let reason = if shape.tool_call {
        "tool_calls"
    } else {
        "stop"
    };
    event(
        &mut out,
        format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{reason}"}}]{usage_null}}}"#
        ),
    );
    if shape.include_usage {
        event(
            &mut out,
            format!(
                r#"{{{head},"choices":[],"usage":{{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{{"cached_tokens":3,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
            ),
        );
    }
    event(&mut out, "[DONE]".to_string());
    out.into_bytes()
}

/// Multi-line data, event/id/retry fields and comments, CRLF: the non-OpenAI corners.
fn mixed_stream() -> Vec<u8> {
    "\u{FEFF}: welcome\r\nretry: 2500\r\n\r\nevent: delta\r\nid: 7\r\ndata: line one\r\ndata: 二行目 🚀\r\n\r\n\
     : keep-alive\r\n\r\ndata\r\n\r\nevent: ping\r\n\r\nid: 8\rdata:{\"x\":1}\r\r"
        .as_bytes()
        .to_vec()
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plain", openai_stream(&PLAIN)),
        (
            "usage+keepalive",
            openai_stream(&StreamShape {
                include_usage: true,
                keep_alive: true,
                ..PLAIN
            }),
        ),
        (
            "tool-call+usage",
            openai_stream(&StreamShape {
                include_usage: true,
                tool_call: true,
                ..PLAIN
            }),
        ),
        (
            "cjk-emoji-crlf",
            openai_stream(&StreamShape {
                eol: "\r\n",
                include_usage: true,
                pieces: &["你好", "，世界", " 🎉👩‍💻", " «ok»\n\"q\""],
                ..PLAIN
            }),
        ),
        (
            "cr-only",
            openai_stream(&StreamShape {
                eol: "\r",
                pieces: &["é", "€", "𝄞"],
                ..PLAIN
            }),
        ),
        ("mixed", mixed_stream()),
    ]
}

// --- spec rules ----------------------------------------------------------------------------

#[test]
fn each_line_ending_dispatches() {
    for eol in ["\n", "\r\n", "\r"] {
        let stream = format!("data: a{eol}{eol}data: b{eol}{eol}");
        let (events, discarded) = parse_all(&[stream.as_bytes()]);
        assert_eq!(events, vec![ev("a"), ev("b")], "eol {eol:?}");
        assert!(!discarded);
    }
}

#[test]
fn crlf_split_across_chunks_is_one_line_ending() {
    // Were the LF a second line ending, it would be a blank line dispatching "a" alone.
    let (events, _) = parse_all(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, vec![ev("a\nb")]);
}

#[test]
fn cr_then_non_lf_chunk_is_still_a_line_end() {
    let (events, _) = parse_all(&[b"data: a\r", b"\r"]);
    assert_eq!(events, vec![ev("a")]);
}

#[test]
fn data_lines_join_with_lf() {
    let (events, _) = parse_all(&[b"data: one\ndata: two\ndata:\ndata: four\n\n"]);
    assert_eq!(datas(&events), vec!["one\ntwo\n\nfour"]);
}

#[test]
fn event_field_names_the_event_and_resets_after_dispatch() {
    let (events, _) = parse_all(&[b"event: delta\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"]);
    assert_eq!(events[0].event.as_deref(), Some("delta"));
    assert_eq!(events[1].event, None);
    assert_eq!(
        events[2].event, None,
        "empty event type is the default type"
    );
}

#[test]
fn id_is_sticky_and_ignored_when_it_holds_nul() {
    let (events, _) =
        parse_all(&[b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\n"]);
    let ids: Vec<_> = events.iter().map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, vec![Some("1"), Some("1"), Some("1"), Some("")]);
    let mut parser = SseParser::new();
    assert_eq!(parser.last_event_id(), None);
    parser.feed(b"id: 42\n\n");
    assert_eq!(
        parser.last_event_id().as_deref(),
        Some("42"),
        "id is kept even with no data"
    );
}

#[test]
fn retry_takes_digits_only() {
    let mut parser = SseParser::new();
    let events = parser.feed(b"retry: 3000\ndata: a\n\nretry: 12x\ndata: b\n\nretry:\ndata: c\n\nretry: 99999999999999999999999\n\n");
    let retries: Vec<_> = events.iter().map(|e| e.retry).collect();
    assert_eq!(retries, vec![Some(3000), None, None]);
    assert_eq!(
        parser.retry(),
        Some(3000),
        "invalid values leave the reconnection time alone"
    );
    parser.feed(b"retry: 10\n\n");
    assert_eq!(
        parser.retry(),
        Some(10),
        "retry in an event with no data still counts"
    );
}

#[test]
fn comments_are_ignored_but_counted() {
    let mut parser = SseParser::new();
    let events = parser.feed(b": keep-alive\ndata: a\n:mid-event\ndata: b\n\n:\n\n");
    assert_eq!(datas(&events), vec!["a\nb"]);
    assert_eq!(parser.comments(), 3);
}

#[test]
fn only_one_leading_space_is_removed() {
    let (events, _) = parse_all(&[b"data:x\n\ndata: x\n\ndata:  x\n\ndata: a:b: c\n\n"]);
    assert_eq!(datas(&events), vec!["x", "x", " x", "a:b: c"]);
}

#[test]
fn line_without_colon_is_a_field_with_empty_value() {
    let (events, _) = parse_all(&[b"data\n\ndata\ndata\n\nevent\ndata: z\n\n"]);
    assert_eq!(datas(&events), vec!["", "\n", "z"]);
    assert_eq!(events[2].event, None);
}

#[test]
fn unknown_fields_and_misspelt_names_are_ignored() {
    let (events, _) = parse_all(&[b"foo: bar\ndata : x\nDATA: y\ndata: z\n\n"]);
    assert_eq!(events, vec![ev("z")]);
}

#[test]
fn event_without_data_is_not_dispatched_but_resets_buffers() {
    let (events, _) =
        parse_all(&[b"event: ping\n\ndata: x\n\nevent: a\nretry: 5\n\n\n\ndata: y\n\n"]);
    assert_eq!(events, vec![ev("x"), ev("y")]);
}

#[test]
fn leading_bom_is_skipped_even_split_but_only_once() {
    for split in 0..=4 {
        let stream = b"\xEF\xBB\xBFdata: a\n\n";
        let (events, _) = parse_all(&[&stream[..split], &stream[split..]]);
        assert_eq!(events, vec![ev("a")], "split at {split}");
    }
    // A second BOM makes the field name "\u{FEFF}data", which is unknown.
    let (events, _) = parse_all(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"]);
    assert_eq!(events, vec![ev("b")]);
    // A BOM-like prefix that is not a BOM stays part of the first line.
    let (events, _) = parse_all(&[b"\xEF\xBB", b"data: a\n\ndata: b\n\n"]);
    assert_eq!(events, vec![ev("b")]);
}

#[test]
fn multibyte_character_split_across_chunks_is_decoded_whole() {
    let stream = "data: é€𝄞\n\n".as_bytes();
    for split in 0..=stream.len() {
        let (events, _) = parse_all(&[&stream[..split], &stream[split..]]);
        assert_eq!(events, vec![ev("é€𝄞")], "split at {split}");
    }
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let (events, _) = parse_all(&[b"event: \xFFx\nid: \xC3\ndata: a\xE2\x82b\xF0\x9F\x98\n\n"]);
    assert_eq!(events[0].data, "a\u{FFFD}b\u{FFFD}");
    assert_eq!(events[0].event.as_deref(), Some("\u{FFFD}x"));
    assert_eq!(events[0].id.as_deref(), Some("\u{FFFD}"));
}

#[test]
fn finish_reports_a_discarded_unterminated_event() {
    assert!(!parse_all(&[b"data: a\n\n"]).1);
    assert!(
        parse_all(&[b"data: a\n\ndata: b\n"]).1,
        "field line without the blank line"
    );
    assert!(parse_all(&[b"data: a\n\ndata: b"]).1, "partial field line");
    assert!(
        parse_all(&[b"data: a\n\nevent: x\n"]).1,
        "event in progress even without data"
    );
    assert!(
        !parse_all(&[b"data: a\n\n: bye"]).1,
        "a trailing comment is not an event"
    );
    assert!(!parse_all(&[b""]).1);
    let (events, discarded) = parse_all(&[b"data: a\n\ndata: b\n"]);
    assert_eq!(
        events,
        vec![ev("a")],
        "the unterminated event is never dispatched"
    );
    assert!(discarded);
}

#[test]
fn finish_resets_for_a_new_stream() {
    let mut parser = SseParser::new();
    parser.feed(b"id: 1\ndata: partial");
    assert!(parser.finish());
    assert_eq!(
        parser.feed(b"\xEF\xBB\xBFdata: fresh\n\n"),
        vec![ev("fresh")]
    );
    assert!(!parser.finish());
}

#[test]
fn borrowed_events_match_owned_ones() {
    let stream = openai_stream(&PLAIN);
    let mut parser = SseParser::new();
    let mut borrowed = Vec::new();
    parser.feed_with(&stream, |e| {
        borrowed.push((e.data().into_owned(), e.data_bytes().len()))
    });
    let owned = SseParser::new().feed(&stream);
    assert_eq!(borrowed.len(), owned.len());
    for ((data, len), event) in borrowed.iter().zip(&owned) {
        assert_eq!(data, &event.data);
        assert_eq!(*len, event.data.len());
    }
}

// --- fixtures and the split-anywhere property -----------------------------------------------

#[test]
fn openai_fixture_parses_to_expected_events() {
    let (events, discarded) = parse_all(&[&openai_stream(&StreamShape {
        include_usage: true,
        ..PLAIN
    })]);
    assert!(!discarded);
    assert_eq!(events.len(), 8); // role, 4 pieces, finish, usage, [DONE]
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(events[1].data.contains(r#""content":"Hello""#));
    assert!(events[6].data.contains(r#""total_tokens":29"#));
}

#[test]
fn mixed_fixture_parses_to_expected_events() {
    let mut parser = SseParser::new();
    let events = parser.feed(&mixed_stream());
    let expected = vec![
        SseEvent {
            event: Some("delta".into()),
            data: "line one\n二行目 🚀".into(),
            id: Some("7".into()),
            retry: None,
        },
        SseEvent {
            event: None,
            data: "".into(),
            id: Some("7".into()),
            retry: None,
        },
        SseEvent {
            event: None,
            data: r#"{"x":1}"#.into(),
            id: Some("8".into()),
            retry: None,
        },
    ];
    assert_eq!(events, expected);
    assert_eq!(parser.comments(), 2);
    assert_eq!(parser.retry(), Some(2500));
    assert!(!parser.finish());
}

#[test]
fn every_split_of_every_fixture_yields_the_same_events() {
    for (name, stream) in fixtures() {
        let (whole, whole_discarded) = parse_all(&[&stream]);
        assert!(!whole.is_empty());
        for pieces in splittings(&stream, 300) {
            let (split, discarded) = parse_all(&pieces);
            assert_eq!(
                split,
                whole,
                "{name}: pieces {:?}",
                pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
            );
            assert_eq!(discarded, whole_discarded, "{name}");
        }
    }
}

#[test]
fn byte_at_a_time_matches_whole() {
    for (name, stream) in fixtures() {
        let pieces: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&pieces).0, parse_all(&[&stream]).0, "{name}");
    }
}

// --- StreamTap ----------------------------------------------------------------------------

struct Tapped {
    forwarded: Vec<Vec<u8>>,
    tap: StreamTap,
}

fn tap_all(pieces: &[&[u8]], collect_text: bool) -> Tapped {
    let mut tap = StreamTap::new(collect_text);
    let forwarded = pieces.iter().map(|p| tap.feed(p)).collect();
    Tapped { forwarded, tap }
}

#[test]
fn tap_reads_usage_finish_reason_model_and_done() {
    let stream = openai_stream(&StreamShape {
        include_usage: true,
        ..PLAIN
    });
    let t = tap_all(&[&stream], false).tap;
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt_tokens: 19,
            completion_tokens: 10,
            total_tokens: 29,
            cached_tokens: Some(3)
        })
    );
    assert_eq!(t.finish_reason(), Some("stop"));
    assert_eq!(t.model(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(t.events(), 8);
    assert!(t.done());
    assert_eq!(t.text(), "", "text is only collected when asked");
    assert_eq!(t.error(), None);
}

#[test]
fn tap_collects_text_of_choice_zero_with_escapes_and_cjk() {
    let shape = StreamShape {
        eol: "\r\n",
        pieces: &["你好", "，世界", " 🎉", " «ok»\n\"q\""],
        ..PLAIN
    };
    let t = tap_all(&[&openai_stream(&shape)], true).tap;
    assert_eq!(t.text(), "你好，世界 🎉 «ok»\n\"q\"");
    let tool = tap_all(
        &[&openai_stream(&StreamShape {
            tool_call: true,
            ..PLAIN
        })],
        true,
    )
    .tap;
    assert_eq!(
        tool.text(),
        "Hello, world!",
        "tool-call argument deltas are not text"
    );
    assert_eq!(tool.finish_reason(), Some("tool_calls"));
    assert_eq!(tool.usage(), None, "no usage chunk without include_usage");
}

#[test]
fn tap_text_ignores_other_choice_indexes() {
    let stream = b"data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"B\"}}]}\n\n\
                   data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}\n\n\
                   data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"},{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":null}]}\n\n";
    let t = tap_all(&[stream], true).tap;
    assert_eq!(t.text(), "A!");
    assert_eq!(t.finish_reason(), Some("length"));
}

#[test]
fn tap_reads_keys_written_with_whitespace() {
    let stream = b"data: {\"model\" : \"m1\", \"usage\" :\t {\"prompt_tokens\": 1, \"completion_tokens\": 2, \"total_tokens\": 3, \"prompt_tokens_details\": null}, \"choices\": [{\"index\": 0, \"finish_reason\" : \"stop\"}]}\n\n";
    let t = tap_all(&[stream], false).tap;
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            cached_tokens: None
        })
    );
    assert_eq!(t.finish_reason(), Some("stop"));
    assert_eq!(t.model(), Some("m1"));
}

#[test]
fn tap_keeps_the_first_model_and_last_usage() {
    let stream = b"data: {\"model\":\"first\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n\
                   data: {\"model\":\"second\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\n\n\
                   data: {\"model\":\"third\",\"usage\":null}\n\n";
    let t = tap_all(&[stream], false).tap;
    assert_eq!(t.model(), Some("first"));
    assert_eq!(t.usage().map(|u| u.total_tokens), Some(11));
}

#[test]
fn tap_skips_azure_empty_model() {
    let stream = b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n\
                   data: {\"model\":\"gpt-4o-2024-08-06\",\"choices\":[]}\n\n";
    assert_eq!(
        tap_all(&[stream], false).tap.model(),
        Some("gpt-4o-2024-08-06")
    );
}

#[test]
fn tap_reports_in_stream_error_verbatim() {
    let error = r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#;
    let stream = format!("data: {{\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\ndata: {error}\n\n");
    let t = tap_all(&[stream.as_bytes()], false).tap;
    assert_eq!(t.error(), Some(error));
    assert!(!t.done());
    let clean = tap_all(
        &[b"data: {\"error\":null,\"content\":\"\\\"error\\\": x\"}\n\n"],
        false,
    )
    .tap;
    assert_eq!(
        clean.error(),
        None,
        "a null error or the word in a string is not an error"
    );
}

#[test]
fn tap_survives_non_json_data() {
    let t = tap_all(
        &[b"data: not json \"usage\": 1\n\ndata: {\"usage\":[1]}\n\ndata: [DONE]\n\n"],
        true,
    )
    .tap;
    assert_eq!(t.usage(), None);
    assert_eq!(t.events(), 3);
    assert!(t.done());
}

#[test]
fn tap_forwards_only_whole_events_and_holds_the_tail() {
    let mut tap = StreamTap::new(false);
    assert_eq!(
        tap.feed(b"data: {\"a\":1}\n\ndata: {\"b\""),
        b"data: {\"a\":1}\n\n"
    );
    assert_eq!(tap.pending(), b"data: {\"b\"");
    assert_eq!(
        tap.feed(b":2}\n"),
        b"",
        "an event is only complete at its blank line"
    );
    assert_eq!(
        tap.feed(b"\n: keep-alive\n"),
        b"data: {\"b\":2}\n\n: keep-alive\n"
    );
    assert_eq!(tap.pending(), b"");
    assert_eq!(
        tap.feed(b": ping\n"),
        b": ping\n",
        "keep-alives between events pass at once"
    );
    assert_eq!(
        tap.feed(b"data: x\n: inside\n"),
        b"",
        "a comment inside an event waits with it"
    );
    assert_eq!(tap.feed(b"\r"), b"data: x\n: inside\n\r");
    assert_eq!(tap.feed(b"\n"), b"\n", "the LF completing a split CRLF");
    assert_eq!(tap.events(), 3);
}

#[test]
fn tap_split_anywhere_keeps_bytes_events_and_facts() {
    for (name, stream) in fixtures() {
        let whole = tap_all(&[&stream], true).tap;
        let expected_events = parse_all(&[&stream]).0;
        for pieces in splittings(&stream, 150) {
            let t = tap_all(&pieces, true);
            // Concatenation invariant.
            let mut joined: Vec<u8> = t.forwarded.concat();
            joined.extend_from_slice(t.tap.pending());
            assert_eq!(joined, stream, "{name}");
            // Forwarded bytes are whole events: a fresh parser over them alone finds every
            // event the tap has seen, and nothing is left unterminated.
            let forwarded = t.forwarded.concat();
            let mut check = SseParser::new();
            let events = check.feed(&forwarded);
            assert_eq!(events.len() as u64, t.tap.events(), "{name}");
            assert_eq!(events, expected_events, "{name}");
            assert!(!check.finish(), "{name}: forwarded a partial event");
            assert_eq!(t.tap.usage(), whole.usage(), "{name}");
            assert_eq!(t.tap.text(), whole.text(), "{name}");
            assert_eq!(t.tap.finish_reason(), whole.finish_reason(), "{name}");
            assert_eq!(t.tap.model(), whole.model(), "{name}");
            assert_eq!(t.tap.done(), whole.done(), "{name}");
        }
    }
}

#[test]
fn tap_without_text_reads_the_same_facts() {
    for (name, stream) in fixtures() {
        let with = tap_all(&[&stream], true).tap;
        let without = tap_all(&[&stream], false).tap;
        assert_eq!(with.usage(), without.usage(), "{name}");
        assert_eq!(with.finish_reason(), without.finish_reason(), "{name}");
        assert_eq!(with.model(), without.model(), "{name}");
    }
}

#[test]
fn pending_bytes_counts_the_unfinished_event_and_drops_to_zero_at_dispatch() {
    let mut p = SseParser::new();
    assert_eq!(p.pending_bytes(), 0);
    p.feed(b"data: abc");
    assert_eq!(p.pending_bytes(), 9, "the partial line is held");
    p.feed(b"\ndata: de\n");
    assert_eq!(p.pending_bytes(), "abc\nde\n".len(), "joined data lines are held");
    assert_eq!(p.feed(b"\n").len(), 1);
    assert_eq!(p.pending_bytes(), 0);
    p.feed(b": comment without end");
    assert!(p.pending_bytes() > 0);
}
