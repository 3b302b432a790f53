//! llmgw's hot paths. Every module here is plain Rust, testable with `cargo test`;
//! `python/` is the thin PyO3 shell compiled only with the `python` feature (maturin turns it on).

pub mod rng;
pub mod sse;
pub mod ratelimit;
pub mod embed;
pub mod tokens;
pub mod simcache;
pub mod jsonshape;
pub mod shm;
pub mod guard;
pub mod otlp;
pub mod telemetry;

#[cfg(feature = "python")]
mod python;
