//! Built-in lexical embedder: hashed character n-grams and word uni/bigrams, no model needed.
//!
//! Lets the semantic cache work with no model and no network. It measures *surface* overlap:
//! - caught (cosine stays high): case, punctuation, extra whitespace, word order (n-grams are
//!   taken within words, so reordering only changes the bigrams), small edits and typos (an
//!   edit touches the ~12 n-grams of one word out of hundreds), inflections sharing a stem;
//! - not caught: synonyms ("car" vs "automobile"), paraphrase, translation, negation ("is" vs
//!   "is not" differ by one word and stay similar) — use a real embedding model for those.
//!
//! Features, per word of the normalised text (Unicode lowercase; letters and digits kept;
//! apostrophes dropped so "don't" = "dont"; everything else separates words):
//! - character 3-, 4- and 5-grams of the word wrapped in begin/end markers, weight 1;
//! - the word itself, weight [`UNIGRAM_WEIGHT`]; each pair of adjacent words, [`BIGRAM_WEIGHT`].
//!
//! Each feature is hashed (FNV-1a over code points, seeded per feature family, then a 64-bit
//! finaliser) to a dimension and a sign (signed feature hashing keeps collisions unbiased);
//! the vector is L2-normalised. Fixed hashes: identical output on every run and platform.

/// The default dimension, matching common small sentence-embedding models (MiniLM: 384).
pub const DEFAULT_DIM: usize = 384;
/// Largest dimension accepted: beyond this the vector is mostly empty for prompt-sized text.
pub const MAX_DIM: usize = 1 << 16;

/// Weights chosen on the prompt pairs in the tests: a word unigram counts like 2 of its
/// ~12 char n-grams, so whole-word matches matter but one typo does not dominate; bigrams
/// are light (1) because they are the only order-sensitive feature.
const UNIGRAM_WEIGHT: f32 = 2.0;
const BIGRAM_WEIGHT: f32 = 1.0;

const SEED_CHAR_GRAM: u64 = 0x243F_6A88_85A3_08D3;
const SEED_WORD: u64 = 0x1319_8A2E_0370_7344;
const SEED_BIGRAM: u64 = 0xA409_3822_299F_31D0;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
/// Word markers, outside the Unicode range so no text character collides with them.
const WORD_BEGIN: u32 = 0x11_0000;
const WORD_END: u32 = 0x11_0001;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedError {
    InvalidDim(usize),
    OutputSize { expected: usize, got: usize },
}

impl std::fmt::Display for EmbedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidDim(d) => write!(f, "dim must be between 1 and {MAX_DIM}, got {d}"),
            Self::OutputSize { expected, got } => {
                write!(f, "output buffer must hold {expected} floats, got {got}")
            }
        }
    }
}

impl std::error::Error for EmbedError {}

fn check_dim(dim: usize) -> Result<(), EmbedError> {
    if dim == 0 || dim > MAX_DIM {
        return Err(EmbedError::InvalidDim(dim));
    }
    Ok(())
}

/// Embed `text` into a new L2-normalised vector of `dim` floats (all zeros for a text with no
/// letters or digits: such a vector matches nothing).
pub fn embed(text: &str, dim: usize) -> Result<Vec<f32>, EmbedError> {
    check_dim(dim)?;
    let mut out = vec![0.0; dim];
    embed_into(text, &mut out)?;
    Ok(out)
}

/// Embed `text` into `out` (its length is the dimension), overwriting it.
pub fn embed_into(text: &str, out: &mut [f32]) -> Result<(), EmbedError> {
    check_dim(out.len())?;
    out.fill(0.0);
    let dim = out.len() as u64;
    let mut features = FeatureSink { out, dim };
    let mut word: Vec<u32> = Vec::with_capacity(32);
    let mut prev_word_hash: Option<u64> = None;
    let mut chars = text.chars();
    loop {
        let c = chars.next();
        match c {
            Some(c) if c.is_ascii() => {
                if c.is_ascii_alphanumeric() {
                    word.push(c.to_ascii_lowercase() as u32);
                    continue;
                }
                if c == '\'' {
                    continue;
                }
            }
            Some(c) if c.is_alphanumeric() => {
                word.extend(c.to_lowercase().map(|l| l as u32));
                continue;
            }
            Some('\u{2019}' | '\u{02BC}') => continue, // typographic apostrophes
            _ => {}
        }
        // a separator (or the end): close the current word
        if !word.is_empty() {
            let word_hash = features.add_word(&word);
            if let Some(prev) = prev_word_hash {
                features.add(finalise(mix(mix(SEED_BIGRAM, prev), word_hash)), BIGRAM_WEIGHT);
            }
            prev_word_hash = Some(word_hash);
            word.clear();
        }
        if c.is_none() {
            break;
        }
    }
    normalise(features.out);
    Ok(())
}

/// Embed each text into one row of `out` (`texts.len() * dim` floats, row-major).
pub fn embed_batch_into(texts: &[&str], dim: usize, out: &mut [f32]) -> Result<(), EmbedError> {
    check_dim(dim)?;
    if out.len() != texts.len() * dim {
        return Err(EmbedError::OutputSize { expected: texts.len() * dim, got: out.len() });
    }
    for (text, row) in texts.iter().zip(out.chunks_exact_mut(dim)) {
        embed_into(text, row)?;
    }
    Ok(())
}

struct FeatureSink<'a> {
    out: &'a mut [f32],
    dim: u64,
}

impl FeatureSink<'_> {
    /// Signed feature hashing: the high 32 bits pick the dimension (multiply-shift, unbiased
    /// for any dim), the lowest bit the sign.
    #[inline]
    fn add(&mut self, hash: u64, weight: f32) {
        let index = (((hash >> 32) * self.dim) >> 32) as usize;
        let signed = if hash & 1 == 0 { weight } else { -weight };
        self.out[index] += signed;
    }

    /// Add a word's char n-grams and unigram; return the word's hash (for the bigram).
    fn add_word(&mut self, word: &[u32]) -> u64 {
        let padded_len = word.len() + 2;
        let at = |i: usize| -> u32 {
            if i == 0 {
                WORD_BEGIN
            } else if i == padded_len - 1 {
                WORD_END
            } else {
                word[i - 1]
            }
        };
        for start in 0..padded_len.saturating_sub(2) {
            let mut h = SEED_CHAR_GRAM;
            for n in 0..5 {
                if start + n >= padded_len {
                    break;
                }
                h = mix(h, at(start + n) as u64);
                if n >= 2 {
                    self.add(finalise(h), 1.0);
                }
            }
        }
        let word_hash = word.iter().fold(SEED_WORD, |h, &c| mix(h, c as u64));
        self.add(finalise(word_hash), UNIGRAM_WEIGHT);
        word_hash
    }
}

/// One FNV-1a step over a whole code point (or hash) rather than a byte.
#[inline]
fn mix(h: u64, value: u64) -> u64 {
    (h ^ value).wrapping_mul(FNV_PRIME)
}

/// splitmix64's finaliser: FNV's multiply only carries entropy upward; this spreads it to
/// every bit so both the index (high bits) and the sign (low bit) are well distributed.
#[inline]
fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
#[path = "embed_tests.rs"]
mod tests;
