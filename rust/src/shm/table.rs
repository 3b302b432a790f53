//! The mapped file: header, slots, and the lock-free claim/find protocol.
//!
//! ```text
//! offset 0   header, 64 bytes
//!    0  magic      u64  b"LLMGWSHM" little-endian, written last at creation
//!    8  version    u32  FORMAT_VERSION
//!   12  slot_bytes u32  64
//!   16  slots      u64  a power of two
//!   24  used       u64  slots claimed so far (atomic)
//!   32  seeds      4 x u64  SipHash keys of this table (see hash.rs)
//! offset 64  slots x 64 bytes, slot i at 64 + 64 * i
//!    0  h1   u64  first key hash; 0 = empty (claimed by CAS 0 -> h1)
//!    8  h2   u64  second key hash; 0 = claim not finished (set by CAS 0 -> h2)
//!   16  a    i64  rate: encoded TAT; budget: committed; counter: value
//!   24  b    i64  budget: spent
//!   32  reserved, zero (room for later fields without a format change)
//! ```
//! A slot is 64 bytes, one cache line, so two hot keys never share a line (no false sharing
//! between processes hammering different buckets).
//!
//! All fields are native-endian atomics: a table is shared by processes on one machine, never
//! moved between machines.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use super::hash::{key_hashes, Kind};
use super::ShmError;

pub const MAGIC: u64 = u64::from_le_bytes(*b"LLMGWSHM");
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const SLOT_BYTES: usize = 64;
/// 2^26 slots is a 4 GiB file: far beyond "a few keys per API key/user/team/model", and it keeps
/// `slots * SLOT_BYTES` comfortably inside every integer type used here.
pub const MAX_SLOTS: usize = 1 << 26;
/// Longest probe sequence a key may use. With random keys, a 2^18-slot table fills to 92-95%
/// before the first key finds no free slot within 128 probes (64: 84-89%; 32: 73-80%; measured
/// over 8 seeds by tests::probe_limit_fill_measure). Below ~50% load a lookup takes ~1-2 probes;
/// only an absent key in a nearly full table scans all 128 (8 KiB).
pub const PROBE_LIMIT: usize = 128;

#[repr(C)]
pub(crate) struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    slot_bytes: AtomicU32,
    slots: AtomicU64,
    used: AtomicU64,
    seeds: [AtomicU64; 4],
}

#[repr(C, align(64))]
pub(crate) struct Slot {
    h1: AtomicU64,
    h2: AtomicU64,
    pub(crate) a: AtomicI64,
    pub(crate) b: AtomicI64,
    _reserved: [AtomicU64; 4],
}

const _: () = assert!(size_of::<Header>() == HEADER_BYTES);
const _: () = assert!(size_of::<Slot>() == SLOT_BYTES);

/// One mapping of a table file. Every access to the mapped bytes goes through atomics, so any
/// number of threads and processes may use the same file at once.
pub(crate) struct Table {
    map: NonNull<u8>,
    map_len: usize,
    mask: usize,
    probe_limit: usize,
    seeds: [u64; 4],
    path: PathBuf,
}

// SAFETY: the mapping is only read and written through atomic types, and it lives until Drop.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: `map` came from mmap with exactly this length and no reference outlives self.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

fn file_len(slots: usize) -> usize {
    HEADER_BYTES + slots * SLOT_BYTES
}

fn map_shared(file: &File, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of an open file descriptor; checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast()).expect("mmap returned a non-null address"))
}

fn random_seeds() -> io::Result<[u64; 4]> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the remaining length into `bytes`.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(std::array::from_fn(|i| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))))
}

/// Outcome of a claim: the slot, and whether this call claimed it (it was not there before).
pub(crate) struct Claimed<'t> {
    pub slot: &'t Slot,
    pub new: bool,
}

impl Table {
    /// Create an empty table at `path`, replacing whatever is there.
    ///
    /// The table is built in a temporary file next to `path` and renamed over it, so an opener
    /// never sees a half-written header, and a process still mapping the replaced file keeps a
    /// valid (if orphaned) table: truncating in place would make its next access a SIGBUS.
    pub fn create(path: &Path, slots: usize, seeds: Option<[u64; 4]>) -> Result<Table, ShmError> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(ShmError::InvalidSlots(slots));
        }
        let slots = slots.next_power_of_two();
        let io_err = |source| ShmError::Io { path: path.to_path_buf(), source };
        let seeds = match seeds {
            Some(s) => s,
            None => random_seeds().map_err(io_err)?,
        };
        let name = path.file_name().ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a file path")))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        // unique per process and call; not derived from the seeds, which must stay secret
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let nth = CREATED.fetch_add(1, Ordering::Relaxed);
        tmp_name.push(format!(".{}.{nth}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = Self::build(&tmp, path, slots, seeds);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn build(tmp: &Path, path: &Path, slots: usize, seeds: [u64; 4]) -> Result<Table, ShmError> {
        let io_err = |source| ShmError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(tmp).map_err(io_err)?;
        let len = file_len(slots);
        // Allocate every page now: on a full tmpfs (/dev/shm is often 64 MiB in containers) a
        // sparse file would fail later as a SIGBUS on first touch of a page, mid-request.
        // SAFETY: plain syscall on an owned descriptor.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            return Err(io_err(io::Error::from_raw_os_error(rc)));
        }
        let map = map_shared(&file, len).map_err(io_err)?;
        let table = Table { map, map_len: len, mask: slots - 1, probe_limit: PROBE_LIMIT.min(slots), seeds, path: path.to_path_buf() };
        let h = table.header();
        h.version.store(FORMAT_VERSION, Ordering::Relaxed);
        h.slot_bytes.store(SLOT_BYTES as u32, Ordering::Relaxed);
        h.slots.store(slots as u64, Ordering::Relaxed);
        h.used.store(0, Ordering::Relaxed);
        for (word, seed) in h.seeds.iter().zip(seeds) {
            word.store(seed, Ordering::Relaxed);
        }
        h.magic.store(MAGIC, Ordering::Release);
        fs::rename(tmp, path).map_err(io_err)?;
        Ok(table)
    }

    /// Map the existing table at `path`.
    pub fn open(path: &Path) -> Result<Table, ShmError> {
        let io_err = |source| ShmError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let not_a_table = |reason: String| ShmError::NotATable { path: path.to_path_buf(), reason };
        if len < HEADER_BYTES as u64 {
            return Err(not_a_table(format!("{len} bytes, shorter than the {HEADER_BYTES}-byte header")));
        }
        let len = usize::try_from(len).map_err(|_| not_a_table(format!("{len} bytes is too large")))?;
        let map = map_shared(&file, len).map_err(io_err)?;
        // From here on the Table owns the mapping, so every error path unmaps it.
        let mut table = Table { map, map_len: len, mask: 0, probe_limit: 0, seeds: [0; 4], path: path.to_path_buf() };
        let h = table.header();
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(not_a_table(format!("bad magic {:?}", magic.to_le_bytes().escape_ascii().to_string())));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != FORMAT_VERSION {
            return Err(not_a_table(format!("format version {version}, this build reads {FORMAT_VERSION}")));
        }
        let slot_bytes = h.slot_bytes.load(Ordering::Relaxed);
        if slot_bytes as usize != SLOT_BYTES {
            return Err(not_a_table(format!("{slot_bytes}-byte slots, expected {SLOT_BYTES}")));
        }
        let slots = h.slots.load(Ordering::Relaxed);
        if slots == 0 || !slots.is_power_of_two() || slots > MAX_SLOTS as u64 {
            return Err(not_a_table(format!("slot count {slots} is not a power of two in 1..={MAX_SLOTS}")));
        }
        let slots = slots as usize;
        if len != file_len(slots) {
            return Err(not_a_table(format!("{len} bytes, expected {} for {slots} slots", file_len(slots))));
        }
        let seeds = std::array::from_fn(|i| h.seeds[i].load(Ordering::Relaxed));
        table.mask = slots - 1;
        table.probe_limit = PROBE_LIMIT.min(slots);
        table.seeds = seeds;
        Ok(table)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_BYTES long and page-aligned.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn slot(&self, index: usize) -> &Slot {
        debug_assert!(index <= self.mask);
        // SAFETY: index <= mask < slots, the file holds exactly `slots` slots after the header,
        // and HEADER_BYTES is a multiple of the slot alignment.
        unsafe { &*self.map.as_ptr().add(HEADER_BYTES + index * SLOT_BYTES).cast::<Slot>() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    pub fn used(&self) -> usize {
        self.header().used.load(Ordering::Relaxed) as usize
    }

    /// The slot of `key`, if some call has claimed it.
    pub fn find(&self, kind: Kind, key: &str) -> Option<&Slot> {
        let (h1, h2) = key_hashes(&self.seeds, kind, key);
        match self.probe(h1, h2, false) {
            Probe::Found(slot, _) => Some(slot),
            Probe::Absent | Probe::Full => None,
        }
    }

    /// The slot of `key`, claimed now if it has none.
    pub fn find_or_claim(&self, kind: Kind, key: &str) -> Result<Claimed<'_>, ShmError> {
        let (h1, h2) = key_hashes(&self.seeds, kind, key);
        match self.probe(h1, h2, true) {
            Probe::Found(slot, new) => Ok(Claimed { slot, new }),
            Probe::Absent | Probe::Full => Err(ShmError::Full {
                path: self.path.clone(),
                capacity: self.capacity(),
                used: self.used(),
                probes: self.probe_limit,
            }),
        }
    }

    /// Open addressing along `probe_index`'s sequence.
    ///
    /// A claim is two CASes: `h1` 0 -> h1 takes an empty slot, then `h2` 0 -> h2 names the key.
    /// A slot with our `h1` but `h2 == 0` is a claim in flight (or one whose process died
    /// between the two CASes); a claimer adopts it by the same CAS on `h2`, so a dead process
    /// never leaves a slot nobody can finish. A lookup stops there: a key with our hashes can
    /// never sit beyond a slot whose `h2` it could have set, since its claimer would have
    /// taken that slot. Slots are never freed, so a word, once set, never changes again.
    fn probe(&self, h1: u64, h2: u64, claim: bool) -> Probe<'_> {
        for i in 0..self.probe_limit {
            let slot = self.slot(probe_index(h1, i, self.mask));
            let mut seen = slot.h1.load(Ordering::Acquire);
            if seen == 0 {
                if !claim {
                    return Probe::Absent;
                }
                match slot.h1.compare_exchange(0, h1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.header().used.fetch_add(1, Ordering::Relaxed);
                        seen = h1;
                    }
                    Err(current) => seen = current,
                }
            }
            if seen != h1 {
                continue;
            }
            match slot.h2.load(Ordering::Acquire) {
                v if v == h2 => return Probe::Found(slot, false),
                0 if !claim => return Probe::Absent,
                0 => match slot.h2.compare_exchange(0, h2, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Probe::Found(slot, true),
                    Err(v) if v == h2 => return Probe::Found(slot, false),
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        Probe::Full
    }
}

/// The `i`-th slot of the probe sequence of a key whose first hash is `h1`: double hashing, home
/// slot from the low bits and an odd step from the high bits (odd, so a power-of-two table is
/// visited whole). Linear probing clusters: at 64 probes it failed at 57-68% load (2^18 slots,
/// 8 seeds); its cache locality buys nothing here, as every 64-byte slot is its own cache line.
/// Keys with equal `h1` share the sequence, which the lookup's stopping rule relies on.
fn probe_index(h1: u64, i: usize, mask: usize) -> usize {
    let step = ((h1 >> 32) as usize) | 1;
    (h1 as usize).wrapping_add(i.wrapping_mul(step)) & mask
}

enum Probe<'t> {
    Found(&'t Slot, bool),
    Absent,
    Full,
}

#[cfg(test)]
impl Table {
    /// The first CAS of a claim and nothing more: what a process that died between the two
    /// CASes leaves behind.
    pub(crate) fn half_claim(&self, kind: Kind, key: &str) {
        let (h1, _) = key_hashes(&self.seeds, kind, key);
        let slot = self.slot(probe_index(h1, 0, self.mask));
        slot.h1.compare_exchange(0, h1, Ordering::AcqRel, Ordering::Acquire).expect("home slot empty");
        self.header().used.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of probes `key` needs (1 = its home slot), None if it has no slot.
    pub(crate) fn probes_of(&self, kind: Kind, key: &str) -> Option<usize> {
        let (h1, h2) = key_hashes(&self.seeds, kind, key);
        (0..self.probe_limit).find(|&i| {
            let slot = self.slot(probe_index(h1, i, self.mask));
            slot.h1.load(Ordering::Acquire) == h1 && slot.h2.load(Ordering::Acquire) == h2
        }).map(|i| i + 1)
    }
}
