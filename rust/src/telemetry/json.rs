//! The JSON access-log line: the object `accesslog.json_fields(record)` gives, byte for byte what
//! orjson writes for it, and the bounded buffer the lines wait in.

use std::fmt::{self, Write as _};

use super::{Finish, TraceId};

/// An i64 as decimal text on the stack (a status code as a label without allocating).
pub struct IntBuf {
    buf: [u8; 20],
}

impl IntBuf {
    pub fn new() -> Self {
        IntBuf { buf: [0; 20] }
    }

    pub fn format(&mut self, value: i64) -> &str {
        let mut n = value.unsigned_abs();
        let mut i = self.buf.len();
        loop {
            i -= 1;
            self.buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if value < 0 {
            i -= 1;
            self.buf[i] = b'-';
        }
        std::str::from_utf8(&self.buf[i..]).expect("ASCII digits")
    }
}

impl Default for IntBuf {
    fn default() -> Self {
        IntBuf::new()
    }
}

/// 0: copy; b'u': \u00XX; else the letter after the backslash (orjson's choices).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `s` as a JSON string: quotes, backslashes and control characters escaped, everything else
/// (non-ASCII included) copied as UTF-8 — what orjson writes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(IntBuf::new().format(value).as_bytes());
}

/// Text on the stack through `fmt::Write` (a float's digits).
struct StackText {
    buf: [u8; 40],
    len: usize,
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A float as orjson spells it (ryu's layout): the shortest digits that read back as the same
/// float; plain decimals for 1e-5 <= |x| < 1e16 ("0.00001", "1000000000000000.0", "3.0"),
/// exponents outside ("1e-6", "1.5e16"); always a float literal, so it loads as a float.
/// NaN and infinities are written as null, as orjson does.
pub fn write_f64(out: &mut Vec<u8>, x: f64) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if x.is_sign_negative() {
        out.push(b'-');
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "d.ddde-7"
    let mut text = StackText { buf: [0; 40], len: 0 };
    write!(text, "{:e}", x.abs()).expect("a float fits in 40 bytes");
    let s = &text.buf[..text.len];
    let e_at = s.iter().position(|&b| b == b'e').expect("exponent");
    let (mantissa, exp) = (&s[..e_at], &s[e_at + 1..]);
    let exp: i32 = std::str::from_utf8(exp).expect("ASCII").parse().expect("exponent");
    let mut digits = [0u8; 20];
    let mut n = 0;
    for &b in mantissa {
        if b != b'.' {
            digits[n] = b;
            n += 1;
        }
    }
    let digits = &digits[..n];
    let length = n as i32;
    let kk = exp + 1; // the decimal point sits after kk digits
    let k = kk - length;
    if 0 <= k && kk <= 16 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', k as usize));
        out.extend_from_slice(b".0");
    } else if 0 < kk && kk <= 16 {
        out.extend_from_slice(&digits[..kk as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[kk as usize..]);
    } else if -5 < kk && kk <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-kk) as usize));
        out.extend_from_slice(digits);
    } else {
        out.push(digits[0]);
        if length > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        write_int(out, (kk - 1) as i64);
    }
}

/// Python's `round(x, 3)`: the exact binary value rounded to 3 decimals (ties to even), read
/// back as the nearest float.
pub fn round3(x: f64) -> f64 {
    match thousandths(x) {
        Some(n) => n / 1000.0, // n exact: one correctly rounded division is the float nearest "n/1000"
        None => round3_exact(x),
    }
}

/// `x * 1000` rounded to an integer (as a float, -0.0 kept) the way `round(x, 3)` rounds, when
/// that can be decided in float arithmetic: t = x * 1000 is within half an ulp of the exact
/// product, so unless the product is near a tie (.5) — about one value in 10^10 — rounding t
/// gives the integer the exact rounding gives. None: near a tie, too large, or not finite.
#[inline]
fn thousandths(x: f64) -> Option<f64> {
    const LIMIT: f64 = 4_503_599_627_370_496.0; // 2^52: t's fraction is exact below
    let t = x * 1000.0;
    if t.is_nan() || t.abs() >= LIMIT {
        return None;
    }
    let frac = t - t.floor();
    let margin = t.abs() * f64::EPSILON * 2.0 + f64::EPSILON;
    if (frac - 0.5).abs() > margin {
        Some(t.round())
    } else {
        None
    }
}

/// Near a tie: exact decimal formatting (Rust's `{:.3}` rounds the exact value, ties to even,
/// like Python's dtoa) and a parse.
#[cold]
pub fn round3_exact(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.3}").parse().expect("a formatted float parses")
}

/// `accesslog._ms`: seconds as milliseconds rounded to 3 decimals.
#[inline]
pub fn ms(seconds: f64) -> f64 {
    round3(seconds * 1000.0)
}

/// `ms(seconds)` as orjson writes it, straight from the integer thousandths instead of dividing
/// and finding the shortest float spelling (this and the hand-written timestamp took a line
/// from 0.78 to 0.43 µs, `telemetry_cost`). Below 4e12 ms a float's ulp is under 0.001, so no
/// other decimal of at most 3 decimals reads back as the same float: the shortest spelling is
/// the decimal n/1000 itself, trailing zeros trimmed ("790.0", "0.457", "-0.0").
pub fn write_ms(out: &mut Vec<u8>, seconds: f64) {
    let y = seconds * 1000.0;
    match thousandths(y) {
        Some(r) if r.abs() < 4e15 => {
            if r.is_sign_negative() {
                out.push(b'-');
            }
            let n = r.abs() as u64;
            write_int(out, (n / 1000) as i64);
            out.push(b'.');
            let frac = n % 1000;
            let digits = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
            let keep = if frac.is_multiple_of(100) {
                1
            } else if frac.is_multiple_of(10) {
                2
            } else {
                3
            };
            out.extend_from_slice(&digits[..keep]);
        }
        _ => write_f64(out, round3(y)),
    }
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `datetime.fromtimestamp(start_ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")`,
/// e.g. "2025-10-09T08:53:20.123+00:00", reproducing Python's float steps: ns / 1e9 as a float,
/// split into seconds and microseconds rounded half to even (CPython's
/// `_PyTime_DoubleToDenominator`), milliseconds truncated from the microseconds.
pub fn write_ts(out: &mut Vec<u8>, start_ns: i64) {
    let t = start_ns as f64 / 1e9;
    let int_part = t.trunc();
    let mut micros = ((t - int_part) * 1e6).round_ties_even();
    let mut secs = int_part;
    if micros >= 1e6 {
        micros -= 1e6;
        secs += 1.0;
    } else if micros < 0.0 {
        micros += 1e6;
        secs -= 1.0;
    }
    let secs = secs as i64;
    let millis = micros as i64 / 1000;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut text = *b"0000-00-00T00:00:00.000+00:00";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    // years 1677..2262 for an i64 of nanoseconds: always 4 digits
    put(0, 4, year);
    put(5, 2, i64::from(month));
    put(8, 2, i64::from(day));
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 3, millis);
    out.extend_from_slice(&text);
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out.push(b'"');
}

/// `,"key":` — `key` is a literal that needs no escaping.
#[inline]
fn key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

#[inline]
fn opt_str(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        key(out, name);
        write_str(out, v);
    }
}

/// The JSON object of `accesslog.json_fields(record)` (no newline): same keys in the same
/// order, None values left out at the top level (inside "attempt_list" a missing status or
/// error is null, as there).
pub fn write_json_line(out: &mut Vec<u8>, r: &Finish<'_>) {
    out.extend_from_slice(b"{\"ts\":\"");
    write_ts(out, r.start_ns);
    out.push(b'"');
    key(out, "request_id");
    write_str(out, r.request_id);
    key(out, "method");
    write_str(out, r.method);
    key(out, "path");
    write_str(out, r.path);
    key(out, "status");
    write_int(out, r.status);
    key(out, "result");
    write_str(out, r.result);
    key(out, "kind");
    write_str(out, r.kind);
    opt_str(out, "model", r.model);
    opt_str(out, "model_group", r.group);
    opt_str(out, "deployment", r.deployment);
    opt_str(out, "provider", r.provider);
    opt_str(out, "key_id", r.key_id);
    opt_str(out, "key_name", r.key_name);
    opt_str(out, "user", r.user);
    opt_str(out, "team", r.team);
    key(out, "prompt_tokens");
    write_int(out, r.prompt_tokens);
    key(out, "completion_tokens");
    write_int(out, r.completion_tokens);
    if r.cached_tokens != 0 {
        key(out, "cached_tokens");
        write_int(out, r.cached_tokens);
    }
    if r.usage_estimated {
        key(out, "usage_estimated");
        out.extend_from_slice(b"true");
    }
    if let Some(cost) = r.cost_usd {
        key(out, "cost_usd");
        write_f64(out, cost);
    }
    key(out, "latency_ms");
    write_ms(out, r.duration_s);
    if let (true, Some(ttfb)) = (r.stream, r.ttfb_s) {
        key(out, "ttft_ms");
        write_ms(out, ttfb);
    }
    key(out, "upstream_ms");
    write_ms(out, r.upstream_s);
    key(out, "overhead_ms");
    write_ms(out, r.overhead_s);
    opt_str(out, "cache", r.cache);
    key(out, "stream");
    out.extend_from_slice(if r.stream { b"true" } else { b"false" });
    key(out, "attempts");
    write_int(out, r.attempts.len() as i64);
    opt_str(out, "error_code", r.error_code);
    match r.trace_id {
        Some(TraceId::Hex(hex)) if !hex.is_empty() => {
            key(out, "trace_id");
            write_str(out, hex);
        }
        Some(TraceId::Raw(raw)) if !raw.is_empty() => {
            key(out, "trace_id");
            write_hex(out, raw);
        }
        _ => {}
    }
    if r.attempts.len() > 1 {
        key(out, "attempt_list");
        out.push(b'[');
        for (i, a) in r.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"deployment\":");
            write_str(out, a.deployment);
            out.extend_from_slice(b",\"status\":");
            match a.status {
                Some(s) => write_int(out, s),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"error\":");
            match a.error_code {
                Some(e) => write_str(out, e),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"ms\":");
            write_ms(out, a.seconds);
            out.extend_from_slice(b",\"via\":");
            write_str(out, a.via);
            if a.retry {
                out.extend_from_slice(b",\"retry\":true");
            }
            if a.hedge {
                out.extend_from_slice(b",\"hedge\":true");
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    if let Some(input) = r.input_json {
        key(out, "input");
        out.extend_from_slice(input);
    }
    opt_str(out, "output", r.output);
    out.push(b'}');
}

// --- the line buffer -----------------------------------------------------------------------------------

/// Access-log lines waiting to be written ("\n" after each), at most `max_bytes`: a line that
/// would pass it is dropped and counted (the log falls behind, the gateway does not).
#[derive(Debug, Clone)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max_bytes: usize,
    /// Lines dropped because the buffer was full.
    pub dropped: u64,
    /// Lines appended (not dropped) since creation.
    pub lines: u64,
}

impl LineBuffer {
    pub fn new(max_bytes: usize) -> Self {
        LineBuffer { buf: Vec::new(), max_bytes, dropped: 0, lines: 0 }
    }

    pub fn push(&mut self, r: &Finish<'_>) {
        let start = self.buf.len();
        write_json_line(&mut self.buf, r);
        self.buf.push(b'\n');
        if self.buf.len() > self.max_bytes {
            self.buf.truncate(start);
            self.dropped += 1;
            if self.buf.capacity() > self.max_bytes.saturating_mul(2) {
                self.buf.shrink_to(self.max_bytes); // one huge line must not pin its size
            }
        } else {
            self.lines += 1;
        }
    }

    /// The buffered lines.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The memory the buffer holds now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
