//! `StreamTap`: watches an OpenAI chat-completions SSE stream while the gateway forwards it.
//!
//! The tap returns the stream's bytes verbatim but cut at event boundaries, so what the gateway
//! forwards is always whole events, and reads what the gateway needs to account for the
//! request (usage, finish reason, model, in-stream errors, optionally the text).
//!
//! JSON is parsed only when an event can change something: every OpenAI chunk carries
//! `"finish_reason":null` (and `"usage":null` with include_usage), so a key is only worth a
//! parse when a byte scan finds it with a non-null value. On a recorded 200-event stream that
//! leaves 2-3 parses per stream instead of 200 (see benches/bench_sse.py for the throughput).

use std::borrow::Cow;
use std::sync::OnceLock;

use memchr::memmem;
use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::decode;
use super::lines::{EventBlock, LineOutcome, LineReader};

/// Token usage from the last event carrying a non-null `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`, when the provider reports it.
    pub cached_tokens: Option<u64>,
}

/// Forwards an SSE stream event-aligned while extracting accounting facts from it.
#[derive(Debug)]
pub struct StreamTap {
    reader: LineReader,
    block: EventBlock,
    /// Bytes received but not yet returned: the incomplete trailing event.
    pending: Vec<u8>,
    seen: Observed,
}

/// What the tap has read from the events so far.
#[derive(Debug)]
struct Observed {
    collect_text: bool,
    events: u64,
    done: bool,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    model: Option<String>,
    text: String,
    error: Option<String>,
}

/// Searchers for the quoted keys the tap looks for, built once per process. Kept out of the tap
/// itself because a `memmem::Finder` may hold 32-byte-aligned SIMD state, and Python allocates
/// extension objects only 16-byte aligned.
struct KeyFinders {
    usage: memmem::Finder<'static>,
    finish_reason: memmem::Finder<'static>,
    error: memmem::Finder<'static>,
    model: memmem::Finder<'static>,
}

fn key_finders() -> &'static KeyFinders {
    static FINDERS: OnceLock<KeyFinders> = OnceLock::new();
    FINDERS.get_or_init(|| KeyFinders {
        usage: memmem::Finder::new(b"\"usage\""),
        finish_reason: memmem::Finder::new(b"\"finish_reason\""),
        error: memmem::Finder::new(b"\"error\""),
        model: memmem::Finder::new(b"\"model\""),
    })
}

impl StreamTap {
    /// `collect_text`: also concatenate `delta.content` of choice 0 (costs a JSON parse per
    /// event, so it is off unless asked for).
    pub fn new(collect_text: bool) -> Self {
        Self {
            reader: LineReader::default(),
            block: EventBlock::default(),
            pending: Vec::new(),
            seen: Observed {
                collect_text,
                events: 0,
                done: false,
                usage: None,
                finish_reason: None,
                model: None,
                text: String::new(),
                error: None,
            },
        }
    }

    /// Feeds `chunk` and calls `emit(carried, head)`: the bytes to forward now are `carried`
    /// (held back from earlier chunks) followed by `head` (a prefix of `chunk`). They end where
    /// the last event completed by this chunk (and any comment or blank lines after it) ends;
    /// the rest is kept for a later call. `emit` sees two slices so the caller can build its
    /// output with a single copy (or none, when `carried` is empty and `head` is all of `chunk`).
    #[inline]
    pub fn feed_with<R>(&mut self, chunk: &[u8], emit: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        let mut boundary = None;
        let block = &mut self.block;
        let seen = &mut self.seen;
        self.reader.feed(chunk, |line, end| match block.line(line) {
            LineOutcome::Dispatch => {
                block.dispatch(|event| seen.observe(event.data));
                boundary = Some(end);
            }
            LineOutcome::Blank => boundary = Some(end),
            LineOutcome::Comment if block.is_idle() => boundary = Some(end),
            LineOutcome::Comment | LineOutcome::Field => {}
        });
        // A chunk that ends exactly at a line end between events (e.g. the LF of a CRLF whose
        // CR ended the previous chunk) is complete too.
        if self.reader.at_line_start() && self.block.is_idle() {
            boundary = Some(chunk.len());
        }
        match boundary {
            Some(end) => {
                let out = emit(&self.pending, &chunk[..end]);
                self.pending.clear();
                self.pending.extend_from_slice(&chunk[end..]);
                out
            }
            None => {
                self.pending.extend_from_slice(chunk);
                emit(&[], &[])
            }
        }
    }

    /// Feeds `chunk` and returns the bytes to forward now (see [`StreamTap::feed_with`]).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.feed_with(chunk, |carried, head| [carried, head].concat())
    }

    /// Buffered bytes of the incomplete trailing event.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
    /// Data events seen so far (the final `[DONE]` included).
    pub fn events(&self) -> u64 {
        self.seen.events
    }
    /// Whether `data: [DONE]` was seen.
    pub fn done(&self) -> bool {
        self.seen.done
    }
    pub fn usage(&self) -> Option<Usage> {
        self.seen.usage
    }
    /// The last non-null `choices[*].finish_reason`.
    pub fn finish_reason(&self) -> Option<&str> {
        self.seen.finish_reason.as_deref()
    }
    /// `model` of the first event that has a non-empty one.
    pub fn model(&self) -> Option<&str> {
        self.seen.model.as_deref()
    }
    /// Concatenated `delta.content` of choice index 0 (empty unless `collect_text`).
    pub fn text(&self) -> &str {
        &self.seen.text
    }
    /// Raw JSON text of the last in-stream `{"error": ...}` event.
    pub fn error(&self) -> Option<&str> {
        self.seen.error.as_deref()
    }
}

impl Observed {
    #[inline]
    fn observe(&mut self, data: &[u8]) {
        self.events += 1;
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let keys = key_finders();
        let worth_parsing = self.collect_text
            || has_non_null_key(&keys.finish_reason, data)
            || has_non_null_key(&keys.usage, data)
            || has_non_null_key(&keys.error, data)
            || (self.model.is_none() && keys.model.find(data).is_some());
        if worth_parsing {
            self.absorb(data);
        }
    }

    fn absorb(&mut self, data: &[u8]) {
        let Ok(chunk) = serde_json::from_slice::<ChunkView<'_>>(data) else {
            return not_a_chunk();
        };
        if self.model.is_none() {
            // Azure's first chunk (prompt_filter_results) carries "model":"": not a model.
            self.model = chunk
                .model
                .filter(|m| !m.0.is_empty())
                .map(|m| m.0.into_owned());
        }
        if let Some(ObjectOnly(usage)) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
                cached_tokens: usage.prompt_tokens_details.and_then(|d| d.0.cached_tokens),
            });
        }
        if let Some(choices) = chunk.choices {
            if let Some(reason) = choices.finish_reason {
                self.finish_reason = Some(reason.into_owned());
            }
            if self.collect_text {
                if let Some(content) = choices.content {
                    self.text.push_str(&content);
                }
            }
        }
        if chunk.error.is_some() {
            self.error = Some(decode(data).into_owned());
        }
    }
}

/// A data payload that looked like it mattered but is not a JSON chunk: nothing to read.
#[cold]
#[inline(never)]
fn not_a_chunk() {}

/// True when `key` (quoted) occurs in `json` followed by `:` and a value other than `null`.
/// A false positive only costs a parse; a false negative would need the key written with
/// escapes (`"us\u0061ge"`), which no provider does.
#[inline]
fn has_non_null_key(key: &memmem::Finder<'_>, json: &[u8]) -> bool {
    let key_len = key.needle().len();
    key.find_iter(json).any(|at| {
        let rest = skip_ws(&json[at + key_len..]);
        match rest.split_first() {
            Some((b':', value)) => !skip_ws(value).starts_with(b"null"),
            _ => false, // the key text was a value, not a key
        }
    })
}

#[inline]
fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

// --- borrowed views of a chat.completion.chunk: only the fields the tap reads ----------------

/// A JSON string, borrowed from the event unless it holds escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(default)]
    usage: Option<ObjectOnly<UsageView>>,
    #[serde(borrow, default)]
    choices: Option<ChoicesFold<'a>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<ObjectOnly<PromptDetails>>,
}

/// Accepts `T` only from a JSON object: serde's derive would also build a struct from an array
/// (`"usage":[1]` would read as prompt_tokens=1), which no provider means.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = ObjectOnly<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(ObjectOnly)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
}

/// The `choices` array folded while it is read (no Vec per event): the last non-null
/// finish_reason, and the content of the choice with index 0 (with n > 1 each chunk carries
/// one choice of some index, so "first element" would mix the completions' texts).
struct ChoicesFold<'a> {
    finish_reason: Option<Cow<'a, str>>,
    content: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ChoicesFold<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FoldVisitor;
        impl<'de> Visitor<'de> for FoldVisitor {
            type Value = ChoicesFold<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut fold = ChoicesFold {
                    finish_reason: None,
                    content: None,
                };
                while let Some(choice) = seq.next_element::<ChoiceView<'de>>()? {
                    if let Some(reason) = choice.finish_reason {
                        fold.finish_reason = Some(reason.0);
                    }
                    let content = choice.delta.and_then(|d| d.content);
                    if let (0, Some(Text(content))) = (choice.index, content) {
                        fold.content = Some(match fold.content.take() {
                            None => content,
                            Some(before) => Cow::Owned(before.into_owned() + &content),
                        });
                    }
                }
                Ok(fold)
            }
        }
        deserializer.deserialize_seq(FoldVisitor)
    }
}
