//! The two OpenAI encodings: rank tables, pre-tokeniser, and exact token counts of text.

use super::bpe::{merged_token_count, Ranks};
use super::pretokenize;
use std::cell::RefCell;
use std::sync::OnceLock;

/// A byte-pair encoding whose token counts equal tiktoken's `encode_ordinary` lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodingName {
    O200kBase,
    Cl100kBase,
}

impl EncodingName {
    pub fn as_str(self) -> &'static str {
        match self {
            EncodingName::O200kBase => "o200k_base",
            EncodingName::Cl100kBase => "cl100k_base",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(EncodingName::O200kBase),
            "cl100k_base" => Some(EncodingName::Cl100kBase),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

pub struct Encoding {
    name: EncodingName,
    ranks: Ranks,
}

static O200K: OnceLock<Encoding> = OnceLock::new();
static CL100K: OnceLock<Encoding> = OnceLock::new();

/// The loaded encoding (built on first use: ~0.05 s and ~15 MB for o200k, once per process).
pub fn encoding(name: EncodingName) -> &'static Encoding {
    let cell = match name {
        EncodingName::O200kBase => &O200K,
        EncodingName::Cl100kBase => &CL100K,
    };
    cell.get_or_init(|| Encoding::load(name))
}

/// Pieces at most this long have their multi-token counts cached per thread.
const CACHED_PIECE_MAX_LEN: usize = 64;
/// Bound on cached pieces per thread and encoding: at most 16 Ki × (64 + ~40) bytes ≈ 1.7 MB.
/// When full the cache is cleared (cheap, and a prompt's own words come straight back).
const CACHE_MAX_ENTRIES: usize = 16 * 1024;

thread_local! {
    /// Token counts of recently seen pieces that are not single tokens. Single-token pieces
    /// (most English words) are answered by the rank table itself, so they are never stored.
    static PIECE_COUNTS: RefCell<[rustc_hash::FxHashMap<Box<[u8]>, u32>; 2]> =
        RefCell::new(Default::default());
}

impl Encoding {
    fn load(name: EncodingName) -> Self {
        // Written by rust/build.rs: the tokens in rank order, each a length byte then bytes.
        let table: &[u8] = match name {
            EncodingName::O200kBase => {
                include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.ranks"))
            }
            EncodingName::Cl100kBase => {
                include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.ranks"))
            }
        };
        let mut ranks = Ranks::with_capacity_and_hasher(200_000, Default::default());
        let mut pos = 0;
        while pos < table.len() {
            let len = table[pos] as usize;
            ranks.insert(table[pos + 1..pos + 1 + len].to_vec(), ranks.len() as u32);
            pos += 1 + len;
        }
        ranks.shrink_to_fit();
        Encoding { name, ranks }
    }

    pub fn name(&self) -> EncodingName {
        self.name
    }

    /// Number of mergeable (non-special) tokens.
    pub fn vocabulary_size(&self) -> usize {
        self.ranks.len()
    }

    /// Exact number of tokens in `text`, special-token text (`<|endoftext|>`) counted as
    /// ordinary text, as tiktoken's `encode_ordinary` does.
    pub fn count(&self, text: &str) -> usize {
        let mut total = 0usize;
        PIECE_COUNTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let cache = &mut cache[self.name.index()];
            let mut on_piece = |piece: &[u8]| total += self.count_piece(piece, cache);
            match self.name {
                EncodingName::O200kBase => pretokenize::for_each_o200k_piece(text, &mut on_piece),
                EncodingName::Cl100kBase => pretokenize::for_each_cl100k_piece(text, &mut on_piece),
            }
        });
        total
    }

    #[inline(always)]
    fn count_piece(
        &self,
        piece: &[u8],
        cache: &mut rustc_hash::FxHashMap<Box<[u8]>, u32>,
    ) -> usize {
        if piece.len() == 1 || self.ranks.contains_key(piece) {
            return 1;
        }
        if piece.len() > CACHED_PIECE_MAX_LEN {
            return merged_token_count(&self.ranks, piece);
        }
        if let Some(&count) = cache.get(piece) {
            return count as usize;
        }
        let count = merged_token_count(&self.ranks, piece);
        if cache.len() >= CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(piece.into(), count as u32);
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_are_complete() {
        assert_eq!(encoding(EncodingName::O200kBase).vocabulary_size(), 199_998);
        assert_eq!(
            encoding(EncodingName::Cl100kBase).vocabulary_size(),
            100_256
        );
    }

    #[test]
    fn counts_equal_tiktoken_rs_on_samples() {
        // tiktoken-rs runs the reference: the same regexes as tiktoken ≥ 0.8 and its merge.
        let samples = [
            "Hello, world! How are you doing today?",
            "fn main() {\n    println!(\"hi\");\n}\n\n// end",
            "中文文本，日本語のテキスト、한국어 텍스트.",
            "emoji 😀😀😀 👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
            "don't won't SHOULDN'T I'm we'll they've",
            "    indented\n\t\ttabs\r\n\r\nwindows",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa x",
            "Ünïcödé ÀÉÎÕÜ ñ ß ſ 'ſ Ω ω ǅ ǈ",
            "1234567890 3.14159 1e-9 0x1F ١٢٣٤",
            "   leading and trailing   x",
            "ends with newline and spaces\n  ",
        ];
        let pairs = [
            (EncodingName::O200kBase, tiktoken_rs::o200k_base_singleton()),
            (
                EncodingName::Cl100kBase,
                tiktoken_rs::cl100k_base_singleton(),
            ),
        ];
        for (name, reference) in pairs {
            let enc = encoding(name);
            for text in samples {
                assert_eq!(
                    enc.count(text),
                    reference.encode_ordinary(text).len(),
                    "{name:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn long_single_character_runs_are_counted() {
        let enc = encoding(EncodingName::O200kBase);
        let reference = tiktoken_rs::o200k_base_singleton();
        for text in [
            "a".repeat(3000),
            " ".repeat(3000),
            "😀".repeat(500),
            "\n".repeat(999),
        ] {
            assert_eq!(enc.count(&text), reference.encode_ordinary(&text).len());
        }
    }
}
