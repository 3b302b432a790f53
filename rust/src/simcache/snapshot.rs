//! Snapshot files: save an index to disk and load it back.
//!
//! Format (little-endian throughout), version 1:
//! ```text
//! magic        8 bytes  "LLMGWSIM"
//! version      u32      1
//! dim          u32
//! quantization u8       0 = none, 1 = i8
//! max_entries  u64
//! approx_threshold u64
//! probes       u32
//! next_id      u64
//! count        u64
//! count × entry, least recently used first (so loading restores the LRU order):
//!   id u64, expires_at f64 (+inf = never), namespace_len u32, namespace UTF-8,
//!   payload_len u32, payload, dim × f32 (the stored unit vector)
//! crc32        u32      CRC-32 (IEEE) of every byte before it
//! ```
//! Partitions are not stored: a loaded namespace serves exactly at once while a background job
//! re-trains them (k-means is deterministic).
//! Saving writes `<path>.tmp` and renames it over `path`, so a crash never leaves half a file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::error::SimcacheError;
use super::index::{IndexConfig, Quantization, SimilarityIndex};

const MAGIC: &[u8; 8] = b"LLMGWSIM";
const VERSION: u32 = 1;
/// Bounds on lengths read before the checksum can vouch for them, so a corrupt length cannot
/// trigger a huge allocation.
const MAX_NAMESPACE_BYTES: u32 = 1 << 16;
const MAX_PAYLOAD_BYTES: u32 = 1 << 30;

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], SimcacheError> {
        let mut buf = [0u8; N];
        self.exact(&mut buf)?;
        Ok(buf)
    }
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), SimcacheError> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => SimcacheError::Snapshot("file is truncated".into()),
            _ => SimcacheError::Io(e),
        })?;
        self.crc.update(buf);
        Ok(())
    }
    fn u32(&mut self) -> Result<u32, SimcacheError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, SimcacheError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn f64(&mut self) -> Result<f64, SimcacheError> {
        Ok(f64::from_le_bytes(self.bytes()?))
    }
}

/// Writes `index` to `path` atomically.
pub fn save(index: &SimilarityIndex, path: &Path) -> Result<(), SimcacheError> {
    let tmp = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.tmp", ext.to_string_lossy()),
        None => "tmp".to_string(),
    });
    let result = write_to(index, &tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(SimcacheError::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(index: &SimilarityIndex, path: &Path) -> Result<(), SimcacheError> {
    let config = index.config();
    let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, File::create(path)?), crc: crc32fast::Hasher::new() };
    // Hold the read lock for the whole write so the file is one consistent moment.
    let state = index.read();
    let order = index.recency().oldest_first();
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&(config.dim as u32).to_le_bytes())?;
    w.write_all(&[match config.quantization {
        Quantization::None => 0,
        Quantization::I8 => 1,
    }])?;
    w.write_all(&(config.max_entries as u64).to_le_bytes())?;
    w.write_all(&(config.approximate_threshold as u64).to_le_bytes())?;
    w.write_all(&(config.probes as u32).to_le_bytes())?;
    w.write_all(&state.next_id.to_le_bytes())?;
    w.write_all(&(order.len() as u64).to_le_bytes())?;
    for id in order {
        let entry = &state.entries[&id];
        let vector = state.namespaces[&entry.namespace].vector_of(id).expect("every entry has a row");
        w.write_all(&id.to_le_bytes())?;
        w.write_all(&entry.expires_at.to_le_bytes())?;
        w.write_all(&(entry.namespace.len() as u32).to_le_bytes())?;
        w.write_all(entry.namespace.as_bytes())?;
        w.write_all(&(entry.payload.len() as u32).to_le_bytes())?;
        w.write_all(&entry.payload)?;
        for x in vector {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes())?;
    inner.into_inner().map_err(|e| SimcacheError::Io(e.into_error()))?.sync_all()?;
    Ok(())
}

/// Reads a snapshot written by `save`. Errors name what is wrong: not a snapshot, unsupported
/// version, truncated, or checksum mismatch (corruption). Namespaces above the approximate
/// threshold are searched exactly until their background training finishes.
pub fn load(path: &Path) -> Result<SimilarityIndex, SimcacheError> {
    load_with(path, false)
}

/// `load`, optionally with the training jobs held from the start (test hook, see
/// `SimilarityIndex::hold_retraining`).
pub fn load_with(path: &Path, hold_retraining: bool) -> Result<SimilarityIndex, SimcacheError> {
    let file = File::open(path)?;
    let mut r = CrcReader { inner: BufReader::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    let magic: [u8; 8] = r.bytes().map_err(|_| SimcacheError::Snapshot("file is too short to be a snapshot".into()))?;
    if &magic != MAGIC {
        return Err(SimcacheError::Snapshot("not a simcache snapshot (bad magic header)".into()));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(SimcacheError::Snapshot(format!("unsupported format version {version} (this build reads {VERSION})")));
    }
    let dim = r.u32()? as usize;
    let quantization = match r.bytes::<1>()?[0] {
        0 => Quantization::None,
        1 => Quantization::I8,
        q => return Err(SimcacheError::Snapshot(format!("unknown quantization code {q}"))),
    };
    let max_entries = r.u64()? as usize;
    let approximate_threshold = r.u64()? as usize;
    let probes = r.u32()? as usize;
    let next_id = r.u64()?;
    let count = r.u64()?;
    let config = IndexConfig { approximate_threshold, probes, ..IndexConfig::new(dim, max_entries, quantization) };
    let index = SimilarityIndex::new(config).map_err(|e| SimcacheError::Snapshot(format!("bad header: {e}")))?;
    {
        let mut state = index.write();
        let mut recency = index.recency();
        let mut raw = vec![0u8; dim * 4];
        let mut vector = vec![0f32; dim];
        for _ in 0..count {
            let id = r.u64()?;
            let expires_at = r.f64()?;
            let ns_len = r.u32()?;
            if ns_len > MAX_NAMESPACE_BYTES {
                return Err(SimcacheError::Snapshot(format!("namespace length {ns_len} is implausible (corrupt file)")));
            }
            let mut ns = vec![0u8; ns_len as usize];
            r.exact(&mut ns)?;
            let ns = String::from_utf8(ns).map_err(|_| SimcacheError::Snapshot("namespace is not UTF-8 (corrupt file)".into()))?;
            let payload_len = r.u32()?;
            if payload_len > MAX_PAYLOAD_BYTES {
                return Err(SimcacheError::Snapshot(format!("payload length {payload_len} is implausible (corrupt file)")));
            }
            let mut payload = vec![0u8; payload_len as usize];
            r.exact(&mut payload)?;
            r.exact(&mut raw)?;
            for (x, b) in vector.iter_mut().zip(raw.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if id == 0 || id >= next_id || state.entries.contains_key(&id) {
                return Err(SimcacheError::Snapshot(format!("entry id {id} is invalid or repeated (corrupt file)")));
            }
            index.store_locked(&mut state, &mut recency, id, &ns, &vector, payload.into_boxed_slice(), expires_at);
        }
        let expected = r.crc.clone().finalize();
        let mut stored = [0u8; 4];
        r.inner.read_exact(&mut stored).map_err(|_| SimcacheError::Snapshot("file is truncated (checksum missing)".into()))?;
        if u32::from_le_bytes(stored) != expected {
            return Err(SimcacheError::Snapshot("checksum mismatch: the file is corrupt".into()));
        }
        let mut extra = [0u8; 1];
        if r.inner.read(&mut extra)? != 0 {
            return Err(SimcacheError::Snapshot("unexpected bytes after the checksum".into()));
        }
        state.next_id = next_id;
        index.hold_retraining(hold_retraining);
        let names: Vec<_> = state.namespaces.keys().cloned().collect();
        for name in names {
            index.reorganise(&mut state, &name);
        }
    }
    Ok(index)
}
