use super::*;
use crate::rng::Rng;

const LATENCY: [f64; 18] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
const OVERHEAD: [f64; 13] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

fn metrics(per_key: bool) -> Metrics {
    Metrics::new(&LATENCY, &OVERHEAD, per_key).unwrap()
}

fn attempt(deployment: &'static str, error_code: Option<&'static str>) -> Attempt<'static> {
    Attempt {
        deployment,
        status: Some(if error_code.is_some() { 503 } else { 200 }),
        error_code,
        seconds: 0.5,
        via: "primary",
        retry: false,
        hedge: false,
        cancelled: false,
    }
}

fn finish<'a>(attempts: &'a [Attempt<'a>]) -> Finish<'a> {
    Finish {
        request_id: "req-1",
        start_ns: 1_760_000_000_123_456_789,
        duration_s: 0.8,
        ttfb_s: Some(0.2),
        upstream_s: 0.79,
        overhead_s: 0.0004,
        kind: "chat",
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        result: "ok",
        model: Some("gpt-4o"),
        group: Some("smart"),
        deployment: Some("east"),
        provider: Some("openai"),
        error_code: None,
        key_id: Some("key_01"),
        key_name: None,
        user: None,
        team: Some("platform"),
        prompt_tokens: 850,
        completion_tokens: 120,
        cached_tokens: 0,
        usage_estimated: false,
        cost_usd: Some(0.0033),
        cache: Some("miss"),
        stream: true,
        trace_id: None,
        attempts,
        input_json: None,
        output: None,
    }
}

fn int(m: &Metrics, family: Counter, labels: &[&str]) -> Option<i64> {
    m.counter(family).get(labels).map(|c| c.int)
}

fn line(r: &Finish<'_>) -> String {
    let mut out = Vec::new();
    write_json_line(&mut out, r);
    String::from_utf8(out).unwrap()
}

// --- histograms -------------------------------------------------------------------------------------

#[test]
fn telemetry_histogram_buckets_are_bisect_left_with_inf_and_sum() {
    let mut m = metrics(false);
    let h = Histogram::GatewayOverhead;
    // (value, bucket) as Python's bisect.bisect_left(OVERHEAD_BUCKETS, value) gives
    let cases = [(0.0, 0), (0.00005, 0), (0.0000501, 1), (0.0001, 1), (0.3, 12), (1.0, 12), (1.0000001, 13), (-1.0, 0),
        (f64::INFINITY, 13)];
    for (value, _) in cases {
        m.observe(h, &["/r"], value);
    }
    let b = m.histogram(h).get(&["/r"]).unwrap();
    assert_eq!(b.counts.len(), OVERHEAD.len() + 1);
    let mut want = vec![0u64; OVERHEAD.len() + 1];
    for (_, bucket) in cases {
        want[bucket] += 1;
    }
    assert_eq!(&*b.counts, &want[..]);
    assert_eq!(b.sum, f64::INFINITY);
    // NaN: bisect_left puts it in bucket 0 (every comparison is false)
    m.observe(h, &["/nan"], f64::NAN);
    assert_eq!(m.histogram(h).get(&["/nan"]).unwrap().counts[0], 1);
    // the latency families use the latency bounds
    m.observe(Histogram::RequestDuration, &["/r", "g"], 300.0);
    m.observe(Histogram::RequestDuration, &["/r", "g"], 301.0);
    let d = m.histogram(Histogram::RequestDuration).get(&["/r", "g"]).unwrap();
    assert_eq!((d.counts.len(), d.counts[17], d.counts[18], d.sum), (19, 1, 1, 601.0));
}

#[test]
fn telemetry_bounds_must_be_sorted_and_finite() {
    assert!(Metrics::new(&[1.0, 1.0], &OVERHEAD, false).is_err());
    assert!(Metrics::new(&[2.0, 1.0], &OVERHEAD, false).is_err());
    assert!(Metrics::new(&LATENCY, &[f64::NAN], false).is_err());
    assert!(Metrics::new(&LATENCY, &[], false).is_err());
    let e = Metrics::new(&LATENCY, &[1.0, f64::INFINITY], false).unwrap_err();
    assert!(e.to_string().contains("overhead_bounds"));
}

#[test]
fn telemetry_series_are_found_by_labels_and_kept_in_first_seen_order() {
    let mut m = metrics(false);
    m.inc(Counter::Errors, &["ab", ""], 1);
    m.inc(Counter::Errors, &["a", "b"], 1);
    m.inc(Counter::Errors, &["ab", ""], 2);
    m.inc(Counter::Errors, &["", "ab"], 1);
    let series: Vec<(Vec<&str>, i64)> = m
        .counter(Counter::Errors)
        .series()
        .iter()
        .map(|s| (s.labels.iter().map(|l| &**l).collect(), s.value.int))
        .collect();
    assert_eq!(series, vec![(vec!["ab", ""], 3), (vec!["a", "b"], 1), (vec!["", "ab"], 1)]);
    // many series: the index grows and still finds each
    for i in 0..5000 {
        m.inc(Counter::Retries, &["g", &format!("d{i}"), "e"], i);
    }
    for i in (0..5000).step_by(97) {
        assert_eq!(int(&m, Counter::Retries, &["g", &format!("d{i}"), "e"]), Some(i));
    }
    assert_eq!(m.series_count(), 5003);
}

// --- what a request counts ------------------------------------------------------------------------

#[test]
fn telemetry_count_matches_observability_count() {
    let mut m = metrics(true);
    let attempts = [
        attempt("east", Some("upstream_timeout")),
        Attempt { retry: true, ..attempt("east", Some("upstream_error")) },
        Attempt { via: "fallback", ..attempt("west", Some("rate_limit_exceeded")) },
        Attempt { via: "fallback", cancelled: true, ..attempt("north", Some("cancelled")) },
        Attempt { via: "fallback", ..attempt("south", None) },
    ];
    let r = Finish { deployment: Some("south"), cached_tokens: 5, ..finish(&attempts) };
    m.count(&r);
    let g = "smart";
    assert_eq!(int(&m, Counter::Requests, &["/v1/chat/completions", g, "south", "200"]), Some(1));
    assert_eq!(int(&m, Counter::Tokens, &[g, "south", "input"]), Some(850));
    assert_eq!(int(&m, Counter::Tokens, &[g, "south", "output"]), Some(120));
    assert_eq!(int(&m, Counter::Tokens, &[g, "south", "cached"]), Some(5));
    assert_eq!(m.counter(Counter::CostUsd).get(&[g, "south"]).unwrap().float, 0.0033);
    assert_eq!(int(&m, Counter::CacheRequests, &[g, "miss"]), Some(1));
    // failures: every errored attempt except the cancelled one
    assert_eq!(m.counter(Counter::UpstreamFailures).series().len(), 3);
    assert_eq!(int(&m, Counter::UpstreamFailures, &[g, "north", "cancelled"]), None);
    // the second attempt retried after a timeout; the third fell back after an upstream error;
    // the fourth after a rate limit; the fifth after the cancelled attempt's error
    assert_eq!(int(&m, Counter::Retries, &[g, "east", "upstream_timeout"]), Some(1));
    assert_eq!(int(&m, Counter::Fallbacks, &[g, "upstream_error"]), Some(1));
    assert_eq!(int(&m, Counter::Fallbacks, &[g, "rate_limit_exceeded"]), Some(1));
    assert_eq!(int(&m, Counter::Fallbacks, &[g, "cancelled"]), Some(1));
    let up = m.histogram(Histogram::UpstreamDuration);
    assert_eq!(up.series().len(), 4);
    assert_eq!(up.get(&[g, "east"]).unwrap().counts.iter().sum::<u64>(), 2);
    assert_eq!(m.histogram(Histogram::TimeToFirstToken).get(&[g]).unwrap().counts[8], 1);
    assert_eq!(m.histogram(Histogram::GatewayOverhead).get(&["/v1/chat/completions"]).unwrap().counts[3], 1);
    // per key: key_name or key_id, team
    assert_eq!(int(&m, Counter::KeyRequests, &["key_01", "platform", "200"]), Some(1));
    assert_eq!(int(&m, Counter::KeyTokens, &["key_01", "platform", "output"]), Some(120));
    assert_eq!(m.counter(Counter::KeyCostUsd).get(&["key_01", "platform"]).unwrap().float, 0.0033);
    assert!(m.counter(Counter::Errors).series().is_empty());
}

#[test]
fn telemetry_count_edge_cases_follow_python_truthiness() {
    let mut m = metrics(true);
    // no tokens: no token, cost or unpriced series; None group/deployment are "" labels
    let r = Finish {
        group: None,
        deployment: Some(""),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: None,
        stream: false,
        cache: None,
        status: 429,
        error_code: Some("rate_limit_exceeded"),
        key_id: Some(""),
        key_name: Some(""),
        ..finish(&[])
    };
    m.count(&r);
    assert_eq!(int(&m, Counter::Requests, &["/v1/chat/completions", "", "", "429"]), Some(1));
    assert_eq!(int(&m, Counter::Errors, &["/v1/chat/completions", "rate_limit_exceeded"]), Some(1));
    assert_eq!(int(&m, Counter::RateLimited, &[""]), Some(1));
    for family in [Counter::Tokens, Counter::CostUsd, Counter::Unpriced, Counter::CacheRequests, Counter::KeyRequests] {
        assert!(m.counter(family).series().is_empty(), "{family:?}");
    }
    assert!(m.histogram(Histogram::TimeToFirstToken).series().is_empty());
    // tokens without a price: unpriced; a zero cost is a priced request (cost += 0.0) but no key cost
    let r = Finish { cost_usd: None, error_code: Some("budget_exceeded"), key_name: Some("bot"), ..finish(&[]) };
    m.count(&r);
    assert_eq!(int(&m, Counter::Unpriced, &["smart", "east"]), Some(1));
    assert_eq!(int(&m, Counter::BudgetBlocked, &["smart"]), Some(1));
    assert_eq!(int(&m, Counter::KeyRequests, &["bot", "platform", "200"]), Some(1));
    let r = Finish { cost_usd: Some(0.0), prompt_tokens: 0, completion_tokens: 3, ..finish(&[]) };
    m.count(&r);
    assert_eq!(m.counter(Counter::CostUsd).get(&["smart", "east"]).unwrap().float, 0.0);
    assert!(m.counter(Counter::KeyCostUsd).series().is_empty());
    // a stream without a first token observes no ttft; a cache "" is a label
    let mut m = metrics(true);
    let r = Finish { ttfb_s: None, cache: Some(""), ..finish(&[]) };
    m.count(&r);
    assert!(m.histogram(Histogram::TimeToFirstToken).series().is_empty());
    assert_eq!(int(&m, Counter::CacheRequests, &["smart", ""]), Some(1));
    // per_key off: no key families
    let mut off = metrics(false);
    off.count(&finish(&[]));
    assert!(off.counter(Counter::KeyRequests).series().is_empty());
    // a retry after a success counts nothing; a fallback after a success neither
    let mut m = metrics(false);
    let attempts = [attempt("a", None), Attempt { retry: true, ..attempt("a", None) },
        Attempt { via: "fallback", ..attempt("b", None) }];
    m.count(&finish(&attempts));
    assert!(m.counter(Counter::Retries).series().is_empty() && m.counter(Counter::Fallbacks).series().is_empty());
}

#[test]
fn telemetry_families_iterate_in_families_order_and_skip_empty() {
    let mut m = metrics(false);
    m.count(&finish(&[]));
    let names: Vec<&str> = m.counter_families().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["llmgw_requests_total", "llmgw_tokens_total", "llmgw_cost_usd_total",
        "llmgw_cache_requests_total"]);
    let floats: Vec<bool> = m.counter_families().map(|(_, f, _)| f).collect();
    assert_eq!(floats, [false, false, true, false]);
    let hists: Vec<&str> = m.histogram_families().map(|(n, _)| n).collect();
    assert_eq!(hists, ["llmgw_request_duration_seconds", "llmgw_time_to_first_token_seconds",
        "llmgw_gateway_overhead_seconds"]);
}

// --- JSON pieces ----------------------------------------------------------------------------------

#[test]
fn telemetry_strings_escape_like_orjson() {
    let mut out = Vec::new();
    write_str(&mut out, "\u{1}\u{1f}\u{7f}\u{8}\u{c}\n\r\t\"\\ é \u{2028} /");
    // orjson.dumps("\x01\x1f\x7f\x08\x0c\n\r\t\"\\ é \u2028 /")
    assert_eq!(String::from_utf8(out).unwrap(), "\"\\u0001\\u001f\u{7f}\\b\\f\\n\\r\\t\\\"\\\\ é \u{2028} /\"");
    let mut out = Vec::new();
    write_str(&mut out, "");
    write_str(&mut out, "plain");
    write_str(&mut out, "\0");
    assert_eq!(out, b"\"\"\"plain\"\"\\u0000\"");
}

#[test]
fn telemetry_floats_are_spelled_like_orjson() {
    // orjson.dumps of each value
    let cases: &[(f64, &str)] = &[
        (1e-7, "1e-7"),
        (1e16, "1e16"),
        (1.5e16, "1.5e16"),
        (123456.789, "123456.789"),
        (0.1 + 0.2, "0.30000000000000004"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (1e-5, "0.00001"),
        (1e-6, "1e-6"),
        (1e15, "1000000000000000.0"),
        (3.0, "3.0"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
        (1e22, "1e22"),
        (1e21, "1e21"),
        (0.00001234, "0.00001234"),
        (-812.346, "-812.346"),
        (0.0033, "0.0033"),
        (f64::NAN, "null"),
        (f64::NEG_INFINITY, "null"),
    ];
    for &(x, want) in cases {
        let mut out = Vec::new();
        write_f64(&mut out, x);
        assert_eq!(std::str::from_utf8(&out).unwrap(), want, "{x:e}");
    }
}

#[test]
fn telemetry_floats_read_back_exactly() {
    let mut rng = Rng::new(7);
    for _ in 0..100_000 {
        let x = f64::from_bits(rng.next_u64());
        if !x.is_finite() {
            continue;
        }
        let mut out = Vec::new();
        write_f64(&mut out, x);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains('.') || text.contains('e'), "{text} reads as an int");
        assert_eq!(text.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{text}");
    }
}

#[test]
fn telemetry_round3_is_pythons_round() {
    // repr(round(x, 3)) in CPython 3.11
    let cases: &[(f64, f64)] = &[
        (0.0625, 0.062),
        (0.1875, 0.188),
        (1.0625, 1.062),
        (-0.0625, -0.062),
        (0.0005, 0.001),
        (0.0015, 0.002),
        (1.0005, 1.0),
        (2.675, 2.675),
        (0.1234567, 0.123),
        (123456.7895, 123456.789),
        (1000000000000000.2, 1000000000000000.2),
        (4500000000000.0625, 4500000000000.062),
        (1e300, 1e300),
        (5e-324, 0.0),
        (0.9995, 1.0),
        (0.12345, 0.123),
    ];
    for &(x, want) in cases {
        assert_eq!(round3(x).to_bits(), want.to_bits(), "round({x:?}, 3)");
    }
    assert!(round3(-0.0001).is_sign_negative() && round3(-0.0001) == 0.0);
    assert!(round3(f64::NAN).is_nan());
    assert_eq!(round3(f64::INFINITY), f64::INFINITY);
    // the fast path against the exact one: random milliseconds, and exact ties k/16 (x * 1000
    // lands on .5 when x = (2j + 1) / 2000 is a binary fraction)
    let mut rng = Rng::new(11);
    for i in 0..200_000 {
        let x = match i % 4 {
            0 => rng.unit() * 10.0,
            1 => rng.unit() * 1e6,
            2 => (rng.below(1 << 20) as f64) / 16.0 * if rng.below(2) == 0 { 1.0 } else { -1.0 },
            _ => f64::from_bits(rng.next_u64()),
        };
        if !x.is_finite() {
            continue;
        }
        assert_eq!(round3(x).to_bits(), round3_exact(x).to_bits(), "{x:?}");
    }
    assert_eq!(ms(0.0004567), 0.457);
    assert_eq!(ms(0.8123456), 812.346);
}

#[test]
fn telemetry_ms_digits_are_the_shortest_float_spelling() {
    let text = |seconds: f64| {
        let mut out = Vec::new();
        write_ms(&mut out, seconds);
        String::from_utf8(out).unwrap()
    };
    let cases: &[(f64, &str)] = &[(0.79, "790.0"), (0.0004567, "0.457"), (0.0, "0.0"), (-0.0, "-0.0"),
        (-0.0000001, "-0.0"), (0.000001, "0.001"), (0.00001, "0.01"), (-1.5, "-1500.0"), (0.8123456, "812.346"),
        (0.0000625, "0.062"), (f64::NAN, "null"), (1e300, "1e303")];
    for &(seconds, want) in cases {
        assert_eq!(text(seconds), want, "{seconds:?}");
    }
    // against the reference: round, then the shortest float spelling
    let mut rng = Rng::new(3);
    for i in 0..300_000 {
        let seconds = match i % 4 {
            0 => rng.unit() * 10.0,
            1 => (rng.unit() - 0.5) * 1e10,
            2 => rng.unit() * 1e-4,
            _ => f64::from_bits(rng.next_u64()),
        };
        let mut want = Vec::new();
        write_f64(&mut want, ms(seconds));
        assert_eq!(text(seconds).as_bytes(), &want[..], "{seconds:?}");
    }
}

#[test]
fn telemetry_ts_is_pythons_isoformat() {
    // datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")
    let cases: &[(i64, &str)] = &[
        (0, "1970-01-01T00:00:00.000+00:00"),
        (-1, "1970-01-01T00:00:00.000+00:00"),
        (1, "1970-01-01T00:00:00.000+00:00"),
        (999_999, "1970-01-01T00:00:00.001+00:00"),
        (1_000_000, "1970-01-01T00:00:00.001+00:00"),
        (1_760_000_000_123_456_789, "2025-10-09T08:53:20.123+00:00"),
        (951_782_400_000_000_000, "2000-02-29T00:00:00.000+00:00"),
        (951_868_799_999_000_000, "2000-02-29T23:59:59.999+00:00"),
        (4_107_542_400_000_000_000, "2100-03-01T00:00:00.000+00:00"),
        (-1_000_000_000, "1969-12-31T23:59:59.000+00:00"),
        (-86_400_000_000_001, "1969-12-31T00:00:00.000+00:00"),
        (1_709_164_800_500_000_000, "2024-02-29T00:00:00.500+00:00"),
        (253_402_300_799_999_000, "1978-01-11T21:31:40.799+00:00"),
        (i64::MIN, "1677-09-21T00:12:43.145+00:00"),
        (i64::MAX, "2262-04-11T23:47:16.854+00:00"),
        (1_700_000_000_999_999_500, "2023-11-14T22:13:21.000+00:00"),
        (1_700_000_000_000_000_500, "2023-11-14T22:13:20.000+00:00"),
        (10_000_000_000_000_000, "1970-04-26T17:46:40.000+00:00"),
    ];
    for &(ns, want) in cases {
        let mut out = Vec::new();
        write_ts(&mut out, ns);
        assert_eq!(std::str::from_utf8(&out).unwrap(), want, "{ns}");
    }
}

#[test]
fn telemetry_civil_days_walk_the_calendar() {
    // day by day from 1600-01-01 to 2400-12-31 against a plain month-length walk
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = |y: i64, m: u32| match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let (mut y, mut m, mut d) = (1600i64, 1u32, 1u32);
    let start = -135_140; // days from 1970-01-01 back to 1600-01-01
    for days in start..start + 293_000 {
        assert_eq!(civil_from_days(days), (y, m, d), "{days}");
        d += 1;
        if d > month_len(y, m) {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}

// --- the line ------------------------------------------------------------------------------------------

#[test]
fn telemetry_line_is_orjson_of_json_fields() {
    let attempts = [
        Attempt { seconds: 0.5, ..attempt("a", Some("upstream_error")) },
        Attempt { status: None, seconds: 0.001234567, retry: true, hedge: true, ..attempt("a", None) },
        Attempt { seconds: 2.0, via: "fallback", ..attempt("b", None) },
    ];
    let raw: Vec<u8> = (0..16).collect();
    let r = Finish {
        request_id: "req-\"1\"\n",
        duration_s: 0.8123456,
        ttfb_s: Some(0.2101),
        overhead_s: 0.0004567,
        model: Some("gpt-4o é"),
        deployment: Some("gpt4o-east"),
        user: Some("u\\1"),
        cached_tokens: 3,
        usage_estimated: true,
        trace_id: Some(TraceId::Raw(&raw)),
        input_json: Some(br#"[{"role":"user","content":"hi"}]"#),
        output: Some("hello\u{2028}\u{1}"),
        ..finish(&attempts)
    };
    // orjson.dumps(json_fields(record)) for the same FinishRecord (see tests/test_telemetry.py)
    let want = concat!(
        r#"{"ts":"2025-10-09T08:53:20.123+00:00","request_id":"req-\"1\"\n","method":"POST","#,
        r#""path":"/v1/chat/completions","status":200,"result":"ok","kind":"chat","model":"gpt-4o é","#,
        r#""model_group":"smart","deployment":"gpt4o-east","provider":"openai","key_id":"key_01","user":"u\\1","#,
        r#""team":"platform","prompt_tokens":850,"completion_tokens":120,"cached_tokens":3,"usage_estimated":true,"#,
        r#""cost_usd":0.0033,"latency_ms":812.346,"ttft_ms":210.1,"upstream_ms":790.0,"overhead_ms":0.457,"#,
        r#""cache":"miss","stream":true,"attempts":3,"trace_id":"000102030405060708090a0b0c0d0e0f","#,
        r#""attempt_list":[{"deployment":"a","status":503,"error":"upstream_error","ms":500.0,"via":"primary"},"#,
        r#"{"deployment":"a","status":null,"error":null,"ms":1.235,"via":"primary","retry":true,"hedge":true},"#,
        r#"{"deployment":"b","status":200,"error":null,"ms":2000.0,"via":"fallback"}],"#,
        r#""input":[{"role":"user","content":"hi"}],"output":"hello"#,
        "\u{2028}",
        r#"\u0001"}"#
    );
    assert_eq!(line(&r), want);
    // a hex trace id is written as given; one attempt: no attempt_list; no stream: no ttft
    let one = [attempt("a", None)];
    let r = Finish { trace_id: Some(TraceId::Hex("0af7")), stream: false, ..finish(&one) };
    let text = line(&r);
    assert!(text.contains(r#""attempts":1,"trace_id":"0af7"}"#), "{text}");
    assert!(!text.contains("ttft_ms") && !text.contains("attempt_list"));
    // empty trace ids are no trace (Python: `r.trace_id.hex() if r.trace_id else None`)
    let r = Finish { trace_id: Some(TraceId::Raw(b"")), ..finish(&[]) };
    assert!(!line(&r).contains("trace_id"));
}

#[test]
fn telemetry_line_buffer_drops_what_does_not_fit() {
    let r = finish(&[]);
    let one = line(&r).len() + 1;
    let mut buf = LineBuffer::new(one * 2 + 10);
    for _ in 0..3 {
        buf.push(&r);
    }
    assert_eq!((buf.lines, buf.dropped, buf.pending().len()), (2, 1, one * 2));
    assert!(buf.pending().ends_with(b"}\n"));
    buf.clear();
    buf.push(&r);
    assert_eq!((buf.lines, buf.dropped, buf.pending().len()), (3, 1, one));
    // one line larger than the whole buffer is dropped and does not keep its memory
    let big = "x".repeat(1 << 20);
    let mut small = LineBuffer::new(1000);
    small.push(&Finish { output: Some(&big), ..r });
    assert_eq!((small.lines, small.dropped, small.pending().len()), (0, 1, 0));
    assert!(small.capacity() <= 2000);
}

#[test]
fn telemetry_finish_counts_and_logs_when_asked() {
    let mut t = Telemetry::new(false, &LATENCY, &OVERHEAD, false, 1 << 20).unwrap();
    t.finish(&finish(&[]));
    assert!(t.log.pending().is_empty());
    t.json_log = true;
    t.finish(&finish(&[]));
    assert_eq!(t.log.lines, 1);
    assert_eq!(int(&t.metrics, Counter::Requests, &["/v1/chat/completions", "smart", "east", "200"]), Some(2));
}

#[test]
fn telemetry_int_text() {
    let mut b = IntBuf::new();
    for v in [0i64, 7, -7, 200, 1_000_000, i64::MAX, i64::MIN] {
        assert_eq!(b.format(v), v.to_string());
    }
}

/// The pure-Rust cost of one request's finish (metrics, and metrics + line), for the PyO3 share
/// in benches/bench_telemetry.py (same record as its `raw`):
/// `cargo test --profile dev-opt --lib telemetry_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn telemetry_cost() {
    use std::time::Instant;
    const N: usize = 500;
    let ids: Vec<String> = (0..N).map(|i| format!("req-{i:08x}")).collect();
    let traces: Vec<[u8; 16]> = (0..N).map(|i| ((i as u128) * 104_729 + 1).to_be_bytes()).collect();
    let attempts = [Attempt { seconds: 0.793, ..attempt("gpt4o-east", None) }];
    let recs: Vec<Finish<'_>> = (0..N)
        .map(|i| Finish {
            request_id: &ids[i],
            start_ns: 1_760_000_000_000_000_000 + i as i64 * 10_000_000,
            duration_s: 0.8 + i as f64 * 1e-6,
            ttfb_s: Some(0.21),
            overhead_s: 0.0004 + i as f64 * 1e-9,
            deployment: Some("gpt4o-east"),
            key_name: Some("ci-bot"),
            key_id: Some("key_01HX"),
            trace_id: Some(TraceId::Raw(&traces[i])),
            ..finish(&attempts)
        })
        .collect();
    for json_log in [false, true] {
        let mut t = Telemetry::new(json_log, &LATENCY, &OVERHEAD, false, 8 << 20).unwrap();
        let mut best = f64::INFINITY;
        for _ in 0..200 {
            let t0 = Instant::now();
            for r in &recs {
                t.finish(r);
            }
            t.log.clear();
            best = best.min(t0.elapsed().as_secs_f64() / N as f64);
        }
        println!("pure Rust finish, json_log={json_log}: {:.3} µs per request (best of 200 x {N})", best * 1e6);
    }
}

// --- what finish_request derives (request.rs) -----------------------------------------------------

#[test]
fn telemetry_price_is_pricebook_cost_in_float_steps() {
    let p = Price { input: 2.5, output: 10.0, cached_input: Some(1.25) };
    // PriceBook.cost: fresh * input + cached * cached_input + completion * output
    assert_eq!(p.cost(1000, 200, 400), 600.0 * 2.5 + 400.0 * 1.25 + 200.0 * 10.0);
    // more cached than prompt tokens: no fresh ones (max(prompt - cached, 0))
    assert_eq!(p.cost(10, 0, 40), 40.0 * 1.25);
    // no cached price: cached tokens at the input price
    let plain = Price { cached_input: None, ..p };
    assert_eq!(plain.cost(1000, 0, 400), 1000.0 * 2.5);
    // the extremes do not overflow the subtraction
    assert_eq!(plain.cost(i64::MIN, 0, i64::MAX), i64::MAX as f64 * 2.5);
    // 0.1 * 3 is 0.30000000000000004 in f64, as in Python: the sum is not rounded before the ceil
    let tenth = Price { input: 0.1, output: 0.0, cached_input: None };
    assert_eq!(tenth.cost(3, 0, 0), 0.1 * 3.0);
}

#[test]
fn telemetry_catalog_prices_deployments_and_names_providers() {
    let mut c = Catalog::default();
    c.set_prices([("east", Some(Price { input: 2.5, output: 10.0, cached_input: None })), ("odd", None)]);
    c.set_providers([("up", "openai")]);
    // math.ceil of 7 * 2.5 + 3 * 10 = 47.5
    assert_eq!(c.micro("east", 7, 3, 0), Some(48.0));
    assert_eq!(c.micro("odd", 7, 3, 0), None, "known to have no price");
    assert_eq!(c.micro("nowhere", 7, 3, 0), None, "unknown: no price");
    assert_eq!(c.micro("east", 0, 0, 0), Some(0.0));
    assert_eq!((c.provider("up"), c.provider("other")), ("openai", ""));
    assert_eq!((c.prices_len(), c.providers_len()), (2, 1));
    c.set_prices([]);
    assert_eq!((c.micro("east", 7, 3, 0), c.prices_len()), (None, 0));
}

#[test]
fn telemetry_derived_timings_follow_python() {
    use request::{overhead, py_max0, seconds_of_ns, wall_start_ns};
    // max(x, 0.0) keeps x unless 0.0 > x: -0.0 and NaN stay as they are
    assert_eq!(py_max0(-1.0), 0.0);
    assert!(py_max0(-0.0).is_sign_negative());
    assert!(py_max0(f64::NAN).is_nan());
    assert_eq!(overhead(10.0, 9.0, 0.25, 0.5), 10.0 - 9.0 - 0.25 - 0.5);
    assert_eq!(overhead(10.0, 9.0, 2.0, 0.0), 0.0);
    // now_ns - int((now - started) * 1e9): int() truncates toward zero
    // (values from CPython: (5.0 - 4.9999999975) * 1e9 == 2.5000002068509275)
    assert_eq!(wall_start_ns(1_000_000_000_000, 5.0, 4.9999999975), 1_000_000_000_000 - 2);
    assert_eq!(wall_start_ns(1_000, 5.0, 5.0000000025), 1_000 + 2);
    assert_eq!(wall_start_ns(1_000_000_000_000, 5.0, 4.5), 1_000_000_000_000 - 500_000_000);
    // _PyTime_AsSecondsDouble: whole seconds exactly, else ns / 1e9
    assert_eq!(seconds_of_ns(3_000_000_000), 3.0);
    assert_eq!(seconds_of_ns(123_456_789_012_345), 123_456_789_012_345_f64 / 1e9);
    let (wall, mono) = request::now();
    let (wall2, mono2) = request::now();
    assert!(wall > 1_700_000_000_000_000_000 && mono > 0.0 && wall2 >= wall && mono2 >= mono);
}
