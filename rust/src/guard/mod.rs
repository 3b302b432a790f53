//! Guardrail detectors: PII and secrets (`pii`, with the checksum `validators`) and prompt
//! injection (`injection`). Offsets are UTF-8 byte offsets here; `char_offsets` converts them
//! for Python (str indices count code points).

pub mod injection;
pub mod pii;
pub mod validators;

/// Byte offsets (ascending) -> char offsets, in one pass over `text`; identity for ASCII.
pub fn char_offsets(text: &str, byte_offsets: &mut [usize]) {
    if text.is_ascii() || byte_offsets.is_empty() {
        return;
    }
    let b = text.as_bytes();
    let mut chars = 0usize;
    let mut pos = 0usize;
    for off in byte_offsets.iter_mut() {
        let target = *off;
        debug_assert!(target >= pos);
        chars += b[pos..target]
            .iter()
            .filter(|&&c| (c as i8) >= -0x40)
            .count();
        pos = target;
        *off = chars;
    }
}

#[cfg(test)]
mod tests;
