//! Per-code-point class flags for the hand-written pre-tokenisers.
//!
//! The flags come from `regex-syntax`'s Unicode tables (the ones the `regex` crate — and hence
//! tiktoken's `fancy-regex` — compiles `\p{..}` and `\s` from), so a code point is a letter, a
//! number or whitespace here exactly when tiktoken's regex says so. rust/build.rs writes them as
//! a two-level table (256-entry blocks, deduplicated: a few dozen KB); the flag values below
//! must match its `CLASSES`.

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

/// 4352 little-endian u16 block numbers (one per 256 code points), then the blocks.
static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/char_class.bin"));
const BLOCK_INDEX_LEN: usize = 0x11_0000 / 256 * 2;

/// Class flags of the character starting at byte `pos` of `text` and its UTF-8 length;
/// `(0, 0)` at the end of the text.
#[inline(always)]
pub fn class_at(text: &[u8], pos: usize) -> (u8, usize) {
    let Some(&b0) = text.get(pos) else {
        return (0, 0);
    };
    if b0 < 0x80 {
        // Block 0 is the first block stored (code points 0..256 come first).
        return (TABLE[BLOCK_INDEX_LEN + b0 as usize], 1);
    }
    let (cp, len) = decode_utf8(text, pos, b0);
    let slot = (cp >> 8) as usize * 2;
    let block = u16::from_le_bytes([TABLE[slot], TABLE[slot + 1]]) as usize;
    (
        TABLE[BLOCK_INDEX_LEN + block * 256 + (cp & 0xff) as usize],
        len,
    )
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
        (
            (((b0 & 0x07) as u32) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
            4,
        )
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
