//! PII and secret detection: one `RegexSet` pass says which candidate patterns occur at all (a
//! prompt without PII costs that one pass), then only those patterns are run for their spans,
//! each candidate is checked (boundaries, checksums: validators.rs) and overlaps are resolved
//! (longest wins, then the more specific type).
//!
//! The pattern strings are written in the subset Python's `re` and the `regex` crate read alike;
//! `llmgw/guardrails/detect.py` compiles the same table (via `PiiDetector.patterns()`) for the
//! pure-Python reference the benchmark and the agreement test measure against.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::validators;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiType {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Secret,
}

impl PiiType {
    pub const ALL: [PiiType; 7] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::Card,
        PiiType::Iban,
        PiiType::Ssn,
        PiiType::Ip,
        PiiType::Secret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PiiType::Email => "email",
            PiiType::Phone => "phone",
            PiiType::Card => "card",
            PiiType::Iban => "iban",
            PiiType::Ssn => "ssn",
            PiiType::Ip => "ip",
            PiiType::Secret => "secret",
        }
    }

    pub fn from_name(name: &str) -> Option<PiiType> {
        PiiType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Overlap tie-break after length: a secret beats an IBAN beats a card, and so on.
    fn priority(self) -> u8 {
        match self {
            PiiType::Secret => 0,
            PiiType::Iban => 1,
            PiiType::Card => 2,
            PiiType::Email => 3,
            PiiType::Ssn => 4,
            PiiType::Phone => 5,
            PiiType::Ip => 6,
        }
    }
}

/// One candidate pattern. `max_len` bounds a match (chars); `None` marks an open-ended token
/// (long API keys, JWTs, PEM blocks) that `open_block` covers for streams instead.
pub struct Pattern {
    pub ty: PiiType,
    pub name: &'static str,
    pub regex: &'static str,
    pub max_len: Option<usize>,
}

const fn pat(
    ty: PiiType,
    name: &'static str,
    regex: &'static str,
    max_len: Option<usize>,
) -> Pattern {
    Pattern {
        ty,
        name,
        regex,
        max_len,
    }
}

use PiiType::*;

/// The candidate patterns. A pattern with a group named `v` reports that group's span.
#[rustfmt::skip]
pub static PATTERNS: &[Pattern] = &[
    pat(Email, "email", r#"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"#, Some(254)),
    pat(Phone, "phone_intl", r#"(?:\+[1-9][0-9]{0,2}|\(\+[1-9][0-9]{0,2}\))(?:[ .\-]?\(0\))?(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5}))+"#, Some(32)),
    pat(Phone, "phone_nanp", r#"(?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}"#, Some(17)),
    pat(Phone, "phone_trunk", r#"0[1-9][0-9]{0,4}(?: [0-9]{2,6}){1,4}|0[1-9][0-9]{0,3}-[0-9]{2,4}-[0-9]{4}|\(0?[1-9][0-9]{0,3}\) ?[0-9]{3,5}[ \-]?[0-9]{4}"#, Some(24)),
    pat(Card, "card", r#"[0-9]{4}(?: [0-9]{4}){3}(?: [0-9]{1,3})?|[0-9]{4}(?:-[0-9]{4}){3}(?:-[0-9]{1,3})?|[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5}|[0-9]{13,19}"#, Some(23)),
    pat(Iban, "iban", r#"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"#, Some(42)),
    pat(Ssn, "ssn", r#"[0-9]{3}-[0-9]{2}-[0-9]{4}"#, Some(11)),
    pat(Ip, "ipv4", r#"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"#, Some(15)),
    pat(Ip, "ipv6", r#"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*"#, Some(45)),
    pat(Secret, "openai", r#"sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"#, None),
    pat(Secret, "anthropic", r#"sk-ant-[a-z]+[0-9]{2}-[A-Za-z0-9_\-]{20,}"#, None),
    pat(Secret, "aws", r#"(?:AKIA|ASIA)[A-Z0-9]{16}"#, Some(20)),
    pat(Secret, "google", r#"AIza[A-Za-z0-9_\-]{35}"#, Some(39)),
    pat(Secret, "github", r#"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"#, None),
    pat(Secret, "slack", r#"xox[baprs]-[0-9]{8,14}-[0-9]{8,14}(?:-[0-9]{8,14})?-[A-Za-z0-9]{20,40}"#, None),
    pat(Secret, "stripe", r#"[sr]k_live_[A-Za-z0-9]{16,}"#, None),
    pat(Secret, "gitlab", r#"glpat-[A-Za-z0-9_\-]{20,}"#, None),
    pat(Secret, "huggingface", r#"hf_[A-Za-z0-9]{30,}"#, None),
    pat(Secret, "slack_app", r#"xapp-[0-9]-[A-Z0-9]{8,}-[0-9]{8,}-[a-f0-9]{32,}"#, None),
    pat(Secret, "slack_webhook", r#"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"#, None),
    pat(Secret, "aws_secret", r#"(?i:aws_secret_access_key|aws_secret_key|secret_access_key)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?(?P<v>[A-Za-z0-9/+]{40})"#, Some(72)),
    pat(Secret, "jwt", r#"eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,}"#, None),
    pat(Secret, "pem", r#"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.)*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"#, None),
];

/// Where an open-ended secret token can begin: a stream holds from here while the token still
/// runs to the end of the text (see `open_block`).
#[rustfmt::skip]
pub static OPEN_PREFIXES: &[&str] = &[
    "sk-", "sk_live_", "rk_live_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xoxb-",
    "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xapp-", "glpat-", "hf_", "eyJ", "https://hooks.slack.com/",
];
/// The longest marker a stream must see whole before `open_block` can recognise it
/// ("-----BEGIN ENCRYPTED PRIVATE KEY-----" is 37 chars).
pub const MARKER_SPAN: usize = 48;
const PEM_BEGIN: &str = "-----BEGIN ";

/// Rust-regex dialect of a shared pattern: ASCII-only case folding, as Python's re.ASCII does.
pub fn rust_dialect(p: &str) -> String {
    p.replace("(?i:", "(?i-u:")
        .replace(r"\b", r"(?-u:\b)")
        .replace(r"\s", r"(?-u:\s)")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub ty: PiiType,
    pub start: usize,
    pub end: usize,
}

pub struct PiiDetector {
    /// indices into PATTERNS, parallel to `regexes` and to the set's patterns
    active: Vec<usize>,
    set: RegexSet,
    regexes: Vec<(Regex, bool)>,
    max_span: usize,
    secrets: bool,
}

impl PiiDetector {
    pub fn new(types: &[PiiType]) -> PiiDetector {
        let active: Vec<usize> = (0..PATTERNS.len())
            .filter(|&i| types.contains(&PATTERNS[i].ty))
            .collect();
        let sources: Vec<String> = active
            .iter()
            .map(|&i| rust_dialect(PATTERNS[i].regex))
            .collect();
        let set = RegexSetBuilder::new(&sources)
            .build()
            .expect("PII patterns compile");
        let regexes = sources
            .iter()
            .map(|s| {
                let re = RegexBuilder::new(s).build().expect("PII pattern compiles");
                let has_v = re.capture_names().any(|n| n == Some("v"));
                (re, has_v)
            })
            .collect();
        let secrets = types.contains(&Secret);
        let mut max_span = active
            .iter()
            .filter_map(|&i| PATTERNS[i].max_len)
            .max()
            .unwrap_or(0);
        if secrets {
            max_span = max_span.max(MARKER_SPAN);
        }
        PiiDetector {
            active,
            set,
            regexes,
            max_span,
            secrets,
        }
    }

    pub fn max_span(&self) -> usize {
        self.max_span
    }

    /// Validated, non-overlapping matches sorted by start, in byte offsets.
    pub fn find(&self, text: &str) -> Vec<Match> {
        let hits = self.set.matches(text);
        if !hits.matched_any() {
            return Vec::new();
        }
        let mut cands: Vec<Match> = Vec::new();
        for k in hits.iter() {
            let spec = &PATTERNS[self.active[k]];
            let (re, has_v) = &self.regexes[k];
            if *has_v {
                for c in re.captures_iter(text) {
                    if let Some(v) = c.name("v") {
                        if let Some((s, e)) = check(spec.name, text, v.start(), v.end()) {
                            cands.push(Match {
                                ty: spec.ty,
                                start: s,
                                end: e,
                            });
                        }
                    }
                }
            } else {
                for m in re.find_iter(text) {
                    if let Some((s, e)) = check(spec.name, text, m.start(), m.end()) {
                        cands.push(Match {
                            ty: spec.ty,
                            start: s,
                            end: e,
                        });
                    }
                }
            }
        }
        resolve(text, cands)
    }

    /// Byte offset where an unterminated private-key block or an open-ended secret token still
    /// running at the end of `text` begins, else None.
    pub fn open_block(&self, text: &str) -> Option<usize> {
        if !self.secrets {
            return None;
        }
        let mut best: Option<usize> = None;
        if let Some(b) = text.rfind(PEM_BEGIN) {
            let rest = &text[b..];
            let header_end = rest.find("PRIVATE KEY");
            if let Some(h) = header_end {
                let after = &rest[h..];
                if !after.contains("-----END ") {
                    best = Some(b);
                }
            } else if rest.len() < MARKER_SPAN {
                // the BEGIN line itself is still arriving
                best = Some(b);
            }
        }
        // the run of token characters that reaches the end of the text
        let bytes = text.as_bytes();
        let mut i = bytes.len();
        while i > 0 && is_token_byte(bytes[i - 1]) {
            i -= 1;
        }
        if i < bytes.len() {
            let run = &text[i..];
            for p in OPEN_PREFIXES {
                let mut from = 0;
                while let Some(k) = run[from..].find(p) {
                    let at = i + from + k;
                    if at == 0 || !is_word(bytes[at - 1]) {
                        best = Some(best.map_or(at, |b| b.min(at)));
                        break;
                    }
                    from += k + 1;
                }
            }
        }
        best
    }
}

fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b':' | b'+')
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn at(t: &[u8], i: isize) -> Option<u8> {
    if i < 0 || i as usize >= t.len() {
        None
    } else {
        Some(t[i as usize])
    }
}

fn is_digit(c: Option<u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// Digits must not continue into a longer number: no word char beside the match, and no
/// `-`, `.` or `/` leading on to more digits.
fn num_bounds_ok(t: &[u8], i: usize, j: usize) -> bool {
    let (i, j) = (i as isize, j as isize);
    let b = at(t, i - 1);
    let a = at(t, j);
    if b.is_some_and(|c| is_word(c) || c == b'+') {
        return false;
    }
    if matches!(b, Some(b'-' | b'.' | b'/')) && is_digit(at(t, i - 2)) {
        return false;
    }
    if a.is_some_and(is_word) {
        return false;
    }
    if matches!(a, Some(b'-' | b'.' | b'/')) && is_digit(at(t, j + 1)) {
        return false;
    }
    true
}

const NET_WORDS: &[&str] = &[
    "ip", "dns", "address", "host", "ping", "server", "route", "gateway", "resolver", "subnet",
];

/// The candidate's accepted span, possibly trimmed, or None.
pub fn check(name: &str, text: &str, i: usize, j: usize) -> Option<(usize, usize)> {
    let t = text.as_bytes();
    let s = &t[i..j];
    let count_digits = |s: &[u8]| s.iter().filter(|c| c.is_ascii_digit()).count();
    match name {
        "email" => {
            let at_pos = s.iter().position(|&c| c == b'@')?;
            let (mut local, dom) = (&s[..at_pos], &s[at_pos + 1..]);
            let mut i = i;
            while local.first() == Some(&b'.') {
                local = &local[1..];
                i += 1;
            }
            let b = at(t, i as isize - 1);
            if b == Some(b':') {
                // userinfo of a URL (scheme://user:pass@host) is not an address
                let tok_start = t[..i]
                    .iter()
                    .rposition(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                    .map_or(0, |p| p + 1);
                if t[tok_start..i].windows(3).any(|w| w == b"://") {
                    return None;
                }
            }
            if at(t, j as isize) == Some(b':')
                && !matches!(at(t, j as isize + 1), None | Some(b' ' | b'\n'))
            {
                return None; // git@host:path
            }
            if local.is_empty()
                || local.len() > 64
                || local.ends_with(b".")
                || local.windows(2).any(|w| w == b"..")
            {
                return None;
            }
            if dom
                .split(|&c| c == b'.')
                .any(|l| l.is_empty() || l[0] == b'-' || l[l.len() - 1] == b'-')
            {
                return None;
            }
            if j - i > 254 {
                return None;
            }
            Some((i, j))
        }
        "phone_intl" => {
            if !num_bounds_ok(t, i, j) || j - i > 32 {
                return None;
            }
            (8..=15).contains(&count_digits(s)).then_some((i, j))
        }
        "phone_nanp" | "phone_trunk" => {
            if !num_bounds_ok(t, i, j) {
                return None;
            }
            let (ii, jj) = (i as isize, j as isize);
            if at(t, ii - 1) == Some(b' ') && is_digit(at(t, ii - 2)) {
                return None;
            }
            if at(t, jj) == Some(b' ') && is_digit(at(t, jj + 1)) {
                return None;
            }
            if name == "phone_trunk" {
                if !(9..=11).contains(&count_digits(s)) {
                    return None;
                }
                let spaces = s.iter().filter(|&&c| c == b' ').count();
                let dashes = s.iter().filter(|&&c| c == b'-').count();
                if s[0] != b'(' && spaces < 1 && dashes < 2 {
                    return None;
                }
            }
            Some((i, j))
        }
        "card" => {
            // "DE89 3704 0044 ..." is an IBAN's tail, not a card
            if !num_bounds_ok(t, i, j)
                || (at(t, i as isize - 1) == Some(b' ') && is_digit(at(t, i as isize - 2)))
            {
                return None;
            }
            let n = count_digits(s);
            ((13..=19).contains(&n) && s[0] != b'0' && validators::luhn(s)).then_some((i, j))
        }
        "iban" => {
            if at(t, i as isize - 1).is_some_and(is_word) {
                return None;
            }
            let len = validators::iban_length(&s[..2])?;
            let mut k = 0;
            let mut cut = None;
            for (x, &c) in s.iter().enumerate() {
                if c != b' ' {
                    k += 1;
                    if k == len {
                        cut = Some(x + 1);
                        break;
                    }
                }
            }
            let cut = cut?;
            if cut < s.len() && s[cut] != b' ' {
                return None;
            }
            let j = i + cut;
            if at(t, j as isize).is_some_and(is_word) {
                return None;
            }
            validators::iban(&t[i..j]).then_some((i, j))
        }
        "ssn" => (num_bounds_ok(t, i, j) && validators::ssn(s)).then_some((i, j)),
        "ipv4" => {
            let (ii, jj) = (i as isize, j as isize);
            if at(t, ii - 1).is_some_and(|c| is_word(c) || c == b'.') {
                return None;
            }
            if at(t, jj).is_some_and(is_word) {
                return None;
            }
            if at(t, jj) == Some(b'.') && is_digit(at(t, jj + 1)) {
                return None;
            }
            let octets: Vec<u32> = s
                .split(|&c| c == b'.')
                .map(|p| p.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32))
                .collect();
            let all_same = octets.iter().all(|&o| o == octets[0]);
            if octets[0] < 10 && octets.iter().all(|&o| o < 32) && !all_same {
                // 4.2.1.7 is a section number unless the text around says otherwise
                let start = text[..i]
                    .char_indices()
                    .rev()
                    .take(40)
                    .last()
                    .map_or(i, |(p, _)| p);
                let window = text[start..i].to_ascii_lowercase();
                if !NET_WORDS.iter().any(|w| window.contains(w)) {
                    return None;
                }
            }
            Some((i, j))
        }
        "ipv6" => {
            if at(t, i as isize - 1).is_some_and(|c| is_word(c) || c == b':' || c == b'.') {
                return None;
            }
            let mut j = j;
            while j > i && t[j - 1] == b'.' {
                j -= 1;
            }
            let s = &t[i..j];
            if at(t, j as isize).is_some_and(is_word) {
                return None;
            }
            if !s.iter().any(u8::is_ascii_digit) || j - i > 45 {
                return None;
            }
            if validators::ipv6(s) {
                return Some((i, j));
            }
            if s.ends_with(b":") && !s.ends_with(b"::") && validators::ipv6(&s[..s.len() - 1]) {
                return Some((i, j - 1));
            }
            None
        }
        "aws_secret" => Some((i, j)),
        _ => {
            // secret tokens: a word of their own
            let b = at(t, i as isize - 1);
            if b.is_some_and(|c| is_word(c) || c == b'-') {
                return None;
            }
            let a = at(t, j as isize);
            if name != "pem" && a.is_some_and(|c| is_word(c) || c == b'-') {
                return None;
            }
            let body: &[u8] = match name {
                "openai" | "anthropic" => &s[3..],
                "stripe" => &s[8..],
                _ => return Some((i, j)),
            };
            let mixed = body.iter().any(u8::is_ascii_digit)
                && body.iter().any(u8::is_ascii_uppercase)
                && body.iter().any(u8::is_ascii_lowercase);
            mixed.then_some((i, j))
        }
    }
}

/// Longest first, then type priority, then position; keep what does not overlap a kept match.
fn resolve(text: &str, mut cands: Vec<Match>) -> Vec<Match> {
    if cands.len() > 1 {
        let ascii = text.is_ascii();
        let len = |m: &Match| {
            if ascii {
                m.end - m.start
            } else {
                text[m.start..m.end].chars().count()
            }
        };
        cands.sort_by(|a, b| {
            len(b)
                .cmp(&len(a))
                .then(a.ty.priority().cmp(&b.ty.priority()))
                .then(a.start.cmp(&b.start))
        });
    }
    let mut out: Vec<Match> = Vec::with_capacity(cands.len());
    for c in cands {
        if out.iter().all(|o| c.end <= o.start || c.start >= o.end) {
            out.push(c);
        }
    }
    out.sort_by_key(|m| m.start);
    out
}
