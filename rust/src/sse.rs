//! Incremental Server-Sent Events parser (placeholder until the parser lands).
