//! Key hashing for the shared table: two SipHash-1-3 values of one message, computed in one pass.
//!
//! Every process mapping a table must derive the same slot for a key, so the seeds cannot come
//! from `RandomState` (random per process). They are fixed per table instead: drawn once when the
//! file is created and stored in its header. Keys can be request-controlled (user ids), and a
//! client that could compute hashes could aim many keys at one probe window and make a victim's
//! key overflow; secret per-table seeds rule that out, as SipHash's keyed PRF is meant to.
//!
//! The two 64-bit hashes use independent key pairs, so together they identify a key by 128 bits:
//! two distinct keys of one table share a slot with probability ~2^-128 per pair.

/// Hash kinds: the same string used as a rate-limit key, a budget key and a counter key is three
/// slots, never one slot read three ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Rate = 1,
    Budget = 2,
    Counter = 3,
}

#[derive(Clone, Copy)]
struct Sip {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Sip {
    fn new(k0: u64, k1: u64) -> Sip {
        Sip {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress<const C: usize>(&mut self, m: u64) {
        self.v3 ^= m;
        for _ in 0..C {
            self.round();
        }
        self.v0 ^= m;
    }

    #[inline(always)]
    fn finish<const D: usize>(mut self) -> u64 {
        self.v2 ^= 0xff;
        for _ in 0..D {
            self.round();
        }
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

/// SipHash-C-D of `msg` under keys `(k[0], k[1])` and `(k[2], k[3])`. Both states advance in the
/// same loop so the CPU overlaps them: the second hash costs far less than a second pass.
#[inline]
pub(crate) fn sip_pair<const C: usize, const D: usize>(k: &[u64; 4], msg: &[u8]) -> (u64, u64) {
    let mut a = Sip::new(k[0], k[1]);
    let mut b = Sip::new(k[2], k[3]);
    let mut words = msg.chunks_exact(8);
    for w in words.by_ref() {
        let m = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        a.compress::<C>(m);
        b.compress::<C>(m);
    }
    let mut last = (msg.len() as u64) << 56;
    for (i, &byte) in words.remainder().iter().enumerate() {
        last |= (byte as u64) << (8 * i);
    }
    a.compress::<C>(last);
    b.compress::<C>(last);
    (a.finish::<D>(), b.finish::<D>())
}

/// The two hashes of `key` as a `kind` key: SipHash-1-3 over `[kind] ++ key`. Neither is 0 (0
/// marks an empty slot word), so 0 maps to 1: that merges 2^-64 of the hash space, no more.
pub fn key_hashes(seeds: &[u64; 4], kind: Kind, key: &str) -> (u64, u64) {
    // Keys are short (~10-60 bytes): a stack copy avoids an allocation per call.
    let bytes = key.as_bytes();
    let mut buf = [0u8; 128];
    let (a, b) = if bytes.len() < buf.len() {
        buf[0] = kind as u8;
        buf[1..=bytes.len()].copy_from_slice(bytes);
        sip_pair::<1, 3>(seeds, &buf[..=bytes.len()])
    } else {
        let mut msg = Vec::with_capacity(bytes.len() + 1);
        msg.push(kind as u8);
        msg.extend_from_slice(bytes);
        sip_pair::<1, 3>(seeds, &msg)
    };
    (a.max(1), b.max(1))
}
