//! Behaviour tests of the whole index (kernel property tests live in `kernels`).

use super::*;
use std::path::PathBuf;

const DIM: usize = 16;

fn index(max_entries: usize, quantization: Quantization) -> SimilarityIndex {
    SimilarityIndex::new(IndexConfig::new(DIM, max_entries, quantization)).unwrap()
}

/// A vector pointing mostly along axis `i`.
fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.01f32; DIM];
    v[i % DIM] = 1.0;
    v
}

pub(super) struct Gaussian(pub(super) ivf::Rng);
impl Gaussian {
    pub(super) fn next(&mut self) -> f32 {
        // Sum of 4 uniforms: close enough to a normal for clustered test data.
        (0..4).map(|_| self.0.below(1 << 20) as f32 / (1 << 20) as f32 - 0.5).sum::<f32>() * 1.7
    }
}

pub(super) fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("simcache-{}-{name}", std::process::id()))
}

#[test]
fn best_match_finds_the_nearest_and_respects_threshold() {
    for q in [Quantization::None, Quantization::I8] {
        let idx = index(100, q);
        let a = idx.insert("ns", &axis(0), b"a", None, 0.0).unwrap();
        idx.insert("ns", &axis(1), b"b", None, 0.0).unwrap();
        let m = idx.best_match("ns", &axis(0), 0.9, 0.0).unwrap().unwrap();
        assert_eq!((m.id, m.payload.as_slice()), (a, &b"a"[..]));
        assert!((m.score - 1.0).abs() < 1e-5, "scores are exact cosines even when quantised");
        assert!(idx.best_match("ns", &axis(2), 0.9, 0.0).unwrap().is_none());
    }
}

#[test]
fn scale_does_not_matter_for_cosine() {
    let idx = index(10, Quantization::None);
    idx.insert("ns", &[3.0; DIM], b"x", None, 0.0).unwrap();
    let m = idx.best_match("ns", &[0.001; DIM], 0.999, 0.0).unwrap().unwrap();
    assert!((m.score - 1.0).abs() < 1e-5);
}

#[test]
fn namespaces_are_hard_partitions() {
    let idx = index(100, Quantization::None);
    idx.insert("tenant-a", &axis(0), b"a", None, 0.0).unwrap();
    assert!(idx.best_match("tenant-b", &axis(0), -1.0, 0.0).unwrap().is_none());
    assert!(idx.top_k("tenant-b", &axis(0), 5, 0.0).unwrap().is_empty());
    idx.insert("tenant-b", &axis(3), b"b", None, 0.0).unwrap();
    let hits = idx.top_k("tenant-b", &axis(0), 5, 0.0).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].payload, b"b");
}

#[test]
fn top_k_is_sorted_and_bounded() {
    let idx = index(100, Quantization::I8);
    for i in 0..10 {
        let mut v = axis(0);
        v[1] = i as f32 * 0.1;
        idx.insert("ns", &v, &[i as u8], None, 0.0).unwrap();
    }
    let hits = idx.top_k("ns", &axis(0), 3, 0.0).unwrap();
    let payloads: Vec<u8> = hits.iter().map(|m| m.payload[0]).collect();
    assert_eq!(payloads, vec![0, 1, 2]);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(idx.top_k("ns", &axis(0), 0, 0.0).unwrap().is_empty());
    assert_eq!(idx.top_k("ns", &axis(0), usize::MAX, 0.0).unwrap().len(), 10, "k beyond the row count returns every row");
}

#[test]
fn expired_entries_are_never_returned_and_are_reclaimed() {
    let idx = index(100, Quantization::None);
    idx.insert("ns", &axis(0), b"short", Some(10.0), 1000.0).unwrap();
    idx.insert("ns", &axis(1), b"forever", None, 1000.0).unwrap();
    assert!(idx.best_match("ns", &axis(0), 0.9, 1009.9).unwrap().is_some());
    assert!(idx.best_match("ns", &axis(0), 0.9, 1010.0).unwrap().is_none());
    assert_eq!(idx.top_k("ns", &axis(0), 5, 1010.0).unwrap().len(), 1);
    assert_eq!(idx.len(), 2, "reclaimed lazily, not at lookup");
    assert_eq!(idx.purge_expired(1010.0), 1);
    assert_eq!(idx.len(), 1);
}

#[test]
fn inserts_sweep_expired_entries_periodically() {
    let idx = index(100, Quantization::None);
    idx.insert("ns", &axis(0), b"a", Some(1.0), 0.0).unwrap();
    idx.insert("ns", &axis(1), b"b", None, 5.0).unwrap();
    assert_eq!(idx.len(), 1, "the insert at t=5 swept the entry that expired at t=1");
}

#[test]
fn lru_evicts_the_least_recently_used() {
    let idx = index(3, Quantization::None);
    let a = idx.insert("ns", &axis(0), b"a", None, 0.0).unwrap();
    let b = idx.insert("ns", &axis(1), b"b", None, 0.0).unwrap();
    let c = idx.insert("other", &axis(2), b"c", None, 0.0).unwrap();
    // A hit on `a` makes `b` the least recently used.
    assert_eq!(idx.best_match("ns", &axis(0), 0.9, 0.0).unwrap().unwrap().id, a);
    let d = idx.insert("ns", &axis(3), b"d", None, 0.0).unwrap();
    assert_eq!(idx.len(), 3);
    assert!(idx.best_match("ns", &axis(1), 0.9, 0.0).unwrap().is_none(), "b was evicted");
    assert_eq!(idx.ids_by_recency(), vec![c, a, d]);
    assert!(!idx.delete(b));
}

#[test]
fn at_capacity_expired_entries_go_before_live_ones() {
    let idx = index(2, Quantization::None);
    let live = idx.insert("ns", &axis(0), b"live", None, 0.0).unwrap();
    idx.insert("ns", &axis(1), b"dying", Some(0.5), 0.2).unwrap();
    // t=0.8: the periodic sweep is not due (next at 1.0), so only the capacity check reclaims.
    idx.insert("ns", &axis(2), b"new", None, 0.8).unwrap();
    assert_eq!(idx.len(), 2);
    assert_eq!(idx.best_match("ns", &axis(0), 0.9, 0.8).unwrap().unwrap().id, live);
}

#[test]
fn delete_removes_and_reports() {
    let idx = index(10, Quantization::I8);
    let a = idx.insert("ns", &axis(0), b"a", None, 0.0).unwrap();
    let b = idx.insert("ns", &axis(1), b"b", None, 0.0).unwrap();
    assert!(idx.delete(a));
    assert!(!idx.delete(a));
    assert!(idx.best_match("ns", &axis(0), 0.9, 0.0).unwrap().is_none());
    assert_eq!(idx.best_match("ns", &axis(1), 0.9, 0.0).unwrap().unwrap().id, b);
}

#[test]
fn bad_input_is_rejected() {
    let idx = index(10, Quantization::None);
    assert!(matches!(idx.insert("ns", &[1.0; 3], b"", None, 0.0), Err(SimcacheError::WrongDimension { .. })));
    assert!(matches!(idx.insert("ns", &[0.0; DIM], b"", None, 0.0), Err(SimcacheError::ZeroVector)));
    assert!(matches!(idx.insert("ns", &axis(0), b"", Some(-1.0), 0.0), Err(SimcacheError::InvalidArgument(_))));
    assert!(SimilarityIndex::new(IndexConfig::new(0, 10, Quantization::None)).is_err());
}

/// Clustered data like real embeddings: `clusters` Gaussian centres, points around them.
pub(super) fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gaussian(ivf::Rng::new(seed));
    let centres: Vec<f32> = (0..clusters * dim).map(|_| g.next()).collect();
    let mut pick = ivf::Rng::new(seed ^ 77);
    let mut points = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = pick.below(clusters);
        points.extend((0..dim).map(|j| centres[c * dim + j] + spread * g.next()));
    }
    (centres, points)
}

#[test]
fn partitioned_search_has_high_recall_on_clustered_data() {
    let dim = 64;
    let n = 6000;
    for quantization in [Quantization::None, Quantization::I8] {
        let mut config = IndexConfig::new(dim, n, quantization);
        config.approximate_threshold = 2000;
        let approx = SimilarityIndex::new(config.clone()).unwrap();
        config.approximate_threshold = usize::MAX;
        let exact = SimilarityIndex::new(config).unwrap();
        // Queries are new points from the same clusters: generate them with the stored ones.
        let (_, all) = clustered(n + 300, dim, 100, 0.35, 42);
        let (points, queries) = all.split_at(n * dim);
        let payloads: Vec<Vec<u8>> = (0..n as u32).map(|i| i.to_le_bytes().to_vec()).collect();
        approx.insert_many("ns", points, payloads.clone(), None, 0.0).unwrap();
        exact.insert_many("ns", points, payloads, None, 0.0).unwrap();
        assert!(approx.wait_idle(None));
        assert!(approx.is_partitioned("ns") && !exact.is_partitioned("ns"));
        let mut agree = 0;
        for q in queries.chunks_exact(dim) {
            let a = approx.top_k("ns", q, 1, 0.0).unwrap();
            let e = exact.top_k("ns", q, 1, 0.0).unwrap();
            if a[0].payload == e[0].payload {
                agree += 1;
            }
        }
        assert!(agree >= 297, "{quantization:?}: recall@1 {agree}/300");
    }
}

#[test]
fn partitioned_namespace_supports_delete_and_shrinks_back() {
    let dim = 32;
    let mut config = IndexConfig::new(dim, 10_000, Quantization::I8);
    config.approximate_threshold = 400;
    let idx = SimilarityIndex::new(config).unwrap();
    let (_, points) = clustered(500, dim, 20, 0.3, 7);
    let ids = idx.insert_many("ns", &points, (0..500).map(|i: u32| i.to_le_bytes().to_vec()).collect(), None, 0.0).unwrap();
    assert!(idx.wait_idle(None));
    assert!(idx.is_partitioned("ns"));
    let m = idx.best_match("ns", &points[7 * dim..8 * dim], 0.999, 0.0).unwrap().unwrap();
    assert_eq!(m.id, ids[7]);
    assert!(idx.delete(ids[7]));
    let after = idx.best_match("ns", &points[7 * dim..8 * dim], -1.0, 0.0).unwrap().unwrap();
    assert_ne!(after.id, ids[7]);
    for id in &ids[..400] {
        idx.delete(*id);
    }
    assert!(!idx.is_partitioned("ns"), "below threshold/2 the namespace is searched exactly again");
    let m = idx.best_match("ns", &points[450 * dim..451 * dim], 0.999, 0.0).unwrap().unwrap();
    assert_eq!(m.id, ids[450]);
}

#[test]
fn snapshot_round_trip_keeps_entries_ttl_and_recency() {
    let path = temp_path("roundtrip.bin");
    let idx = index(10, Quantization::I8);
    let a = idx.insert("a", &axis(0), b"alpha", None, 100.0).unwrap();
    let b = idx.insert("b", &axis(1), b"beta", Some(50.0), 100.0).unwrap();
    idx.best_match("a", &axis(0), 0.5, 100.0).unwrap();
    snapshot::save(&idx, &path).unwrap();
    let loaded = snapshot::load(&path).unwrap();
    assert_eq!(loaded.config(), idx.config());
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded.ids_by_recency(), vec![b, a]);
    assert_eq!(loaded.best_match("a", &axis(0), 0.99, 120.0).unwrap().unwrap().payload, b"alpha");
    assert_eq!(loaded.best_match("b", &axis(1), 0.99, 120.0).unwrap().unwrap().id, b);
    assert!(loaded.best_match("b", &axis(1), 0.99, 150.0).unwrap().is_none(), "TTL survives the round trip");
    let c = loaded.insert("a", &axis(2), b"gamma", None, 120.0).unwrap();
    assert!(c > b, "ids keep increasing after a load");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn corrupt_or_truncated_snapshots_are_rejected_clearly() {
    let path = temp_path("corrupt.bin");
    let idx = index(10, Quantization::None);
    idx.insert("ns", &axis(0), b"payload", None, 0.0).unwrap();
    snapshot::save(&idx, &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let expect_err = |bytes: &[u8], needle: &str| {
        std::fs::write(&path, bytes).unwrap();
        match snapshot::load(&path) {
            Err(SimcacheError::Snapshot(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
            Err(other) => panic!("wrong error kind: {other}"),
            Ok(_) => panic!("loaded a bad file (expected {needle:?})"),
        }
    };
    let mut flipped = good.clone();
    let mid = good.len() - 20;
    flipped[mid] ^= 0x40;
    expect_err(&flipped, "checksum");
    expect_err(&good[..good.len() - 9], "truncated");
    expect_err(&good[..3], "too short");
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    expect_err(&wrong_magic, "magic");
    let mut future = good.clone();
    future[8] = 9;
    expect_err(&future, "version 9");
    let mut trailing = good.clone();
    trailing.push(0);
    expect_err(&trailing, "after the checksum");
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(snapshot::load(&temp_path("missing.bin")), Err(SimcacheError::Io(_))));
}

#[test]
fn concurrent_readers_and_a_writer_stay_consistent() {
    let idx = std::sync::Arc::new(index(1000, Quantization::I8));
    for i in 0..DIM {
        idx.insert("ns", &axis(i), &[i as u8], None, 0.0).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..3 {
            let idx = idx.clone();
            s.spawn(move || {
                for r in 0..500 {
                    let i = (r + t) % DIM;
                    let m = idx.best_match("ns", &axis(i), 0.99, 0.0).unwrap().unwrap();
                    assert_eq!(m.payload, vec![i as u8]);
                }
            });
        }
        let idx = idx.clone();
        s.spawn(move || {
            for r in 0..500 {
                let id = idx.insert("other", &axis(r), b"x", None, 0.0).unwrap();
                assert!(idx.delete(id));
            }
        });
    });
    assert_eq!(idx.len(), DIM);
}
