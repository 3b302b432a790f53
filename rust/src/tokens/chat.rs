//! Prompt tokens of a chat request: messages, tool definitions and images.
//!
//! Messages — OpenAI Cookbook, "How to count tokens with tiktoken" (`num_tokens_from_messages`):
//! every message costs `tokens_per_message` (3), plus the tokens of each of its values (the
//! role too), plus `tokens_per_name` (1) if it has a `name`; the reply is primed with 3 more.
//! Extensions of ours where the cookbook only handles strings: content lists add their text
//! parts and their images (tile formula, see `image`); an assistant's `tool_calls` add each
//! call's function name and arguments; `null` adds nothing; any other value adds the tokens of
//! its compact JSON text (an over-estimate for e.g. audio parts).
//!
//! Tools — same cookbook, `num_tokens_for_tools` (section "counting tokens for chat completions
//! with tool calls"): per function 7 on o200k models (10 on cl100k) + tokens of
//! `name:description`; if it has properties, 3 + per property 3 + tokens of
//! `key:type:description` (descriptions without one trailing '.'), and for an enum −3 + per item
//! 3 + its tokens; 12 once after all functions. Both `{"type": "function", "function": {...}}`
//! and bare (legacy `functions=`) definitions are accepted.
//!
//! For models counted by estimate (Claude, Gemini, unknown) the whole OpenAI-formula total,
//! images included, is scaled by the model's factor; their own image formulas are not modelled.

use super::encoding::{encoding, Encoding, EncodingName};
use super::image::image_tokens;
use super::models::{model_info, ModelInfo};
use serde_json::{Map, Value};
use std::fmt;

/// Tokens added after the last message: the reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING_TOKENS: i64 = 3;
const TOOL_PROPERTIES_INIT: i64 = 3;
const TOOL_PROPERTY_KEY: i64 = 3;
const TOOL_ENUM_INIT: i64 = -3;
const TOOL_ENUM_ITEM: i64 = 3;
const TOOLS_END: i64 = 12;

/// A prompt's token count and how much to trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCount {
    pub tokens: u64,
    /// True when `encoding` is the model's own tokenizer (OpenAI models); false for estimates
    /// (Anthropic, Gemini, unknown models).
    pub exact: bool,
    pub encoding: EncodingName,
}

/// A request that is not shaped like a chat request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatShapeError(pub String);

impl fmt::Display for ChatShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChatShapeError {}

/// Tokens of `text` for `model` (an estimate for non-OpenAI models; see `models`).
pub fn count_text_tokens(text: &str, model: &str) -> u64 {
    let info = model_info(model);
    info.scale(encoding(info.encoding()).count(text) as u64)
}

/// Prompt tokens of a chat request.
pub fn count_chat_tokens(
    messages: &[Value],
    model: &str,
    tools: Option<&[Value]>,
) -> Result<TokenCount, ChatShapeError> {
    let info = model_info(model);
    let counter = Counter {
        info,
        enc: encoding(info.encoding()),
    };
    let mut total = 0i64;
    for (index, message) in messages.iter().enumerate() {
        let fields = message.as_object().ok_or_else(|| {
            ChatShapeError(format!(
                "messages[{index}] must be an object, not {}",
                kind(message)
            ))
        })?;
        total += counter.message(fields);
    }
    total += REPLY_PRIMING_TOKENS;
    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
        total += counter.tools(tools)?;
    }
    Ok(TokenCount {
        tokens: info.scale(total.max(0) as u64),
        exact: info.is_exact(),
        encoding: info.encoding(),
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

struct Counter {
    info: ModelInfo,
    enc: &'static Encoding,
}

impl Counter {
    fn text(&self, text: &str) -> i64 {
        self.enc.count(text) as i64
    }

    fn json(&self, value: &Value) -> i64 {
        match value {
            Value::Null => 0,
            Value::String(s) => self.text(s),
            other => self.text(&other.to_string()),
        }
    }

    fn message(&self, fields: &Map<String, Value>) -> i64 {
        let mut total = self.info.tokens_per_message;
        for (key, value) in fields {
            total += match (key.as_str(), value) {
                ("content", Value::Array(parts)) => {
                    parts.iter().map(|p| self.content_part(p)).sum()
                }
                ("tool_calls", Value::Array(calls)) => {
                    calls.iter().map(|c| self.tool_call(c)).sum()
                }
                (_, value) => self.json(value),
            };
            if key == "name" {
                total += self.info.tokens_per_name;
            }
        }
        total
    }

    fn content_part(&self, part: &Value) -> i64 {
        let Some(fields) = part.as_object() else {
            return self.json(part);
        };
        match fields.get("type").and_then(Value::as_str) {
            Some("text") => fields.get("text").map_or(0, |t| self.json(t)),
            Some("image_url") => {
                let image = fields.get("image_url");
                let url = image
                    .and_then(|i| i.as_str().or_else(|| i.get("url")?.as_str()))
                    .unwrap_or("");
                let detail = image.and_then(|i| i.get("detail")?.as_str());
                image_tokens(
                    url,
                    detail,
                    self.info.image_base_tokens,
                    self.info.image_tile_tokens,
                ) as i64
            }
            _ => self.json(part),
        }
    }

    fn tool_call(&self, call: &Value) -> i64 {
        match call.get("function") {
            Some(function) => {
                function.get("name").map_or(0, |n| self.json(n))
                    + function.get("arguments").map_or(0, |a| self.json(a))
            }
            None => self.json(call),
        }
    }

    fn tools(&self, tools: &[Value]) -> Result<i64, ChatShapeError> {
        let mut total = 0;
        for (index, tool) in tools.iter().enumerate() {
            let function = tool.get("function").unwrap_or(tool);
            let fields = function.as_object().ok_or_else(|| {
                ChatShapeError(format!(
                    "tools[{index}] must be an object, not {}",
                    kind(tool)
                ))
            })?;
            total += self.info.tool_function_init;
            let name = fields.get("name").and_then(Value::as_str).unwrap_or("");
            total += self.text(&format!("{name}:{}", description(fields)));
            let properties = fields
                .get("parameters")
                .and_then(|p| p.get("properties"))
                .and_then(Value::as_object);
            if let Some(properties) = properties.filter(|p| !p.is_empty()) {
                total += TOOL_PROPERTIES_INIT;
                for (key, property) in properties {
                    total += TOOL_PROPERTY_KEY;
                    let empty = Map::new();
                    let property = property.as_object().unwrap_or(&empty);
                    if let Some(items) = property.get("enum").and_then(Value::as_array) {
                        total += TOOL_ENUM_INIT;
                        for item in items {
                            total += TOOL_ENUM_ITEM + self.json(item);
                        }
                    }
                    let kind = match property.get("type") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    total += self.text(&format!("{key}:{kind}:{}", description(property)));
                }
            }
        }
        Ok(total + TOOLS_END)
    }
}

/// A definition's description without one trailing period, as the cookbook formats it.
fn description(fields: &Map<String, Value>) -> &str {
    let text = fields
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    text.strip_suffix('.').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn count(messages: Value, model: &str, tools: Option<Value>) -> TokenCount {
        let tools = tools.map(|t| t.as_array().unwrap().clone());
        count_chat_tokens(messages.as_array().unwrap(), model, tools.as_deref()).unwrap()
    }

    #[test]
    fn cookbook_example_counts() {
        // The cookbook's example conversation: it reports 124 prompt tokens for gpt-4o and
        // gpt-4o-mini, 129 for gpt-4 and gpt-3.5-turbo (the API agreed), 127 for gpt-3.5-turbo-0301.
        let messages = json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
        ]);
        for (model, expected) in [
            ("gpt-4o", 124),
            ("gpt-4o-mini", 124),
            ("gpt-4-0613", 129),
            ("gpt-3.5-turbo", 129),
        ] {
            let result = count(messages.clone(), model, None);
            assert_eq!(result.tokens, expected, "{model}");
            assert!(result.exact);
        }
        assert_eq!(
            count(messages.clone(), "gpt-3.5-turbo-0301", None).tokens,
            127
        );
        assert_eq!(
            count(messages, "gpt-4", None).encoding,
            EncodingName::Cl100kBase
        );
    }

    #[test]
    fn cookbook_tools_example_counts() {
        // The cookbook's tools example: 101 prompt tokens on gpt-4o / gpt-4o-mini, 105 on gpt-4.
        let tools = json!([{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["location"]}
        }}]);
        let messages = json!([
            {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
            {"role": "user", "content": "What's the weather like in San Francisco?"},
        ]);
        assert_eq!(
            count(messages.clone(), "gpt-4o", Some(tools.clone())).tokens,
            101
        );
        assert_eq!(count(messages, "gpt-4", Some(tools)).tokens, 105);
    }

    #[test]
    fn images_names_and_estimates() {
        let text_only = count(json!([{"role": "user", "content": "hi"}]), "gpt-4o", None).tokens;
        let with_image = count(
            json!([{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
            ]}]),
            "gpt-4o",
            None,
        );
        assert_eq!(with_image.tokens, text_only + 85);
        let named = count(
            json!([{"role": "user", "name": "bob", "content": "hi"}]),
            "gpt-4o",
            None,
        )
        .tokens;
        assert_eq!(named, text_only + 1 + 1); // "bob" is one token, plus tokens_per_name
        let claude = count(
            json!([{"role": "user", "content": "hi"}]),
            "claude-3-5-sonnet-latest",
            None,
        );
        assert!(!claude.exact);
        assert_eq!(claude.tokens, (text_only as f64 * 1.25).ceil() as u64);
        let err = count_chat_tokens(&[json!("hi")], "gpt-4o", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "messages[0] must be an object, not a string"
        );
    }
}
