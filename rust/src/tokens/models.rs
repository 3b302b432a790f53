//! Model name → encoding, context window, and the per-model constants of the chat formulas.
//!
//! Lookup is by longest prefix, so dated and suffixed variants (`gpt-4o-2024-08-06`,
//! `claude-3-5-sonnet-20241022`) find their family. Provider routing prefixes (`openai/gpt-4o`,
//! `azure/...`) and fine-tune names (`ft:gpt-4o-mini:org::id`) are reduced to the base name.
//! Context windows are the providers' published input+output limits, in tokens.

use super::encoding::EncodingName;

/// How a model's tokens relate to the BPE count we compute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tokenizer {
    /// The model's own encoding: counts are exact.
    Exact(EncodingName),
    /// Another vendor's tokenizer, unpublished: o200k count × factor, rounded up.
    Estimated { factor: f64 },
}

/// Everything token counting needs to know about one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelInfo {
    pub tokenizer: Tokenizer,
    pub context_window: Option<u32>,
    /// Cookbook chat overheads: added per message and per `name` field.
    pub tokens_per_message: i64,
    pub tokens_per_name: i64,
    /// Cookbook tools formula: tokens at the start of each function definition.
    pub tool_function_init: i64,
    /// Image tile formula constants: tokens per image and per 512 px tile.
    pub image_base_tokens: u32,
    pub image_tile_tokens: u32,
}

impl ModelInfo {
    pub fn encoding(&self) -> EncodingName {
        match self.tokenizer {
            Tokenizer::Exact(name) => name,
            Tokenizer::Estimated { .. } => EncodingName::O200kBase,
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self.tokenizer, Tokenizer::Exact(_))
    }

    /// Turn an o200k/cl100k count into this model's count (identity when exact).
    pub fn scale(&self, count: u64) -> u64 {
        match self.tokenizer {
            Tokenizer::Exact(_) => count,
            Tokenizer::Estimated { factor } => (count as f64 * factor).ceil() as u64,
        }
    }
}

/// Claude's tokenizer is not published. Counts from Anthropic's count_tokens endpoint run
/// roughly 10–30% above o200k on English and code in public comparisons; 1.25 errs towards
/// over-counting, which is the safe side for budgets and context checks. A heuristic: the
/// result says `exact = false`.
pub const CLAUDE_FACTOR: f64 = 1.25;
/// Gemini's SentencePiece vocabulary (256k) cuts English about as finely as o200k (Google
/// documents ~4 characters per token, o200k gives 4–4.5 on English prose); factor 1.0, not exact.
pub const GEMINI_FACTOR: f64 = 1.0;

const O200K: Tokenizer = Tokenizer::Exact(EncodingName::O200kBase);
const CL100K: Tokenizer = Tokenizer::Exact(EncodingName::Cl100kBase);
const CLAUDE: Tokenizer = Tokenizer::Estimated {
    factor: CLAUDE_FACTOR,
};
const GEMINI: Tokenizer = Tokenizer::Estimated {
    factor: GEMINI_FACTOR,
};

const fn model(tokenizer: Tokenizer, context_window: u32) -> ModelInfo {
    let tool_function_init = match tokenizer {
        Tokenizer::Exact(EncodingName::Cl100kBase) => 10,
        _ => 7,
    };
    ModelInfo {
        tokenizer,
        context_window: Some(context_window),
        tokens_per_message: 3,
        tokens_per_name: 1,
        tool_function_init,
        image_base_tokens: 85,
        image_tile_tokens: 170,
    }
}

const fn with_image_costs(info: ModelInfo, base: u32, tile: u32) -> ModelInfo {
    ModelInfo {
        image_base_tokens: base,
        image_tile_tokens: tile,
        ..info
    }
}

/// (prefix, info); the longest matching prefix wins.
static MODELS: &[(&str, ModelInfo)] = &[
    // o200k_base
    ("gpt-4o", model(O200K, 128_000)),
    // gpt-4o-mini bills images at ~33× the tokens (same price per image as gpt-4o).
    (
        "gpt-4o-mini",
        with_image_costs(model(O200K, 128_000), 2833, 5667),
    ),
    ("chatgpt-4o", model(O200K, 128_000)),
    ("gpt-4.1", model(O200K, 1_047_576)),
    ("gpt-4.5", model(O200K, 128_000)),
    ("gpt-5", model(O200K, 400_000)),
    ("gpt-oss", model(O200K, 131_072)),
    ("o1", with_image_costs(model(O200K, 200_000), 75, 150)),
    ("o1-mini", model(O200K, 128_000)),
    ("o1-preview", model(O200K, 128_000)),
    ("o3", with_image_costs(model(O200K, 200_000), 75, 150)),
    ("o3-mini", model(O200K, 200_000)),
    ("o4-mini", model(O200K, 200_000)),
    // cl100k_base
    ("gpt-4", model(CL100K, 8_192)),
    ("gpt-4-32k", model(CL100K, 32_768)),
    ("gpt-4-turbo", model(CL100K, 128_000)),
    ("gpt-4-1106", model(CL100K, 128_000)),
    ("gpt-4-0125", model(CL100K, 128_000)),
    ("gpt-4-vision", model(CL100K, 128_000)),
    ("gpt-3.5-turbo", model(CL100K, 16_385)),
    ("gpt-35-turbo", model(CL100K, 16_385)), // Azure's spelling
    ("gpt-3.5-turbo-16k", model(CL100K, 16_385)),
    ("gpt-3.5-turbo-0613", model(CL100K, 4_096)),
    ("gpt-3.5-turbo-instruct", model(CL100K, 4_096)),
    // The cookbook: gpt-3.5-turbo-0301 used 4 tokens per message and -1 per name.
    (
        "gpt-3.5-turbo-0301",
        ModelInfo {
            tokens_per_message: 4,
            tokens_per_name: -1,
            ..model(CL100K, 4_096)
        },
    ),
    ("text-embedding-3-small", model(CL100K, 8_191)),
    ("text-embedding-3-large", model(CL100K, 8_191)),
    ("text-embedding-ada-002", model(CL100K, 8_191)),
    ("davinci-002", model(CL100K, 16_384)),
    ("babbage-002", model(CL100K, 16_384)),
    // Anthropic: estimates.
    ("claude", model(CLAUDE, 200_000)),
    ("claude-2.0", model(CLAUDE, 100_000)),
    ("claude-instant", model(CLAUDE, 100_000)),
    // Google Gemini: estimates.
    ("gemini", model(GEMINI, 1_048_576)),
    ("gemini-1.5-pro", model(GEMINI, 2_097_152)),
    ("gemini-1.0-pro", model(GEMINI, 32_760)),
    ("gemini-pro", model(GEMINI, 32_760)),
];

/// Unknown models: counted with o200k (the newest OpenAI encoding) and flagged as estimates.
const UNKNOWN: ModelInfo = ModelInfo {
    tokenizer: Tokenizer::Estimated { factor: 1.0 },
    context_window: None,
    ..model(O200K, 0)
};

/// `openai/gpt-4o` → `gpt-4o`; `ft:gpt-4o-mini:org::id` → `gpt-4o-mini:org::id` (prefix match).
fn base_name(model: &str) -> String {
    let name = model.rsplit('/').next().unwrap_or(model);
    let name = name.strip_prefix("ft:").unwrap_or(name);
    name.to_ascii_lowercase()
}

/// What we know about `model`. An encoding name (`o200k_base`, `cl100k_base`) is accepted as a
/// model and counts exactly, with no context window.
pub fn model_info(model: &str) -> ModelInfo {
    if let Some(name) = EncodingName::from_name(model) {
        return ModelInfo {
            context_window: None,
            ..self::model(Tokenizer::Exact(name), 0)
        };
    }
    model_info_for_prefix(&base_name(model))
}

fn model_info_for_prefix(name: &str) -> ModelInfo {
    MODELS
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(UNKNOWN, |(_, info)| *info)
}

/// Published context window of `model` in tokens, if known.
pub fn context_window(model: &str) -> Option<u32> {
    model_info(model).context_window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_variants_find_their_family() {
        assert_eq!(
            model_info("gpt-4o-2024-08-06").encoding(),
            EncodingName::O200kBase
        );
        assert_eq!(context_window("gpt-4o-mini-2024-07-18"), Some(128_000));
        assert_eq!(context_window("gpt-4-0613"), Some(8_192));
        assert_eq!(context_window("gpt-4-turbo-2024-04-09"), Some(128_000));
        assert_eq!(
            model_info("gpt-4-0613").encoding(),
            EncodingName::Cl100kBase
        );
        assert_eq!(context_window("gpt-4.1-mini-2025-04-14"), Some(1_047_576));
        assert_eq!(context_window("o3-mini-2025-01-31"), Some(200_000));
        assert_eq!(context_window("openai/gpt-4o"), Some(128_000));
        assert_eq!(
            context_window("ft:gpt-4o-mini-2024-07-18:acme::abc123"),
            Some(128_000)
        );
        assert_eq!(
            model_info("text-embedding-3-small").encoding(),
            EncodingName::Cl100kBase
        );
    }

    #[test]
    fn other_vendors_are_estimates() {
        let claude = model_info("claude-3-5-sonnet-20241022");
        assert!(!claude.is_exact());
        assert_eq!(claude.scale(100), 125);
        assert_eq!(context_window("claude-sonnet-4-20250514"), Some(200_000));
        assert_eq!(context_window("gemini-1.5-pro-002"), Some(2_097_152));
        assert!(!model_info("gemini-2.0-flash").is_exact());
        let unknown = model_info("my-local-llama");
        assert!(!unknown.is_exact());
        assert_eq!(unknown.context_window, None);
        assert!(model_info("cl100k_base").is_exact());
    }
}
