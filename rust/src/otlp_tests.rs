use super::*;
use crate::rng::Rng;

// --- a minimal protobuf reader: the reference the encoder is checked against ----------------

#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let b = buf[*pos];
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            // canonical: no trailing zero continuation bytes (a single 0 byte is fine)
            assert!(b != 0 || shift == 0, "non-canonical varint");
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// Every (field number, value) of one message, in order; panics on anything malformed
/// (a length running past the end, an unknown wire type).
fn fields(buf: &[u8]) -> Vec<(u32, Field<'_>)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let (number, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let value = match wire {
            VARINT => Field::Varint(read_varint(buf, &mut pos)),
            I64 => {
                pos += 8;
                Field::Fixed64(u64::from_le_bytes(buf[pos - 8..pos].try_into().unwrap()))
            }
            I32 => {
                pos += 4;
                Field::Fixed32(u32::from_le_bytes(buf[pos - 4..pos].try_into().unwrap()))
            }
            LEN => {
                let len = read_varint(buf, &mut pos) as usize;
                assert!(pos + len <= buf.len(), "length {len} runs past the end of its message");
                pos += len;
                Field::Len(&buf[pos - len..pos])
            }
            other => panic!("wire type {other}"),
        };
        out.push((number, value));
    }
    assert_eq!(pos, buf.len());
    out
}

fn only<'a>(buf: &'a [u8], number: u32) -> Vec<Field<'a>> {
    fields(buf).into_iter().filter(|(n, _)| *n == number).map(|(_, f)| f).collect()
}

fn one_len(buf: &[u8], number: u32) -> &[u8] {
    match only(buf, number).as_slice() {
        [Field::Len(b)] => b,
        other => panic!("field {number}: {other:?}"),
    }
}

fn numbers(buf: &[u8]) -> Vec<u32> {
    fields(buf).iter().map(|(n, _)| *n).collect()
}

/// Decoded AnyValue, for comparison with the input.
fn read_any(buf: &[u8]) -> AnyValue<'_> {
    let f = fields(buf);
    assert_eq!(f.len(), 1, "AnyValue holds exactly one field of its oneof");
    match &f[0] {
        (1, Field::Len(b)) => AnyValue::Str(std::str::from_utf8(b).unwrap()),
        (2, Field::Varint(v)) => AnyValue::Bool(*v != 0),
        (3, Field::Varint(v)) => AnyValue::Int(*v as i64),
        (4, Field::Fixed64(v)) => AnyValue::Double(f64::from_bits(*v)),
        (5, Field::Len(b)) => AnyValue::Array(
            only(b, 1)
                .into_iter()
                .map(|f| match f {
                    Field::Len(v) => read_any(v),
                    other => panic!("{other:?}"),
                })
                .collect(),
        ),
        other => panic!("{other:?}"),
    }
}

fn read_attributes(buf: &[u8], number: u32) -> Vec<KeyValue<'_>> {
    only(buf, number)
        .into_iter()
        .map(|f| {
            let Field::Len(kv) = f else { panic!("{f:?}") };
            let key = only(kv, 1).first().map_or("", |f| match f {
                Field::Len(k) => std::str::from_utf8(k).unwrap(),
                other => panic!("{other:?}"),
            });
            KeyValue { key, value: read_any(one_len(kv, 2)) }
        })
        .collect()
}

/// (resource, scope, spans) of a request holding one ResourceSpans with one ScopeSpans.
fn unwrap_request(buf: &[u8]) -> (&[u8], &[u8], Vec<&[u8]>) {
    assert_eq!(numbers(buf), [1]);
    let rs = one_len(buf, 1);
    assert_eq!(numbers(rs), [1, 2]);
    let ss = one_len(rs, 2);
    let spans = only(ss, 2)
        .into_iter()
        .map(|f| match f {
            Field::Len(b) => b,
            other => panic!("{other:?}"),
        })
        .collect();
    (one_len(rs, 1), one_len(ss, 1), spans)
}

// --- fixtures ---------------------------------------------------------------------------------

const TRACE: [u8; 16] =
    [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36];
const SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const PARENT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn span<'a>(attributes: &'a [KeyValue<'a>]) -> Span<'a> {
    Span {
        trace_id: TRACE,
        span_id: SPAN,
        parent_span_id: Some(PARENT),
        flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE,
        name: "chat gpt-4o",
        kind: SpanKind::Server,
        start_time_unix_nano: 1_700_000_000_123_456_789,
        end_time_unix_nano: 1_700_000_000_987_654_321,
        attributes,
        status: Status { code: StatusCode::Error, message: "upstream timed out" },
    }
}

const SCOPE: Scope<'static> = Scope { name: "llmgw", version: "0.1.0" };

// --- varints, fixed64, lengths --------------------------------------------------------------

/// What `f` writes, through a Writer over a buffer large enough for any single value here.
fn written(f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let mut w = Writer { buf: &mut buf, pos: 0 };
    f(&mut w);
    let n = w.pos;
    buf.truncate(n);
    buf
}

fn varint_bytes(v: u64) -> Vec<u8> {
    written(|w| w.varint(v))
}

#[test]
fn varints_match_the_protobuf_spec_examples_and_their_computed_length() {
    // examples from the protobuf encoding guide, and each 7-bit boundary
    assert_eq!(varint_bytes(0), [0x00]);
    assert_eq!(varint_bytes(1), [0x01]);
    assert_eq!(varint_bytes(127), [0x7f]);
    assert_eq!(varint_bytes(128), [0x80, 0x01]);
    assert_eq!(varint_bytes(150), [0x96, 0x01]);
    assert_eq!(varint_bytes(300), [0xac, 0x02]);
    assert_eq!(varint_bytes(16_383), [0xff, 0x7f]);
    assert_eq!(varint_bytes(16_384), [0x80, 0x80, 0x01]);
    assert_eq!(varint_bytes(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    for bits in 0..64 {
        for v in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) + 1] {
            let bytes = varint_bytes(v);
            assert_eq!(bytes.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&bytes, &mut 0), v);
        }
    }
}

#[test]
fn negative_int64_is_a_ten_byte_varint_not_zigzag() {
    let attrs = [KeyValue { key: "k", value: AnyValue::Int(-1) }];
    let buf = written(|w| w.any_value(&attrs[0].value));
    assert_eq!(buf, [0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(any_value_len(&attrs[0].value), buf.len());
    for i in [i64::MIN, -300, -1, 0, 1, 300, i64::MAX] {
        let v = AnyValue::Int(i);
        let buf = written(|w| w.any_value(&v));
        assert_eq!(read_any(&buf), v);
        assert_eq!(buf.len(), any_value_len(&v));
    }
}

#[test]
fn times_are_little_endian_fixed64_and_flags_fixed32_under_field_16() {
    let s = span(&[]);
    let buf = encode_export_request(&[], &SCOPE, std::slice::from_ref(&s));
    let (_, _, spans) = unwrap_request(&buf);
    let body = spans[0];
    // the span starts with trace_id then span_id (keys 0x0a, 0x12, each length-prefixed)
    assert_eq!(&body[..2], &[0x0a, 16]);
    assert_eq!(&body[2..18], &TRACE);
    assert_eq!(&body[18..20], &[0x12, 8]);
    let start_at = body.windows(1).position(|w| w[0] == 0x39).unwrap();
    assert_eq!(&body[start_at + 1..start_at + 9], &1_700_000_000_123_456_789u64.to_le_bytes());
    assert_eq!(only(body, 7), [Field::Fixed64(1_700_000_000_123_456_789)]);
    assert_eq!(only(body, 8), [Field::Fixed64(1_700_000_000_987_654_321)]);
    assert_eq!(only(body, 16), [Field::Fixed32(0x301)]);
    // flags is the last field written: key 0x85 0x01 then four little-endian bytes
    assert_eq!(&body[body.len() - 6..], &[0x85, 0x01, 0x01, 0x03, 0x00, 0x00]);
}

#[test]
fn a_known_span_encodes_to_known_bytes() {
    let attrs = [KeyValue { key: "a", value: AnyValue::Bool(true) }];
    let s = Span {
        trace_id: [0x11; 16],
        span_id: [0x22; 8],
        parent_span_id: None,
        flags: 0,
        name: "n",
        kind: SpanKind::Client,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: &attrs,
        status: Status { code: StatusCode::Ok, message: "" },
    };
    let buf = encode_export_request(&[], &Scope { name: "s", version: "" }, &[s]);
    let mut span = vec![0x0a, 16];
    span.extend([0x11; 16]);
    span.extend([0x12, 8]);
    span.extend([0x22; 8]);
    span.extend([0x2a, 1, b'n', 0x30, 3]);
    span.extend([0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
    span.extend([0x41, 2, 0, 0, 0, 0, 0, 0, 0]);
    span.extend([0x4a, 7, 0x0a, 1, b'a', 0x12, 2, 0x10, 1]); // KeyValue{a: AnyValue{bool: true}}
    span.extend([0x7a, 2, 0x18, 1]); // Status{code: OK}
    let mut scope_spans = vec![0x0a, 3, 0x0a, 1, b's', 0x12, span.len() as u8];
    scope_spans.extend(&span);
    let mut resource_spans = vec![0x0a, 0, 0x12, scope_spans.len() as u8];
    resource_spans.extend(&scope_spans);
    let mut expected = vec![0x0a, resource_spans.len() as u8];
    expected.extend(&resource_spans);
    assert_eq!(buf, expected);
}

#[test]
fn nested_lengths_hold_when_they_cross_a_varint_byte_boundary() {
    // names of 0..400 bytes move the span, scope_spans and resource_spans lengths across the
    // 127/128 boundary (one to two length bytes) at different points
    for name_len in 0..400 {
        let name = "x".repeat(name_len);
        let attrs = [KeyValue { key: "k", value: AnyValue::Str(&name) }];
        let mut s = span(&attrs);
        s.name = &name;
        let buf = encode_export_request(&attrs, &SCOPE, std::slice::from_ref(&s));
        assert_eq!(buf.len(), encoded_len(&attrs, &SCOPE, std::slice::from_ref(&s)), "name {name_len}");
        let (resource, _, spans) = unwrap_request(&buf);
        assert_eq!(read_attributes(resource, 1), attrs);
        assert_eq!(only(spans[0], 5), if name_len == 0 { vec![] } else { vec![Field::Len(name.as_bytes())] });
        assert_eq!(read_attributes(spans[0], 9), attrs);
    }
}

// --- every field round-trips ------------------------------------------------------------------

#[test]
fn every_field_round_trips_through_the_reference_reader() {
    let array = vec![AnyValue::Str("stop"), AnyValue::Str("length")];
    let attrs = [
        KeyValue { key: "gen_ai.request.model", value: AnyValue::Str("gpt-4o") },
        KeyValue { key: "gen_ai.request.stream", value: AnyValue::Bool(false) },
        KeyValue { key: "gen_ai.usage.input_tokens", value: AnyValue::Int(1234) },
        KeyValue { key: "gen_ai.request.temperature", value: AnyValue::Double(0.7) },
        KeyValue { key: "empty", value: AnyValue::Str("") },
        KeyValue { key: "gen_ai.response.finish_reasons", value: AnyValue::Array(array) },
    ];
    let resource = [
        KeyValue { key: "service.name", value: AnyValue::Str("llmgw") },
        KeyValue { key: "service.instance.id", value: AnyValue::Str("ü-1") },
    ];
    let s = span(&attrs);
    let buf = encode_export_request(&resource, &SCOPE, std::slice::from_ref(&s));
    let (res, scope, spans) = unwrap_request(&buf);
    assert_eq!(read_attributes(res, 1), resource);
    assert_eq!(only(scope, 1), [Field::Len(b"llmgw")]);
    assert_eq!(only(scope, 2), [Field::Len(b"0.1.0")]);
    let body = spans[0];
    // canonical order: field numbers ascending
    assert_eq!(numbers(body), [1, 2, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 15, 16]);
    assert_eq!(one_len(body, 1), TRACE);
    assert_eq!(one_len(body, 2), SPAN);
    assert_eq!(one_len(body, 4), PARENT);
    assert_eq!(one_len(body, 5), b"chat gpt-4o");
    assert_eq!(only(body, 6), [Field::Varint(2)]);
    assert_eq!(read_attributes(body, 9), attrs);
    let status = one_len(body, 15);
    assert_eq!(only(status, 2), [Field::Len(b"upstream timed out")]);
    assert_eq!(only(status, 3), [Field::Varint(2)]);
}

#[test]
fn defaults_are_left_out_like_a_proto3_encoder_does() {
    let s = Span {
        trace_id: TRACE,
        span_id: SPAN,
        parent_span_id: None,
        flags: 0,
        name: "",
        kind: SpanKind::Unspecified,
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        attributes: &[],
        status: Status::UNSET,
    };
    let buf = encode_export_request(&[], &Scope { name: "", version: "" }, &[s]);
    let (resource, scope, spans) = unwrap_request(&buf);
    assert!(resource.is_empty() && scope.is_empty());
    assert_eq!(numbers(spans[0]), [1, 2]);
    // an unset status with a message still carries the message
    let s = Span { status: Status { code: StatusCode::Unset, message: "m" }, ..span(&[]) };
    let buf = encode_export_request(&[], &SCOPE, &[s]);
    let (_, _, spans) = unwrap_request(&buf);
    assert_eq!(numbers(one_len(spans[0], 15)), [2]);
}

#[test]
fn an_empty_batch_is_a_valid_request_with_its_resource() {
    let resource = [KeyValue { key: "service.name", value: AnyValue::Str("llmgw") }];
    let buf = encode_export_request(&resource, &SCOPE, &[]);
    assert_eq!(buf.len(), encoded_len(&resource, &SCOPE, &[]));
    let (res, _, spans) = unwrap_request(&buf);
    assert_eq!(read_attributes(res, 1), resource);
    assert!(spans.is_empty());
}

#[test]
fn doubles_keep_every_bit() {
    for d in [0.0, -0.0, 1.5, f64::MIN_POSITIVE, f64::MAX, f64::INFINITY, f64::NEG_INFINITY] {
        let buf = written(|w| w.any_value(&AnyValue::Double(d)));
        let AnyValue::Double(back) = read_any(&buf) else { panic!() };
        assert_eq!(back.to_bits(), d.to_bits());
    }
    let buf = written(|w| w.any_value(&AnyValue::Double(f64::NAN)));
    assert!(matches!(read_any(&buf), AnyValue::Double(d) if d.is_nan()));
}

#[test]
fn random_batches_round_trip_and_fill_exactly_the_computed_size() {
    let mut rng = Rng::new(7);
    let words = ["", "a", "chat", "gpt-4o", "ünïcödé", "日本語のテキスト", "🚀 emoji", "\u{0}nul"];
    for round in 0..200 {
        let n_spans = rng.below(40);
        let strings: Vec<String> = (0..64)
            .map(|_| {
                let w = words[rng.below(words.len())];
                let max = if rng.below(10) == 0 { 60 } else { 4 };
                w.repeat(rng.below(max))
            })
            .collect();
        let pick = |rng: &mut Rng| strings[rng.below(strings.len())].as_str();
        let mut all_attrs: Vec<Vec<KeyValue<'_>>> = Vec::new();
        for _ in 0..n_spans {
            let attrs = (0..rng.below(30))
                .map(|_| {
                    let value = match rng.below(5) {
                        0 => AnyValue::Str(pick(&mut rng)),
                        1 => AnyValue::Bool(rng.below(2) == 1),
                        2 => AnyValue::Int(rng.next_u64() as i64 >> rng.below(64)),
                        3 => AnyValue::Double(rng.unit() * 1e6 - 5e5),
                        _ => AnyValue::Array((0..rng.below(4)).map(|_| AnyValue::Str(pick(&mut rng))).collect()),
                    };
                    KeyValue { key: pick(&mut rng), value }
                })
                .collect();
            all_attrs.push(attrs);
        }
        let spans: Vec<Span<'_>> = all_attrs
            .iter()
            .enumerate()
            .map(|(i, attrs)| Span {
                trace_id: trace_id(&(rng.next_u64() as u128 | 1).to_le_bytes()).unwrap(),
                span_id: span_id(&(rng.next_u64() | 1).to_le_bytes()).unwrap(),
                parent_span_id: if i % 3 == 0 { None } else { Some(rng.next_u64().to_le_bytes()) },
                flags: (rng.below(4) as u32) * 0x101,
                name: pick(&mut rng),
                kind: SpanKind::from_i64(rng.below(6) as i64).unwrap(),
                start_time_unix_nano: rng.next_u64() >> rng.below(64),
                end_time_unix_nano: rng.next_u64(),
                attributes: attrs,
                status: Status { code: StatusCode::from_i64(rng.below(3) as i64).unwrap(), message: pick(&mut rng) },
            })
            .collect();
        let resource: Vec<KeyValue<'_>> =
            (0..rng.below(5)).map(|_| KeyValue { key: pick(&mut rng), value: AnyValue::Str(pick(&mut rng)) }).collect();
        let scope = Scope { name: pick(&mut rng), version: pick(&mut rng) };
        // write() asserts the writer filled exactly the computed size
        let request = ExportRequest::new(&resource, scope, &spans);
        let mut buf = vec![0xee; request.len()];
        request.write(&mut buf);
        assert_eq!(buf, encode_export_request(&resource, &scope, &spans), "round {round}");
        let (res, sc, bodies) = unwrap_request(&buf);
        assert_eq!(read_attributes(res, 1), resource);
        assert_eq!(only(sc, 1).len(), usize::from(!scope.name.is_empty()));
        assert_eq!(bodies.len(), spans.len());
        for (body, s) in bodies.iter().zip(&spans) {
            assert_eq!(one_len(body, 1), s.trace_id);
            assert_eq!(one_len(body, 2), s.span_id);
            assert_eq!(only(body, 4), s.parent_span_id.as_ref().map(|p| Field::Len(p)).into_iter().collect::<Vec<_>>());
            assert_eq!(only(body, 5).len(), usize::from(!s.name.is_empty()));
            assert_eq!(read_attributes(body, 9), s.attributes);
            let kind = only(body, 6);
            assert_eq!(kind.first().cloned().unwrap_or(Field::Varint(0)), Field::Varint(s.kind as u64));
            let flags = only(body, 16);
            assert_eq!(flags.first().cloned().unwrap_or(Field::Fixed32(0)), Field::Fixed32(s.flags));
        }
    }
}

// --- ids and enums ----------------------------------------------------------------------------

#[test]
fn ids_of_the_wrong_length_or_all_zero_are_refused_with_a_message() {
    assert_eq!(trace_id(&TRACE), Ok(TRACE));
    assert_eq!(trace_id(&[1; 8]), Err(OtlpError::TraceIdLength(8)));
    assert_eq!(trace_id(&[0; 16]), Err(OtlpError::ZeroTraceId));
    assert_eq!(span_id(&SPAN), Ok(SPAN));
    assert_eq!(span_id(&[1; 16]), Err(OtlpError::SpanIdLength(16)));
    assert_eq!(span_id(&[]), Err(OtlpError::SpanIdLength(0)));
    assert_eq!(span_id(&[0; 8]), Err(OtlpError::ZeroSpanId));
    assert_eq!(parent_span_id(&[]), Ok(None));
    assert_eq!(parent_span_id(&[0; 8]), Ok(None));
    assert_eq!(parent_span_id(&PARENT), Ok(Some(PARENT)));
    assert_eq!(parent_span_id(&[1; 7]), Err(OtlpError::ParentSpanIdLength(7)));
    assert_eq!(OtlpError::TraceIdLength(8).to_string(), "trace_id must be 16 bytes, got 8");
    assert_eq!(OtlpError::ParentSpanIdLength(7).to_string(), "parent_span_id must be 8 bytes or empty, got 7");
}

#[test]
fn kinds_and_status_codes_are_the_proto_enum_values() {
    assert_eq!(SpanKind::from_i64(1), Ok(SpanKind::Internal));
    assert_eq!(SpanKind::from_i64(2), Ok(SpanKind::Server));
    assert_eq!(SpanKind::from_i64(3), Ok(SpanKind::Client));
    assert_eq!(SpanKind::from_i64(6), Err(OtlpError::Kind(6)));
    assert_eq!(SpanKind::from_i64(-1), Err(OtlpError::Kind(-1)));
    assert_eq!(StatusCode::from_i64(0), Ok(StatusCode::Unset));
    assert_eq!(StatusCode::from_i64(2), Ok(StatusCode::Error));
    assert_eq!(StatusCode::from_i64(3), Err(OtlpError::StatusCode(3)));
}

#[test]
#[should_panic(expected = "exactly len() bytes")]
fn writing_into_a_buffer_of_another_size_panics() {
    let request = ExportRequest::new(&[], SCOPE, &[]);
    request.write(&mut vec![0; request.len() + 1]);
}
