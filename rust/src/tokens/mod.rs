//! Exact BPE token counting for OpenAI's `o200k_base` and `cl100k_base`, and prompt token
//! counts of chat requests (messages, tools, images) per model.
//!
//! Counts equal tiktoken's (`len(enc.encode_ordinary(text))`); they are produced by a
//! hand-written pre-tokeniser (`pretokenize`) and a merge that is never quadratic (`bpe`).

mod bpe;
mod char_class;
mod chat;
mod encoding;
mod image;
mod models;
mod pretokenize;

pub use chat::{count_chat_tokens, count_text_tokens, ChatShapeError, TokenCount};
pub use encoding::{encoding, Encoding, EncodingName};
pub use image::{high_detail_tiles, image_tokens, UNKNOWN_SIZE_TILES};
pub use models::{context_window, model_info, ModelInfo, Tokenizer, CLAUDE_FACTOR, GEMINI_FACTOR};
