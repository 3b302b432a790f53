//! The `llmgw._core` extension module: registration only. Each submodule converts types and
//! errors for one Rust module and adds its classes/functions in its own `register`.

use pyo3::prelude::*;

mod sse;
mod ratelimit;
mod embed;
mod tokens;
mod simcache;
mod jsonshape;
mod shm;
mod guard;
mod otlp;
mod telemetry;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    sse::register(m)?;
    ratelimit::register(m)?;
    embed::register(m)?;
    tokens::register(m)?;
    simcache::register(m)?;
    jsonshape::register(m)?;
    shm::register(m)?;
    guard::register(m)?;
    otlp::register(m)?;
    telemetry::register(m)?;
    Ok(())
}
