//! `json_depth`: how deeply a JSON document nests, read from its bytes without parsing it.
//!
//! The gateway parses request bodies with orjson, which accepts 1,024 levels, but orjson
//! serialises at most 254: a body nested between the two parses and then fails when a plugin or
//! an alias forces it to be written again. The limit therefore belongs in the parse step, and
//! this scan is what makes checking it cheap: strings are skipped with `memchr2` (their bytes
//! are most of a chat body), only brackets outside strings are counted, and the scan stops as
//! soon as the limit is passed, so a hostile 8 MB body of `[` costs the limit, not the body.

use memchr::memchr2;

/// The deepest nesting of arrays and objects in `data`, stopping early (returning
/// `limit + 1`) once it passes `limit`. A scalar document has depth 0. The bytes are assumed
/// to be JSON that a parser accepted or will judge; unbalanced brackets are not an error here.
pub fn json_depth(data: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'"' => {
                // Skip to the closing quote: the next quote not escaped by an odd run of '\'.
                i += 1;
                loop {
                    match memchr2(b'"', b'\\', &data[i..]) {
                        None => return deepest,
                        Some(at) if data[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                    }
                    if i >= data.len() {
                        return deepest;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > limit {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn counts_nesting_outside_strings_only() {
        assert_eq!(json_depth(b"1", 10), 0);
        assert_eq!(json_depth(b"{}", 10), 1);
        assert_eq!(json_depth(br#"{"a":[1,{"b":[]}]}"#, 10), 4);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{"}"#, 10), 1);
        assert_eq!(json_depth(br#"["x\"[[[", ["y\\"], [[]]]"#, 10), 3);
        assert_eq!(json_depth(br#"["\\\"[[", 1]"#, 10), 1);
    }

    #[test]
    fn stops_once_past_the_limit() {
        let deep = vec![b'['; 1_000_000];
        assert_eq!(json_depth(&deep, 64), 65);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        assert_eq!(json_depth(br#"["abc"#, 10), 1);
        assert_eq!(json_depth(br#"["ab\"#, 10), 1);
        assert_eq!(json_depth(b"]]]}}", 10), 0);
    }
}
