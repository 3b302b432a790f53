//! Image input tokens by OpenAI's documented tile formula, and image sizes from data: URLs.
//!
//! Formula (OpenAI vision guide, "Calculating costs"): `detail: low` costs the base tokens
//! (85 on gpt-4o). `high` (and `auto`, counted as high: the upper of the two) first scales the
//! image to fit in 2048×2048, then so its shortest side is 768 px (only ever shrinking), and
//! costs base + tile × (number of 512 px tiles). 1024×1024 → 768×768 → 4 tiles → 765.
//!
//! The size is read from the header of a `data:` URL (PNG, GIF, JPEG, WebP). For a remote URL
//! the size is unknown (nothing is fetched): we assume a square image of at least 768 px, i.e.
//! 4 tiles (765 tokens on gpt-4o) — the commonest case for photos and screenshots.

use base64::Engine;

/// Tiles assumed when the image size is unknown (a square image ≥ 768 px).
pub const UNKNOWN_SIZE_TILES: u32 = 4;

/// Tokens for one image.
pub fn image_tokens(url: &str, detail: Option<&str>, base: u32, tile: u32) -> u32 {
    if detail == Some("low") {
        return base;
    }
    let tiles = match data_url_image_size(url) {
        Some((width, height)) => high_detail_tiles(width, height),
        None => UNKNOWN_SIZE_TILES,
    };
    base + tile * tiles
}

/// Number of 512 px tiles of a `width` × `height` image sent at high detail.
pub fn high_detail_tiles(width: u32, height: u32) -> u32 {
    if width == 0 || height == 0 {
        return 0;
    }
    let (mut w, mut h) = (width as u64, height as u64);
    let longest = w.max(h);
    if longest > 2048 {
        w = (w * 2048 / longest).max(1);
        h = (h * 2048 / longest).max(1);
    }
    let shortest = w.min(h);
    if shortest > 768 {
        w = (w * 768 / shortest).max(1);
        h = (h * 768 / shortest).max(1);
    }
    (w.div_ceil(512) * h.div_ceil(512)) as u32
}

/// (width, height) of a base64 `data:image/...` URL's image, read from its header.
pub fn data_url_image_size(url: &str) -> Option<(u32, u32)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    if !meta.ends_with(";base64") {
        return None;
    }
    // JPEG's size sits after its metadata segments (EXIF can be ~64 KB); decode at most 256 KB.
    let take = payload.len().min(256 * 1024) / 4 * 4;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&payload[..take])
        .ok()?;
    image_size(&bytes)
}

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32)
}

fn le16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32)
}

fn le24(b: &[u8], i: usize) -> Option<u32> {
    let s = b.get(i..i + 3)?;
    Some(s[0] as u32 | (s[1] as u32) << 8 | (s[2] as u32) << 16)
}

/// (width, height) from the first bytes of a PNG, GIF, JPEG or WebP file.
pub fn image_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.get(12..16) == Some(b"IHDR") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        return Some((w, h));
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some((le16(b, 6)?, le16(b, 8)?));
    }
    if b.starts_with(&[0xff, 0xd8]) {
        return jpeg_size(b);
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return match b.get(12..16)? {
            b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8 " => Some((le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff)),
            _ => None,
        };
    }
    None
}

/// Walk the JPEG segments to the first start-of-frame marker, which holds the size.
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        while *b.get(i)? != 0xff {
            i += 1;
        }
        while *b.get(i)? == 0xff {
            i += 1; // fill bytes
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0xd8 | 0x01 | 0xd0..=0xd7 => continue, // no length field
            0xc0..=0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => {
                return Some((be16(b, i + 5)?, be16(b, i + 3)?));
            }
            _ => i += be16(b, i)? as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        // OpenAI's worked examples: 1024×1024 high → 765; 2048×4096 high → 1105; low → 85.
        assert_eq!(85 + 170 * high_detail_tiles(1024, 1024), 765);
        assert_eq!(85 + 170 * high_detail_tiles(2048, 4096), 1105);
        assert_eq!(image_tokens("https://x/y.png", Some("low"), 85, 170), 85);
        assert_eq!(image_tokens("https://x/y.png", Some("high"), 85, 170), 765);
        assert_eq!(high_detail_tiles(100, 100), 1);
    }

    #[test]
    fn sizes_from_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(4000u32.to_be_bytes());
        png.extend(3000u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((4000, 3000)));
        let gif = b"GIF89a\x40\x01\xf0\x00";
        assert_eq!(image_size(gif), Some((320, 240)));
        // SOI, APP0 (length 4), SOF0 with height 480 and width 640.
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 17, 8, 0x01, 0xe0, 0x02, 0x80,
        ];
        assert_eq!(image_size(&jpeg), Some((640, 480)));
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        // 4000×3000 → 2048×1536 → 1024×768 → 2×2 tiles.
        assert_eq!(image_tokens(&url, None, 85, 170), 765);
        assert_eq!(data_url_image_size("data:image/png;base64,!!!!"), None);
    }
}
