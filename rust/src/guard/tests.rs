use super::pii::{PiiDetector, PiiType};
use super::*;

fn found(text: &str) -> Vec<(&'static str, String)> {
    let d = PiiDetector::new(&PiiType::ALL);
    d.find(text)
        .into_iter()
        .map(|m| (m.ty.name(), text[m.start..m.end].to_owned()))
        .collect()
}

#[test]
fn finds_each_type_with_exact_spans() {
    let text = "mail a.b+c@example.co.uk, call +44 20 7946 0958, card 4111 1111 1111 1111, \
                IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, host 203.0.113.7 / 2001:db8::1, \
                key AKIAABCDEFGHIJKLMNOP.";
    let got = found(text);
    let want = [
        ("email", "a.b+c@example.co.uk"),
        ("phone", "+44 20 7946 0958"),
        ("card", "4111 1111 1111 1111"),
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("ssn", "123-45-6789"),
        ("ip", "203.0.113.7"),
        ("ip", "2001:db8::1"),
        ("secret", "AKIAABCDEFGHIJKLMNOP"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(t, v)| (*t, v.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn look_alikes_are_not_pii() {
    for text in [
        "Order 4111 1111 1111 1112 shipped",
        "version 1.2.3.4.5 and v1.2.3.4",
        "Section 4.2.1.7 covers retries",
        "SSN-shaped 666-12-3456 and 900-12-3456",
        "user@localhost and npm i @types/node@20.11.5",
        "risk-assessment-framework-document-for-the-board",
        "MAC 3c:22:fb:9a:10:7e at 23:59:59",
        "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    ] {
        assert!(found(text).is_empty(), "{text}: {:?}", found(text));
    }
}

#[test]
fn pem_block_and_open_block() {
    let d = PiiDetector::new(&PiiType::ALL);
    let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----";
    let text = format!("key:\n{block}\nthanks");
    let m = d.find(&text);
    assert_eq!(m.len(), 1);
    assert_eq!(&text[m[0].start..m[0].end], block);
    assert_eq!(d.open_block(&text), None);
    let partial = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK";
    assert_eq!(d.open_block(partial), Some(5));
    assert_eq!(d.open_block("token Bearer eyJhbGciOiJIUzI1"), Some(13));
    assert_eq!(d.open_block("nothing open here"), None);
    assert!(d.max_span() >= 254);
    assert_eq!(PiiDetector::new(&[PiiType::Ssn]).max_span(), 11);
}

#[test]
fn char_offsets_count_code_points() {
    let text = "é😀 x 中";
    let mut offs = vec![0, 2, 6, 7, text.len()];
    char_offsets(text, &mut offs);
    assert_eq!(offs, vec![0, 1, 2, 3, 6]);
}
