//! Incremental Server-Sent Events parsing for the streaming path.
//!
//! Follows the WHATWG HTML "event stream interpretation": lines end with CRLF, LF or CR (a CRLF
//! may be split across chunks); `data` lines join with LF; `event`, `id` (ignored if it holds
//! NUL) and `retry` (digits only) fields; `:` comments; one space after the colon is dropped; a
//! blank line dispatches (an event with no data is dropped but resets the buffers); a leading
//! UTF-8 BOM is skipped; an unterminated event at end of stream is discarded.
//!
//! Two consumers share the line and field layers in `lines`:
//! - [`SseParser`] turns bytes into [`SseEvent`]s (or borrowed [`EventRef`]s, allocation-free);
//! - [`StreamTap`] (in `tap`) forwards an OpenAI stream verbatim, event-aligned, while reading
//!   usage, finish reason, model, errors and (optionally) text from the events as they pass.
//!
//! Bytes are split and interpreted before decoding; decoding (with U+FFFD for invalid UTF-8) is
//! done once per complete field, so a character split across chunks is never decoded in halves.

mod lines;
mod tap;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use lines::{EventBlock, LineOutcome, LineReader, RawEvent};
pub use tap::{StreamTap, Usage};

/// One dispatched event, owning its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; None when absent or empty (the spec's default type, "message").
    pub event: Option<String>,
    /// Data lines joined with "\n".
    pub data: String,
    /// The last event ID (sticky per the spec: set by the latest `id:` field, even one sent in
    /// an earlier event); None until the stream sends one.
    pub id: Option<String>,
    /// The `retry:` value set within this event's block, if any.
    pub retry: Option<u64>,
}

/// One dispatched event borrowing the parser's buffers: nothing is allocated unless a field
/// holds invalid UTF-8 (then the accessor returns an owned, U+FFFD-repaired copy).
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    raw: RawEvent<'a>,
}

impl<'a> EventRef<'a> {
    #[inline]
    pub fn event(&self) -> Option<Cow<'a, str>> {
        self.raw.event.map(decode)
    }
    #[inline]
    pub fn data(&self) -> Cow<'a, str> {
        decode(self.raw.data)
    }
    /// The data field as received, undecoded.
    #[inline]
    pub fn data_bytes(&self) -> &'a [u8] {
        self.raw.data
    }
    #[inline]
    pub fn id(&self) -> Option<Cow<'a, str>> {
        self.raw.id.map(decode)
    }
    #[inline]
    pub fn retry(&self) -> Option<u64> {
        self.raw.retry
    }
    pub fn to_event(&self) -> SseEvent {
        SseEvent {
            event: self.event().map(Cow::into_owned),
            data: self.data().into_owned(),
            id: self.id().map(Cow::into_owned),
            retry: self.retry(),
        }
    }
}

/// Decodes UTF-8, replacing each invalid sequence with U+FFFD (the WHATWG decoder's rule).
#[inline]
pub(crate) fn decode(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => decode_lossy(bytes),
    }
}

#[cold]
#[inline(never)]
fn decode_lossy(bytes: &[u8]) -> Cow<'_, str> {
    Cow::Owned(String::from_utf8_lossy(bytes).into_owned())
}

/// Incremental SSE parser: feed chunks as they arrive, get the events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    reader: LineReader,
    block: EventBlock,
    comments: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, calling `on_event` for each event it completes, in order.
    #[inline]
    pub fn feed_with(&mut self, chunk: &[u8], mut on_event: impl FnMut(EventRef<'_>)) {
        let block = &mut self.block;
        let comments = &mut self.comments;
        self.reader
            .feed(chunk, |line, _end| match block.line(line) {
                LineOutcome::Dispatch => block.dispatch(|raw| on_event(EventRef { raw })),
                LineOutcome::Comment => *comments += 1,
                LineOutcome::Field | LineOutcome::Blank => {}
            });
    }

    /// Parses `chunk` and returns the events it completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_with(chunk, |event| events.push(event.to_event()));
        events
    }

    /// Ends the stream. Returns true if an unterminated event (any field line, or a partial
    /// non-comment line, after the last blank line) was discarded. The parser is then reset
    /// and ready for a new stream.
    pub fn finish(&mut self) -> bool {
        let tail = self.reader.finish();
        let discarded = !self.block.is_idle() || tail.first().is_some_and(|&b| b != b':');
        *self = Self::default();
        discarded
    }

    /// Bytes held for the event not yet complete (its buffered fields and the line in
    /// progress): what an upstream that never ends an event makes the parser keep.
    pub fn pending_bytes(&self) -> usize {
        self.reader.partial_len() + self.block.buffered_len()
    }

    /// Comment lines seen so far (e.g. `: keep-alive`).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// The last event ID the stream set, if any.
    pub fn last_event_id(&self) -> Option<Cow<'_, str>> {
        self.block.last_event_id().map(decode)
    }

    /// The stream's reconnection time in ms: the last valid `retry:` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.block.reconnect_ms()
    }
}
