//! Build-time data for `tokens` (rust/src/tokens/), so that loading an encoding at run time is a
//! plain table read (~0.05 s) instead of parsing the base64 rank file (~0.75 s for o200k).
//!
//! - `<encoding>.ranks`: the mergeable tokens in rank order, each as a one-byte length and its
//!   bytes, read out of tiktoken-rs (MIT), which embeds OpenAI's published rank files.
//! - `char_class.bin`: the per-code-point class flags of `tokens::char_class`, from
//!   regex-syntax's Unicode tables (the ones tiktoken's regex engine uses), as a two-level
//!   table: 4352 little-endian u16 block numbers, then the distinct 256-byte blocks.

use regex_syntax::hir::{Class, HirKind};
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=rust/build.rs");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out_dir);
    write_ranks(
        &out.join("o200k_base.ranks"),
        &tiktoken_rs::o200k_base().expect("o200k rank file"),
    );
    write_ranks(
        &out.join("cl100k_base.ranks"),
        &tiktoken_rs::cl100k_base().expect("cl100k rank file"),
    );
    std::fs::write(out.join("char_class.bin"), char_class_table()).expect("write char_class.bin");
}

/// Tokens 0..N are the mergeable ranks (special tokens sit after a gap), so decoding ranks
/// until the first miss yields the whole table.
fn write_ranks(path: &Path, core: &tiktoken_rs::CoreBPE) {
    let mut data = Vec::new();
    let mut rank = 0u32;
    while let Ok(bytes) = core.decode_bytes(&[rank]) {
        let len = u8::try_from(bytes.len()).expect("tokens are at most 255 bytes");
        data.push(len);
        data.extend_from_slice(&bytes);
        rank += 1;
    }
    std::fs::write(path, data).expect("write rank table");
}

// Keep in step with the flag constants in rust/src/tokens/char_class.rs.
const CLASSES: [(&str, u8); 6] = [
    (r"\p{L}", 1),
    (r"\p{N}", 2),
    (r"\s", 4),
    (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", 8),
    (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", 16),
    (r"[\r\n]", 32),
];

fn char_class_table() -> Vec<u8> {
    let mut flat = vec![0u8; 0x11_0000];
    for (pattern, flag) in CLASSES {
        let hir = regex_syntax::parse(pattern).expect("class pattern parses");
        let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
            panic!("{pattern} is not a Unicode class");
        };
        for range in class.ranges() {
            for flags in &mut flat[range.start() as usize..=range.end() as usize] {
                *flags |= flag;
            }
        }
    }
    let mut blocks: Vec<&[u8]> = Vec::new();
    let mut index = Vec::new();
    for block in flat.chunks_exact(256) {
        let number = blocks.iter().position(|b| *b == block).unwrap_or_else(|| {
            blocks.push(block);
            blocks.len() - 1
        });
        index.extend_from_slice(&(number as u16).to_le_bytes());
    }
    let mut table = index;
    for block in blocks {
        table.extend_from_slice(block);
    }
    table
}
