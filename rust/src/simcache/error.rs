//! The simcache's error type; the PyO3 shell maps each variant to one Python exception.

use std::fmt;

#[derive(Debug)]
pub enum SimcacheError {
    /// A vector of the wrong length for this index.
    WrongDimension { expected: usize, got: usize },
    /// All-zero vector: it has no direction, so cosine similarity is undefined.
    ZeroVector,
    /// NaN or infinity in a vector.
    NonFinite,
    /// A bad argument (TTL, k, configuration).
    InvalidArgument(String),
    /// A snapshot file that is not one of ours, is from an unknown version, truncated or corrupt.
    Snapshot(String),
    /// Reading or writing a snapshot failed at the OS level.
    Io(std::io::Error),
}

impl fmt::Display for SimcacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongDimension { expected, got } => {
                write!(f, "vector has {got} dimensions, this index expects {expected}")
            }
            Self::ZeroVector => f.write_str("vector is all zeros: cosine similarity needs a direction"),
            Self::NonFinite => f.write_str("vector contains NaN or infinity"),
            Self::InvalidArgument(msg) => f.write_str(msg),
            Self::Snapshot(msg) => write!(f, "invalid simcache snapshot: {msg}"),
            Self::Io(err) => write!(f, "snapshot I/O failed: {err}"),
        }
    }
}

impl std::error::Error for SimcacheError {}

impl From<std::io::Error> for SimcacheError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}
