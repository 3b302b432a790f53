//! Byte-pair merging of one pre-tokenised piece, counting the tokens it becomes.
//!
//! Same merge order as tiktoken: repeatedly merge the adjacent pair whose concatenation has the
//! lowest rank, the leftmost one on ties, until no adjacent pair is a token. Short pieces use
//! tiktoken's simple O(n²) scan (fastest below ~100 bytes); long ones (1 MB of "a" is one piece)
//! use a min-heap over pair ranks, O(n log n), so no input is quadratic.

use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub type Ranks = FxHashMap<Vec<u8>, u32>;

/// Pieces at least this long go through the heap merge. Measured on this machine: the scan is
/// faster up to ~100 bytes and the heap wins clearly past ~200.
const HEAP_MERGE_MIN_LEN: usize = 128;

#[inline(always)]
fn rank_of(ranks: &Ranks, bytes: &[u8]) -> u32 {
    ranks.get(bytes).copied().unwrap_or(u32::MAX)
}

/// Number of tokens `piece` (non-empty) becomes, merging from scratch (no whole-piece lookup).
pub fn merged_token_count(ranks: &Ranks, piece: &[u8]) -> usize {
    if piece.len() < HEAP_MERGE_MIN_LEN {
        scan_merge_count(ranks, piece)
    } else {
        heap_merge_count(ranks, piece)
    }
}

/// tiktoken's algorithm: `parts[i] = (start of part i, rank of part i merged with part i+1)`.
pub fn scan_merge_count(ranks: &Ranks, piece: &[u8]) -> usize {
    if piece.len() < 2 {
        return piece.len();
    }
    let mut parts: Vec<(usize, u32)> = (0..piece.len())
        .map(|i| {
            let rank = if i + 2 <= piece.len() { rank_of(ranks, &piece[i..i + 2]) } else { u32::MAX };
            (i, rank)
        })
        .collect();
    parts.push((piece.len(), u32::MAX));
    // Rank of part i merged with its successor, given the current boundaries.
    let pair_rank = |parts: &[(usize, u32)], i: usize| -> u32 {
        if i + 2 < parts.len() {
            rank_of(ranks, &piece[parts[i].0..parts[i + 2].0])
        } else {
            u32::MAX
        }
    };
    loop {
        let mut min = (u32::MAX, 0);
        for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
            if rank < min.0 {
                min = (rank, i);
            }
        }
        if min.0 == u32::MAX {
            break;
        }
        let i = min.1;
        parts.remove(i + 1);
        parts[i].1 = pair_rank(&parts, i);
        if i > 0 {
            parts[i - 1].1 = pair_rank(&parts, i - 1);
        }
    }
    parts.len() - 1
}

/// The same merges driven by a min-heap of `(rank, start)`: popping the smallest key gives the
/// lowest rank and, among equal ranks, the leftmost pair — tiktoken's choice. Stale entries are
/// recognised by the pair's current rank no longer matching.
pub fn heap_merge_count(ranks: &Ranks, piece: &[u8]) -> usize {
    let n = piece.len();
    if n < 2 {
        return n;
    }
    // Segments are named by their start byte; `next[s]` is the start of the following segment
    // (n for the last one), `prev[s]` the start of the preceding one.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let mut pair: Vec<u32> = vec![u32::MAX; n];
    let mut heap = BinaryHeap::with_capacity(n);
    for s in 0..n - 1 {
        let rank = rank_of(ranks, &piece[s..s + 2]);
        pair[s] = rank;
        if rank != u32::MAX {
            heap.push(Reverse((rank, s)));
        }
    }
    let mut segments = n;
    let pair_rank = |next: &[usize], s: usize| -> u32 {
        let following = next[s];
        if following >= n {
            return u32::MAX;
        }
        rank_of(ranks, &piece[s..next[following]])
    };
    while let Some(Reverse((rank, s))) = heap.pop() {
        if pair[s] != rank {
            continue; // stale: this segment or its neighbour changed since the push
        }
        let absorbed = next[s];
        next[s] = next[absorbed];
        if next[s] < n {
            prev[next[s]] = s;
        }
        pair[absorbed] = u32::MAX;
        segments -= 1;
        let new_rank = pair_rank(&next, s);
        pair[s] = new_rank;
        if new_rank != u32::MAX {
            heap.push(Reverse((new_rank, s)));
        }
        let before = prev[s];
        if before != usize::MAX {
            let before_rank = pair_rank(&next, before);
            pair[before] = before_rank;
            if before_rank != u32::MAX {
                heap.push(Reverse((before_rank, before)));
            }
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_ranks() -> Ranks {
        let mut ranks = Ranks::default();
        for b in 0..=255u8 {
            ranks.insert(vec![b], b as u32);
        }
        for (i, tok) in ["aa", "aaaa", "ab", "ba", "aab", "bb", "abab"].iter().enumerate() {
            ranks.insert(tok.as_bytes().to_vec(), 256 + i as u32);
        }
        ranks
    }

    #[test]
    fn heap_and_scan_agree_on_every_short_string() {
        let ranks = toy_ranks();
        // All strings over {a, b} up to length 12.
        for len in 1..=12u32 {
            for bits in 0..(1u32 << len) {
                let s: Vec<u8> = (0..len).map(|i| if bits >> i & 1 == 1 { b'b' } else { b'a' }).collect();
                assert_eq!(scan_merge_count(&ranks, &s), heap_merge_count(&ranks, &s), "{s:?}");
            }
        }
    }

    #[test]
    fn merges_lowest_rank_leftmost_first() {
        let ranks = toy_ranks();
        // "aaa": "aa" (rank 256) merges at the left first, leaving "aa" + "a".
        assert_eq!(scan_merge_count(&ranks, b"aaa"), 2);
        assert_eq!(scan_merge_count(&ranks, b"aaaa"), 1);
        assert_eq!(heap_merge_count(&ranks, &vec![b'a'; 1000]), 250);
        assert_eq!(scan_merge_count(&ranks, b"xyz"), 3);
    }
}
