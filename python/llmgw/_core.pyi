"""Type stubs for the Rust extension `llmgw._core` (built from rust/ by maturin).

Each section below belongs to one Rust module (rust/src/<name>.rs); keep them in that order.
"""

__version__: str

# --- sse (rust/src/sse.rs) -------------------------------------------------------------------
