//! Background re-training: lookups and inserts proceed while a job runs, and every change made
//! meanwhile (inserts, deletes, TTL sweeps, LRU evictions) survives the swap to the new layout.
//! Jobs are held at a barrier (`hold_retraining`) so "during training" is deterministic.

use std::time::Duration;

use super::tests::{clustered, temp_path};
use super::*;

const DIM: usize = 32;
/// Every job in these tests finishes in milliseconds; this only bounds a broken test.
const GENEROUS: Option<Duration> = Some(Duration::from_secs(60));

fn small_index(max_entries: usize, threshold: usize) -> SimilarityIndex {
    let mut config = IndexConfig::new(DIM, max_entries, Quantization::I8);
    config.approximate_threshold = threshold;
    SimilarityIndex::new(config).unwrap()
}

fn row(points: &[f32], i: usize) -> &[f32] {
    &points[i * DIM..(i + 1) * DIM]
}

/// Whether the entry stored with `points[i]` is the best match for that exact vector.
fn finds_itself(idx: &SimilarityIndex, points: &[f32], i: usize, id: u64, now: f64) -> bool {
    idx.best_match("ns", row(points, i), 0.999, now).unwrap().is_some_and(|m| m.id == id)
}

#[test]
fn changes_during_training_survive_the_swap() {
    let idx = small_index(100_000, 1000);
    let (_, points) = clustered(2000, DIM, 40, 0.3, 11);
    idx.hold_retraining(true);
    let before = idx.insert_many("ns", &points[..1200 * DIM], vec![vec![1]; 1200], None, 0.0).unwrap();
    assert!(idx.is_retraining("ns") && !idx.is_partitioned("ns"), "crossing the threshold starts a job, not a synchronous training");
    assert!(idx.wait_until_retraining_held(Duration::from_secs(60)), "the job copied the rows present at its start");
    assert!(!idx.wait_idle(Some(Duration::from_millis(50))), "the held job cannot finish");
    // While it runs: lookups answer from the exact layout; inserts, deletes and TTL go on.
    assert!(before.iter().enumerate().all(|(i, id)| finds_itself(&idx, &points, i, *id, 0.0)));
    let mut during = Vec::new();
    for i in 1200..1700 {
        during.push(idx.insert("ns", row(&points, i), &[2], None, 0.0).unwrap());
    }
    let mortal: Vec<u64> = (1700..1800).map(|i| idx.insert("ns", row(&points, i), &[3], Some(5.0), 0.0).unwrap()).collect();
    let deleted: Vec<(usize, u64)> = (0..1200).step_by(7).map(|i| (i, before[i])).chain((0..500).step_by(5).map(|j| (1200 + j, during[j]))).collect();
    for (_, id) in &deleted {
        assert!(idx.delete(*id));
    }
    assert_eq!(idx.purge_expired(10.0), 100, "the TTL sweep during training reclaims the expired rows");
    assert!(idx.is_retraining("ns"), "still held: every change above happened mid-training");
    idx.hold_retraining(false);
    assert!(idx.wait_idle(GENEROUS));
    assert!(idx.is_partitioned("ns") && !idx.is_retraining("ns"));
    assert_eq!(idx.namespace_len("ns"), 1800 - deleted.len() - mortal.len());
    let gone: std::collections::HashSet<u64> = deleted.iter().map(|(_, id)| *id).chain(mortal.iter().copied()).collect();
    let stored: Vec<(usize, u64)> = before.iter().copied().enumerate().chain(during.iter().enumerate().map(|(j, id)| (1200 + j, *id))).collect();
    let mut live = 0;
    for (i, id) in stored {
        if gone.contains(&id) {
            assert!(!finds_itself(&idx, &points, i, id, 10.0), "deleted entry {id} came back");
        } else {
            assert!(finds_itself(&idx, &points, i, id, 10.0), "entry {id} (row {i}) lost or misplaced");
            live += 1;
        }
    }
    assert_eq!(live, idx.namespace_len("ns"), "recall 1.0 on exact-match queries");
    for (k, id) in mortal.iter().enumerate() {
        assert!(!finds_itself(&idx, &points, 1700 + k, *id, 10.0), "expired entry {id} came back");
    }
    // Inserts after the swap land in the new partitions.
    let after = idx.insert("ns", row(&points, 1900), &[4], None, 10.0).unwrap();
    assert!(finds_itself(&idx, &points, 1900, after, 10.0));
}

#[test]
fn lru_evictions_during_training_are_honoured() {
    // 200 inserts during training: few enough that the job places them under the write lock at
    // the swap instead of in a catch-up round (the other test covers catch-up).
    let idx = small_index(1100, 1000);
    let (_, points) = clustered(1400, DIM, 30, 0.3, 5);
    idx.hold_retraining(true);
    let ids = idx.insert_many("ns", &points[..1200 * DIM], vec![vec![]; 1200], None, 0.0).unwrap();
    assert!(idx.is_retraining("ns"));
    assert!(idx.wait_until_retraining_held(Duration::from_secs(60)));
    let more: Vec<u64> = (1200..1400).map(|i| idx.insert("ns", row(&points, i), b"", None, 0.0).unwrap()).collect();
    assert_eq!(idx.len(), 1100, "300 of the oldest were evicted mid-training");
    idx.hold_retraining(false);
    assert!(idx.wait_idle(GENEROUS));
    assert!(idx.is_partitioned("ns"));
    let all: Vec<u64> = ids.iter().chain(&more).copied().collect();
    for (i, id) in all.iter().enumerate() {
        assert_eq!(finds_itself(&idx, &points, i, *id, 0.0), i >= 300, "row {i}");
    }
}

#[test]
fn a_lookup_from_another_thread_returns_while_training_runs() {
    let idx = std::sync::Arc::new(small_index(10_000, 1000));
    let (_, points) = clustered(1500, DIM, 30, 0.3, 9);
    idx.hold_retraining(true);
    let ids = idx.insert_many("ns", &points, vec![vec![]; 1500], None, 0.0).unwrap();
    let reader = {
        let (idx, points) = (idx.clone(), points.clone());
        std::thread::spawn(move || (0..1500).step_by(10).all(|i| finds_itself(&idx, &points, i, ids[i], 0.0)))
    };
    assert!(reader.join().unwrap(), "lookups returned correct results mid-training");
    assert!(idx.is_retraining("ns"), "the job was running (held) the whole time");
    idx.hold_retraining(false);
    assert!(idx.wait_idle(GENEROUS));
}

#[test]
fn growth_during_training_chains_a_follow_up_job() {
    let idx = small_index(100_000, 500);
    let (_, points) = clustered(2100, DIM, 30, 0.3, 3);
    idx.hold_retraining(true);
    idx.insert_many("ns", &points[..500 * DIM], vec![vec![]; 500], None, 0.0).unwrap();
    // Doubling twice while the first job is held: the swap must start a second job.
    let rest = idx.insert_many("ns", &points[500 * DIM..], vec![vec![]; 1600], None, 0.0).unwrap();
    idx.hold_retraining(false);
    assert!(idx.wait_idle(GENEROUS), "wait_idle also waits for the follow-up job");
    assert!(idx.is_partitioned("ns") && !idx.is_retraining("ns"));
    assert!(rest.iter().enumerate().all(|(j, id)| finds_itself(&idx, &points, 500 + j, *id, 0.0)));
}

#[test]
fn emptying_a_namespace_abandons_its_job() {
    let idx = small_index(10_000, 1000);
    let (_, points) = clustered(1000, DIM, 20, 0.3, 4);
    idx.hold_retraining(true);
    let ids = idx.insert_many("ns", &points, vec![vec![]; 1000], None, 0.0).unwrap();
    assert!(idx.wait_until_retraining_held(Duration::from_secs(60)));
    for id in &ids {
        idx.delete(*id);
    }
    let again = idx.insert("ns", row(&points, 0), b"", None, 0.0).unwrap();
    idx.hold_retraining(false);
    assert!(idx.wait_idle(GENEROUS));
    assert_eq!(idx.namespace_len("ns"), 1);
    assert!(!idx.is_partitioned("ns"), "the abandoned job did not install its layout");
    assert!(finds_itself(&idx, &points, 0, again, 0.0));
}

#[test]
fn dropping_the_index_stops_a_held_job() {
    let idx = small_index(10_000, 1000);
    let (_, points) = clustered(1000, DIM, 20, 0.3, 4);
    idx.hold_retraining(true);
    idx.insert_many("ns", &points, vec![vec![]; 1000], None, 0.0).unwrap();
    assert!(idx.wait_until_retraining_held(Duration::from_secs(60)));
    drop(idx); // must not hang or leak a thread waiting forever (close releases the hold)
}

#[test]
fn a_loaded_snapshot_serves_exactly_while_it_trains() {
    let path = temp_path("retrain-load.bin");
    let idx = small_index(10_000, 1000);
    let (_, points) = clustered(1500, DIM, 30, 0.3, 8);
    let ids = idx.insert_many("ns", &points, vec![vec![7]; 1500], None, 0.0).unwrap();
    assert!(idx.wait_idle(GENEROUS) && idx.is_partitioned("ns"));
    snapshot::save(&idx, &path).unwrap();
    let loaded = snapshot::load_with(&path, true).unwrap();
    assert!(loaded.wait_until_retraining_held(Duration::from_secs(60)));
    assert!(loaded.is_retraining("ns") && !loaded.is_partitioned("ns"), "load returns without training");
    assert!(ids.iter().enumerate().all(|(i, id)| finds_itself(&loaded, &points, i, *id, 0.0)));
    loaded.hold_retraining(false);
    assert!(loaded.wait_idle(GENEROUS) && loaded.is_partitioned("ns"));
    assert!(ids.iter().enumerate().all(|(i, id)| finds_itself(&loaded, &points, i, *id, 0.0)));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn training_on_every_row_is_available_and_equivalent() {
    let mut config = IndexConfig::new(DIM, 10_000, Quantization::I8);
    config.approximate_threshold = 1000;
    config.training_sample_per_list = 0;
    let idx = SimilarityIndex::new(config).unwrap();
    let (_, points) = clustered(1500, DIM, 30, 0.3, 2);
    let ids = idx.insert_many("ns", &points, vec![vec![]; 1500], None, 0.0).unwrap();
    assert!(idx.wait_idle(GENEROUS) && idx.is_partitioned("ns"));
    assert!(ids.iter().enumerate().all(|(i, id)| finds_itself(&idx, &points, i, *id, 0.0)));
}

#[test]
fn a_cancelled_job_compacts_its_tombstones() {
    // The path a failed job takes: the namespace must serve and remove rows normally after it.
    let (_, points) = clustered(300, DIM, 10, 0.3, 12);
    let k = Kernels::active();
    let mut ns = namespace::Namespace::new(DIM, true);
    for i in 0..300 {
        ns.insert(i as u64 + 1, ttl::NEVER, row(&points, i), k);
    }
    ns.start_job(1);
    for id in (1..=300).step_by(3) {
        assert!(ns.remove(id));
    }
    ns.cancel_job();
    assert!(!ns.is_retraining() && ns.len() == 200);
    assert_eq!(ns.block_lens(), vec![200], "tombstones compacted away");
    assert!(ns.remove(2) && ns.remove(300) && !ns.remove(1));
    let query = vector::Query::new(row(&points, 4), DIM).unwrap();
    assert_eq!(ns.search(&query, 0.0, 1, 16, k)[0].1, 5);
}
