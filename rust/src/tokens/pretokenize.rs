//! Hand-written pre-tokenisers equal to tiktoken's o200k_base and cl100k_base regexes.
//!
//! Why not a regex engine: on ~1 KB English prompts tiktoken spends most of its ~38 µs in
//! fancy-regex's pre-tokenisation; a direct scanner over a class table is several times faster
//! and, having no backtracking, linear in the input on every input (each alternative scans a run
//! once and the piece then consumes that run).
//!
//! Each `*_piece_end` returns where the regex's leftmost-first match starting at `p` ends. The
//! alternatives are tried in the regex's order, and within one alternative the quantifiers take
//! the path a backtracking engine would take first; the comments give the regex fragment.
//! Every character starts some alternative, so the pieces tile the text.

use super::char_class::{class_at, LETTER, LOWERISH, NEWLINE, NUMBER, SPACE, UPPERISH};

/// o200k_base:
/// ```text
/// [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
/// |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
/// |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// ```
pub fn for_each_o200k_piece<'a>(text: &'a str, mut on_piece: impl FnMut(&'a [u8])) {
    let t = text.as_bytes();
    let mut p = 0;
    while p < t.len() {
        let end = o200k_piece_end(t, p);
        on_piece(&t[p..end]);
        p = end;
    }
}

/// cl100k_base (tiktoken ≥ 0.8 form, with possessive quantifiers):
/// ```text
/// '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
/// |\s++$|\s*[\r\n]|\s+(?!\S)|\s
/// ```
pub fn for_each_cl100k_piece<'a>(text: &'a str, mut on_piece: impl FnMut(&'a [u8])) {
    let t = text.as_bytes();
    let mut p = 0;
    while p < t.len() {
        let end = cl100k_piece_end(t, p);
        on_piece(&t[p..end]);
        p = end;
    }
}

/// `[^\r\n\p{L}\p{N}]`: the optional one-character prefix of a word.
#[inline(always)]
fn is_word_prefix(flags: u8) -> bool {
    flags & (NEWLINE | LETTER | NUMBER) == 0
}

/// `[^\s\p{L}\p{N}]`: punctuation, symbols, controls (other than whitespace), marks, ...
#[inline(always)]
fn is_symbol(flags: u8) -> bool {
    flags & (SPACE | LETTER | NUMBER) == 0
}

/// End of the run of characters having any of `mask`, starting at `p`.
#[inline(always)]
fn run_end(t: &[u8], mut p: usize, mask: u8) -> usize {
    loop {
        let (flags, len) = class_at(t, p);
        if len == 0 || flags & mask == 0 {
            return p;
        }
        p += len;
    }
}

fn o200k_piece_end(t: &[u8], p: usize) -> usize {
    let (f0, len0) = class_at(t, p);
    // Alternatives 1 and 2: a word, optionally with one prefix character.
    let prefixed = is_word_prefix(f0);
    if prefixed {
        if let Some(end) = cased_word_lower_tail(t, p + len0) {
            return contraction_end(t, end);
        }
    }
    if let Some(end) = cased_word_lower_tail(t, p) {
        return contraction_end(t, end);
    }
    if prefixed {
        if let Some(end) = cased_word_upper_head(t, p + len0) {
            return contraction_end(t, end);
        }
    }
    if let Some(end) = cased_word_upper_head(t, p) {
        return contraction_end(t, end);
    }
    // \p{N}{1,3}
    if f0 & NUMBER != 0 {
        return numbers_end(t, p);
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n/]*
    if let Some(end) = symbols_end(t, p) {
        let mut e = end;
        while matches!(t.get(e), Some(b'\r' | b'\n' | b'/')) {
            e += 1;
        }
        return e;
    }
    whitespace_end(t, p, f0, len0, false)
}

/// `[UPPERISH]*[LOWERISH]+` at `q` as a backtracking engine matches it: the upper run is taken
/// whole if a lower-ish character follows it; otherwise it gives back characters until its last
/// lower-ish one (Lm/Lo/M are in both classes), which alone forms the `+`.
#[inline(always)]
fn cased_word_lower_tail(t: &[u8], q: usize) -> Option<usize> {
    let mut p = q;
    let mut last_lowerish: Option<usize> = None;
    loop {
        let (flags, len) = class_at(t, p);
        if len == 0 || flags & UPPERISH == 0 {
            if len != 0 && flags & LOWERISH != 0 {
                return Some(run_end(t, p, LOWERISH));
            }
            return last_lowerish;
        }
        if flags & LOWERISH != 0 {
            last_lowerish = Some(p + len);
        }
        p += len;
    }
}

/// `[UPPERISH]+[LOWERISH]*` at `q`.
#[inline(always)]
fn cased_word_upper_head(t: &[u8], q: usize) -> Option<usize> {
    let upper_end = run_end(t, q, UPPERISH);
    (upper_end > q).then(|| run_end(t, upper_end, LOWERISH))
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` after a word ending at `e`.
#[inline(always)]
fn contraction_end(t: &[u8], e: usize) -> usize {
    contraction_len(t, e).map_or(e, |len| e + len)
}

/// Length of `'(?i:[sdmt]|ll|ve|re)` at `e`, if there is one. Case folding in the regex crate
/// maps `s` to `S` and to U+017F LATIN SMALL LETTER LONG S (UTF-8 C5 BF) as well.
#[inline(always)]
fn contraction_len(t: &[u8], e: usize) -> Option<usize> {
    if t.get(e) != Some(&b'\'') {
        return None;
    }
    let lower = |i: usize| t.get(e + i).map(|b| b.to_ascii_lowercase());
    match lower(1)? {
        b's' | b'd' | b'm' | b't' => Some(2),
        0xc5 if t.get(e + 2) == Some(&0xbf) => Some(3),
        b'l' if lower(2) == Some(b'l') => Some(3),
        b'v' | b'r' if lower(2) == Some(b'e') => Some(3),
        _ => None,
    }
}

/// `\p{N}{1,3}` at `p` (the caller checked the first character is a number).
#[inline(always)]
fn numbers_end(t: &[u8], mut p: usize) -> usize {
    for _ in 0..3 {
        let (flags, len) = class_at(t, p);
        if len == 0 || flags & NUMBER == 0 {
            break;
        }
        p += len;
    }
    p
}

/// ` ?[^\s\p{L}\p{N}]+` at `p`: the optional space is only kept if a symbol follows it, and
/// without it the space itself (being `\s`) cannot start the run.
#[inline(always)]
fn symbols_end(t: &[u8], p: usize) -> Option<usize> {
    let q = if t[p] == b' ' { p + 1 } else { p };
    let mut e = q;
    loop {
        let (flags, len) = class_at(t, e);
        if len == 0 || !is_symbol(flags) {
            break;
        }
        e += len;
    }
    (e > q).then_some(e)
}

/// The whitespace alternatives, starting at a whitespace character `p`.
/// o200k: `\s*[\r\n]+|\s+(?!\S)|\s+`; cl100k: `\s++$|\s*[\r\n]|\s+(?!\S)|\s`.
fn whitespace_end(t: &[u8], p: usize, f0: u8, len0: usize, cl100k: bool) -> usize {
    debug_assert!(
        f0 & SPACE != 0,
        "every non-space character matched an earlier alternative"
    );
    let mut e = p;
    let mut after_last_newline = None;
    let mut last_char_start = p;
    loop {
        let (flags, len) = class_at(t, e);
        if len == 0 || flags & SPACE == 0 {
            break;
        }
        if flags & NEWLINE != 0 {
            after_last_newline = Some(e + len);
        }
        last_char_start = e;
        e += len;
    }
    if cl100k && e == t.len() {
        return e; // \s++$
    }
    if let Some(end) = after_last_newline {
        // \s*[\r\n]+ : \s* gives back up to the last newline; the newline run cannot go on
        // past it (it was the last one).
        return end;
    }
    if e == t.len() {
        return e; // \s+(?!\S) at the end of the text
    }
    if last_char_start > p {
        return last_char_start; // \s+(?!\S): leave the last space for the next word
    }
    if cl100k {
        p + len0 // \s
    } else {
        e // \s+
    }
}

fn cl100k_piece_end(t: &[u8], p: usize) -> usize {
    // '(?i:[sdmt]|ll|ve|re)
    if let Some(len) = contraction_len(t, p) {
        return p + len;
    }
    let (f0, len0) = class_at(t, p);
    // [^\r\n\p{L}\p{N}]?+\p{L}++ : the possessive prefix, once taken, is never given back, and
    // a prefix character is never a letter, so there is no second way to match.
    if is_word_prefix(f0) {
        let end = run_end(t, p + len0, LETTER);
        if end > p + len0 {
            return end;
        }
    } else if f0 & LETTER != 0 {
        return run_end(t, p, LETTER);
    }
    if f0 & NUMBER != 0 {
        return numbers_end(t, p);
    }
    //  ?[^\s\p{L}\p{N}]++[\r\n]*+
    if let Some(end) = symbols_end(t, p) {
        let mut e = end;
        while matches!(t.get(e), Some(b'\r' | b'\n')) {
            e += 1;
        }
        return e;
    }
    whitespace_end(t, p, f0, len0, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o200k(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_o200k_piece(text, |b| out.push(std::str::from_utf8(b).unwrap()));
        out
    }

    fn cl100k(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for_each_cl100k_piece(text, |b| out.push(std::str::from_utf8(b).unwrap()));
        out
    }

    #[test]
    fn o200k_words_contractions_and_case() {
        assert_eq!(o200k("Hello world"), ["Hello", " world"]);
        assert_eq!(o200k("don't STOP'S"), ["don't", " STOP'S"]);
        assert_eq!(o200k("camelCaseWord"), ["camel", "Case", "Word"]);
        assert_eq!(o200k("HTTPServer"), ["HTTPServer"]);
        assert_eq!(o200k("1234567"), ["123", "456", "7"]);
        assert_eq!(o200k("a, b!\n/x"), ["a", ",", " b", "!\n/", "x"]);
    }

    #[test]
    fn o200k_whitespace_rules() {
        assert_eq!(o200k("a  b"), ["a", " ", " b"]);
        assert_eq!(o200k("a\n\n  b"), ["a", "\n\n", " ", " b"]);
        assert_eq!(o200k("a   "), ["a", "   "]);
        assert_eq!(o200k("a \n "), ["a", " \n", " "]);
        assert_eq!(o200k(" 1"), [" ", "1"]);
    }

    #[test]
    fn cl100k_rules() {
        assert_eq!(cl100k("don't"), ["don", "'t"]);
        assert_eq!(cl100k("Hello world"), ["Hello", " world"]);
        assert_eq!(cl100k("camelCase"), ["camelCase"]);
        assert_eq!(cl100k("a\n  "), ["a", "\n  "]);
        assert_eq!(cl100k("a\n  b"), ["a", "\n", " ", " b"]);
        assert_eq!(cl100k("x/\ny"), ["x", "/\n", "y"]);
        assert_eq!(cl100k(" 1"), [" ", "1"]);
    }

    #[test]
    fn pieces_tile_any_text() {
        let text = "Ça va? 中文😀 \u{301}x \t\r\n ٣٤٥ 'ſ";
        assert_eq!(o200k(text).concat(), text);
        assert_eq!(cl100k(text).concat(), text);
    }
}
