//! Vector similarity index: the core of the semantic cache.
//!
//! - `kernels/`: dot-product kernels, one file per instruction set (scalar reference, AVX2+FMA,
//!   AVX-512 (+VNNI), NEON), chosen once per process.
//! - `vector`: normalisation (cosine = dot of unit vectors) and i8 quantisation.
//! - `rows`: dense row storage and the scan; `ivf`: k-means partitioning;
//!   `namespace`: one namespace's rows, exact or partitioned; `retrain`: background training.
//! - `ttl`, `lru`: expiry and recency; `index`: the thread-safe `SimilarityIndex`.
//! - `snapshot`: versioned, checksummed save/load.

pub mod error;
pub mod index;
pub mod ivf;
pub mod kernels;
pub mod lru;
pub mod namespace;
mod retrain;
pub mod rows;
pub mod snapshot;
pub mod ttl;
pub mod vector;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_retrain;

pub use error::SimcacheError;
pub use index::{IndexConfig, Match, Quantization, SimilarityIndex, DEFAULT_APPROXIMATE_THRESHOLD, DEFAULT_PROBES};
pub use kernels::Kernels;
