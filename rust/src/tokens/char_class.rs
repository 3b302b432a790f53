//! Per-code-point class flags for the hand-written pre-tokenisers.
//!
//! The flags come from `regex-syntax`'s Unicode tables (the ones the `regex` crate — and hence
//! tiktoken's `fancy-regex` — compiles `\p{..}` and `\s` from), so a code point is a letter, a
//! number or whitespace here exactly when tiktoken's regex says so. The table is a two-level
//! lookup (256-entry blocks, deduplicated: ~100 distinct blocks, a few dozen KB) built once.

use regex_syntax::hir::{Class, HirKind};
use std::sync::OnceLock;

/// `\p{L}`.
pub const LETTER: u8 = 1;
/// `\p{N}`.
pub const NUMBER: u8 = 2;
/// `\s` (Unicode White_Space).
pub const SPACE: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` (o200k's "upper-case-ish" class).
pub const UPPERISH: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` (o200k's "lower-case-ish" class).
pub const LOWERISH: u8 = 16;
/// `\r` or `\n`.
pub const NEWLINE: u8 = 32;

struct ClassTable {
    block_of: Vec<u16>,
    blocks: Vec<[u8; 256]>,
}

static TABLE: OnceLock<ClassTable> = OnceLock::new();
static ASCII: OnceLock<[u8; 128]> = OnceLock::new();

fn ranges_of(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::parse(pattern).expect("static class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("{pattern} is not a Unicode class: {other:?}"),
    }
}

fn build_table() -> ClassTable {
    let mut flat = vec![0u8; 0x11_0000];
    let classes: [(&str, u8); 6] = [
        (r"\p{L}", LETTER),
        (r"\p{N}", NUMBER),
        (r"\s", SPACE),
        (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UPPERISH),
        (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LOWERISH),
        (r"[\r\n]", NEWLINE),
    ];
    for (pattern, flag) in classes {
        for (start, end) in ranges_of(pattern) {
            for cp in start..=end {
                flat[cp as usize] |= flag;
            }
        }
    }
    let mut blocks: Vec<[u8; 256]> = Vec::new();
    let mut block_of = Vec::with_capacity(flat.len() / 256);
    for chunk in flat.chunks_exact(256) {
        let block: [u8; 256] = chunk.try_into().expect("chunk of 256");
        let index = match blocks.iter().position(|b| *b == block) {
            Some(i) => i,
            None => {
                blocks.push(block);
                blocks.len() - 1
            }
        };
        block_of.push(index as u16);
    }
    ClassTable { block_of, blocks }
}

/// Build the tables now (otherwise done on first use).
pub fn init() {
    let table = TABLE.get_or_init(build_table);
    ASCII.get_or_init(|| {
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&table.blocks[table.block_of[0] as usize][..128]);
        ascii
    });
}

/// Class flags of the character starting at byte `pos` of `text` and its UTF-8 length;
/// `(0, 0)` at the end of the text.
#[inline(always)]
pub fn class_at(text: &[u8], pos: usize) -> (u8, usize) {
    let Some(&b0) = text.get(pos) else {
        return (0, 0);
    };
    if b0 < 0x80 {
        // SAFETY-free fast path: ASCII is initialised before any splitter runs (see `init`).
        return (ASCII.get().map_or_else(|| slow_ascii(b0), |t| t[b0 as usize]), 1);
    }
    let (cp, len) = decode_utf8(text, pos, b0);
    let table = TABLE.get_or_init(build_table);
    let block = table.block_of[(cp >> 8) as usize] as usize;
    (table.blocks[block][(cp & 0xff) as usize], len)
}

#[cold]
fn slow_ascii(b: u8) -> u8 {
    init();
    ASCII.get().expect("initialised")[b as usize]
}

/// Decode the (valid, since it comes from a `&str`) UTF-8 sequence starting with `b0`.
#[inline(always)]
fn decode_utf8(text: &[u8], pos: usize, b0: u8) -> (u32, usize) {
    let cont = |i: usize| (text[pos + i] & 0x3f) as u32;
    if b0 < 0xe0 {
        ((((b0 & 0x1f) as u32) << 6) | cont(1), 2)
    } else if b0 < 0xf0 {
        ((((b0 & 0x0f) as u32) << 12) | (cont(1) << 6) | cont(2), 3)
    } else {
        ((((b0 & 0x07) as u32) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(c: char) -> u8 {
        let mut buf = [0u8; 4];
        class_at(c.encode_utf8(&mut buf).as_bytes(), 0).0
    }

    #[test]
    fn classes_match_unicode_categories() {
        assert_eq!(flags('a'), LETTER | LOWERISH);
        assert_eq!(flags('A'), LETTER | UPPERISH);
        assert_eq!(flags('7'), NUMBER);
        assert_eq!(flags(' '), SPACE);
        assert_eq!(flags('\n'), SPACE | NEWLINE);
        assert_eq!(flags('!'), 0);
        // 中 is Lo: a letter in both of o200k's case classes.
        assert_eq!(flags('中'), LETTER | UPPERISH | LOWERISH);
        // U+0301 COMBINING ACUTE ACCENT is Mn: not a letter, but in both case classes.
        assert_eq!(flags('\u{301}'), UPPERISH | LOWERISH);
        assert_eq!(flags('\u{3000}'), SPACE);
        assert_eq!(flags('Ⅻ'), NUMBER);
        assert_eq!(flags('😀'), 0);
        assert_eq!(flags('ǅ'), LETTER | UPPERISH); // Lt
    }
}
