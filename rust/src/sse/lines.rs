//! The two layers every SSE consumer shares: splitting bytes into lines (`LineReader`) and
//! interpreting lines as fields of the event being built (`EventBlock`).
//!
//! Both work on bytes, not text: every byte the spec gives meaning to (CR, LF, `:`, space, NUL)
//! is ASCII, and an ASCII byte never occurs inside a multi-byte UTF-8 sequence, so splitting
//! before decoding yields exactly what decoding the whole stream first would — and a character
//! split across chunks is never decoded half-way, because only whole lines are ever decoded.

use memchr::{memchr, memchr2};

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Splits a byte stream, fed in arbitrary chunks, into lines ended by CRLF, LF or CR.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    /// Bytes of a line started in an earlier chunk and not yet ended. Its capacity is kept, so
    /// a stream whose lines straddle chunks stops allocating after the first few chunks.
    partial: Vec<u8>,
    /// The last chunk ended with CR: an LF opening the next chunk completes that CRLF and is
    /// not a second (blank) line.
    after_cr: bool,
    /// How many bytes of a leading BOM have been matched; `BOM_RESOLVED` once decided.
    bom_matched: u8,
}

const BOM_RESOLVED: u8 = u8::MAX;

impl LineReader {
    /// Calls `on_line(line, end)` for every line completed by `chunk`, where `line` excludes its
    /// terminator and `end` is the offset in `chunk` just past that terminator. A CR is taken as
    /// a line end at once (the spec allows a lone CR), so a line never waits for the next chunk.
    #[inline]
    pub(crate) fn feed(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8], usize)) {
        let mut pos = 0;
        if self.bom_matched != BOM_RESOLVED {
            pos = self.skip_bom(chunk);
            if self.bom_matched != BOM_RESOLVED {
                return; // the chunk was (part of) a BOM prefix; wait for more
            }
        }
        if self.after_cr && pos < chunk.len() {
            self.after_cr = false;
            if chunk[pos] == b'\n' {
                pos += 1;
            }
        }
        while pos < chunk.len() {
            let Some(found) = memchr2(b'\n', b'\r', &chunk[pos..]) else {
                self.partial.extend_from_slice(&chunk[pos..]);
                return;
            };
            let eol = pos + found;
            let mut end = eol + 1;
            if chunk[eol] == b'\r' {
                if end == chunk.len() {
                    self.after_cr = true;
                } else if chunk[end] == b'\n' {
                    end += 1;
                }
            }
            if self.partial.is_empty() {
                on_line(&chunk[pos..eol], end);
            } else {
                self.partial.extend_from_slice(&chunk[pos..eol]);
                on_line(&self.partial, end);
                self.partial.clear();
            }
            pos = end;
        }
    }

    /// Matches the start of the stream against the UTF-8 BOM (which may arrive split across
    /// chunks) and returns how many bytes of `chunk` it consumed.
    #[cold]
    fn skip_bom(&mut self, chunk: &[u8]) -> usize {
        let mut pos = 0;
        while pos < chunk.len() {
            let matched = self.bom_matched as usize;
            if chunk[pos] != BOM[matched] {
                // Not a BOM after all: what looked like its start belongs to the first line.
                self.partial.extend_from_slice(&BOM[..matched]);
                self.bom_matched = BOM_RESOLVED;
                return pos;
            }
            pos += 1;
            self.bom_matched += 1;
            if self.bom_matched as usize == BOM.len() {
                self.bom_matched = BOM_RESOLVED;
                return pos;
            }
        }
        pos
    }

    /// True when no line is in progress: the bytes seen so far end exactly at a line end.
    #[inline]
    pub(crate) fn at_line_start(&self) -> bool {
        self.partial.is_empty() && (self.bom_matched == BOM_RESOLVED || self.bom_matched == 0)
    }

    /// Bytes of the line in progress (held until its terminator arrives).
    #[inline]
    pub(crate) fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Ends the stream: returns the unterminated last line (if any) and resets for a new stream.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut tail = std::mem::take(&mut self.partial);
        if self.bom_matched != BOM_RESOLVED {
            tail = BOM[..self.bom_matched as usize].to_vec(); // stream ended inside a BOM prefix
        }
        *self = Self::default();
        tail
    }
}

/// What one line did to the event being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineOutcome {
    /// A field line (`data`, `event`, `id`, `retry`, or an unknown name, which is ignored).
    Field,
    /// A comment line (starts with `:`).
    Comment,
    /// A blank line with no data buffered: the buffers were reset, nothing to dispatch.
    Blank,
    /// A blank line with data buffered: call `EventBlock::dispatch`.
    Dispatch,
}

/// One dispatched event, borrowing the parser's buffers; fields are still undecoded bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawEvent<'a> {
    pub event: Option<&'a [u8]>,
    pub data: &'a [u8],
    pub id: Option<&'a [u8]>,
    pub retry: Option<u64>,
}

/// Field buffers of the event being built (the WHATWG "data buffer", "event type buffer" and
/// "last event ID buffer"), plus the `retry` value set inside this event's block.
#[derive(Debug, Default)]
pub(crate) struct EventBlock {
    /// Every data line followed by LF, as the spec builds it; the final LF is cut at dispatch.
    data: Vec<u8>,
    event: Vec<u8>,
    /// The last event ID is sticky: per the spec it is not reset by dispatch, so every later
    /// event carries it until the server sends a new `id`.
    last_id: Vec<u8>,
    id_set: bool,
    retry: Option<u64>,
    /// The stream's reconnection time: the last valid `retry`, kept across events.
    reconnect_ms: Option<u64>,
    /// Any non-comment line since the last blank line (an event is in progress).
    fields_seen: bool,
}

impl EventBlock {
    #[inline]
    pub(crate) fn line(&mut self, line: &[u8]) -> LineOutcome {
        let Some(&first) = line.first() else {
            if self.data.is_empty() {
                self.reset_event();
                return LineOutcome::Blank;
            }
            return LineOutcome::Dispatch;
        };
        if first == b':' {
            return LineOutcome::Comment;
        }
        self.fields_seen = true;
        let (name, value) = match memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if memchr(0, value).is_none() => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
                self.id_set = true;
            }
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.retry = Some(ms);
                    self.reconnect_ms = Some(ms);
                }
            }
            _ => {}
        }
        LineOutcome::Field
    }

    /// Hands the completed event to `f`, then clears the per-event buffers.
    #[inline]
    pub(crate) fn dispatch<R>(&mut self, f: impl FnOnce(RawEvent<'_>) -> R) -> R {
        let data = &self.data[..self.data.len().saturating_sub(1)];
        let out = f(RawEvent {
            // An empty event type means the default ("message"); surfaced as None.
            event: (!self.event.is_empty()).then_some(&self.event[..]),
            data,
            id: self.id_set.then_some(&self.last_id[..]),
            retry: self.retry,
        });
        self.reset_event();
        out
    }

    #[inline]
    fn reset_event(&mut self) {
        self.data.clear();
        self.event.clear();
        self.retry = None;
        self.fields_seen = false;
    }

    /// True when no event is in progress (no field line since the last blank line).
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        !self.fields_seen
    }

    /// Bytes buffered for the event in progress (its data and event-type fields).
    #[inline]
    pub(crate) fn buffered_len(&self) -> usize {
        self.data.len() + self.event.len()
    }

    pub(crate) fn last_event_id(&self) -> Option<&[u8]> {
        self.id_set.then_some(&self.last_id[..])
    }

    pub(crate) fn reconnect_ms(&self) -> Option<u64> {
        self.reconnect_ms
    }
}

/// `retry` takes ASCII digits only (at least one); anything else, or a value past u64, is
/// ignored as the spec says to ignore a malformed field.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut ms: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        ms = ms.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(ms)
}
