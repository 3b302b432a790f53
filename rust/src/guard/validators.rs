//! Checksum and shape validators for PII candidates: a regex finds what looks like a card number,
//! an IBAN, an SSN or an IP address; these decide whether it is one. Each is the reference
//! `llmgw/guardrails/detect.py` mirrors in pure Python.

/// Luhn (mod 10) over ASCII digits; anything else in `digits` is skipped.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &c in digits.iter().rev() {
        if !c.is_ascii_digit() {
            continue;
        }
        let mut n = (c - b'0') as u32;
        if double {
            n *= 2;
            if n > 9 {
                n -= 9;
            }
        }
        sum += n;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// IBAN length per country (the SWIFT registry's 80 countries and territories).
pub fn iban_length(country: &[u8]) -> Option<usize> {
    #[rustfmt::skip]
    const TABLE: &[(&[u8; 2], u8)] = &[
        (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20), (b"BE", 16),
        (b"BG", 22), (b"BH", 22), (b"BR", 29), (b"BY", 28), (b"CH", 21), (b"CR", 22), (b"CY", 28),
        (b"CZ", 24), (b"DE", 22), (b"DK", 18), (b"DO", 28), (b"EE", 20), (b"EG", 29), (b"ES", 24),
        (b"FI", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22), (b"GE", 22), (b"GI", 23), (b"GL", 18),
        (b"GR", 27), (b"GT", 28), (b"HR", 21), (b"HU", 28), (b"IE", 22), (b"IL", 23), (b"IQ", 23),
        (b"IS", 26), (b"IT", 27), (b"JO", 30), (b"KW", 30), (b"KZ", 20), (b"LB", 28), (b"LC", 32),
        (b"LI", 21), (b"LT", 20), (b"LU", 20), (b"LV", 21), (b"MC", 27), (b"MD", 24), (b"ME", 22),
        (b"MK", 19), (b"MR", 27), (b"MT", 31), (b"MU", 30), (b"NL", 18), (b"NO", 15), (b"PK", 24),
        (b"PL", 28), (b"PS", 29), (b"PT", 25), (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"SA", 24),
        (b"SC", 31), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27), (b"ST", 25), (b"SV", 28),
        (b"TL", 23), (b"TN", 24), (b"TR", 26), (b"UA", 29), (b"VA", 22), (b"VG", 24), (b"XK", 20),
    ];
    TABLE
        .iter()
        .find(|(cc, _)| cc[..] == *country)
        .map(|&(_, n)| n as usize)
}

/// IBAN: known country, that country's length, and ISO 7064 mod 97-10 == 1. Spaces are ignored.
pub fn iban(s: &[u8]) -> bool {
    let compact: Vec<u8> = s.iter().copied().filter(|&c| c != b' ').collect();
    if compact.len() < 5 || iban_length(&compact[..2]) != Some(compact.len()) {
        return false;
    }
    let mut rem = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + (c - b'0') as u32) % 97,
            b'A'..=b'Z' => (rem * 100 + (c - b'A' + 10) as u32) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// US SSN `AAA-GG-SSSS`: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn(s: &[u8]) -> bool {
    if s.len() != 11 || s[3] != b'-' || s[6] != b'-' {
        return false;
    }
    let (area, group, serial) = (&s[..3], &s[4..6], &s[7..]);
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// Dotted-quad IPv4, each octet 0..=255 without leading zeros.
pub fn ipv4(s: &[u8]) -> bool {
    let mut parts = 0;
    for part in s.split(|&c| c == b'.') {
        parts += 1;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        if part.len() > 1 && part[0] == b'0' {
            return false;
        }
        let v: u32 = part.iter().fold(0, |a, &c| a * 10 + (c - b'0') as u32);
        if v > 255 {
            return false;
        }
    }
    parts == 4
}

/// IPv6 in full, compressed (`::`) and IPv4-embedded (`::ffff:192.0.2.1`) forms.
pub fn ipv6(s: &[u8]) -> bool {
    let mut head = s;
    let mut need = 8;
    if let Some(dot) = s.iter().position(|&c| c == b'.') {
        let _ = dot;
        let colon = match s.iter().rposition(|&c| c == b':') {
            Some(i) => i,
            None => return false,
        };
        if !ipv4(&s[colon + 1..]) {
            return false;
        }
        head = &s[..colon + 1];
        if head.ends_with(b":") && !head.ends_with(b"::") {
            head = &head[..head.len() - 1];
        }
        need = 6;
    }
    let double = head.windows(2).filter(|w| w == b"::").count();
    let group_ok = |g: &[u8]| (1..=4).contains(&g.len()) && g.iter().all(u8::is_ascii_hexdigit);
    match double {
        0 => {
            let groups: Vec<&[u8]> = if head.is_empty() {
                Vec::new()
            } else {
                head.split(|&c| c == b':').collect()
            };
            groups.len() == need && groups.iter().all(|g| group_ok(g))
        }
        1 => {
            let at = head.windows(2).position(|w| w == b"::").unwrap();
            let (h, t) = (&head[..at], &head[at + 2..]);
            let split = |x: &[u8]| -> Vec<Vec<u8>> {
                if x.is_empty() {
                    Vec::new()
                } else {
                    x.split(|&c| c == b':').map(|g| g.to_vec()).collect()
                }
            };
            let groups: Vec<Vec<u8>> = split(h).into_iter().chain(split(t)).collect();
            groups.len() < need && groups.iter().all(|g| group_ok(g))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_valid_and_rejects_one_digit_off() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"1234567890123456"));
    }

    #[test]
    fn iban_checks_country_length_and_mod97() {
        assert!(iban(b"DE89 3704 0044 0532 0130 00"));
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"NO9386011117947"));
        assert!(!iban(b"DE89 3704 0044 0532 0130 01")); // checksum
        assert!(!iban(b"DE89 3704 0044 0532 0130")); // length for DE
        assert!(!iban(b"ZZ89 3704 0044 0532 0130 00")); // unknown country
        assert!(!iban(b"DE00 0000 0000 0000 0000 00"));
        assert_eq!(iban_length(b"FR"), Some(27));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(b"123-45-6789"));
        assert!(ssn(b"899-01-0001"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
        ] {
            assert!(!ssn(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn ipv4_octets() {
        assert!(ipv4(b"192.168.1.1"));
        assert!(ipv4(b"0.0.0.0"));
        assert!(ipv4(b"255.255.255.255"));
        for bad in [
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "a.b.c.d",
        ] {
            assert!(!ipv4(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn ipv6_forms_agree_with_std() {
        let cases = [
            "2001:db8::1",
            "::1",
            "::",
            "fe80::1c2b:3aff:fe4d:9e10",
            "2001:db8:0:0:1:0:0:1",
            "::ffff:192.0.2.128",
            "2001:db8:4c2a::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "12345::1",
            "3c:22:fb:9a:10:7e",
            "01:23:45",
            "g::1",
            "1:2:3:4:5:6:1.2.3.4",
            "::1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            ":1:2:3:4:5:6:7",
            "1:",
        ];
        for c in cases {
            let std_ok = c.parse::<std::net::Ipv6Addr>().is_ok();
            assert_eq!(ipv6(c.as_bytes()), std_ok, "{c}");
        }
    }
}
