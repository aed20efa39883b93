//! Holdfast: browser calls that survive the network.
//!
//! - [`protocol`]: the wire messages; their documentation is the specification.
//! - [`engine`]: the pure client and server engines (no IO, no clock).
//! - `server` (native): the axum driver, auth, config, metrics.
//! - `native` (native): the tokio client driver used by tests and the load tool.
//! - `load` (native): `holdfast-load`, the benchmark tool (resume storms, dead-link
//!   detection, resume latency, memory per session).

pub mod engine;
pub mod protocol;

#[cfg(not(target_arch = "wasm32"))]
pub mod server;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;

#[cfg(not(target_arch = "wasm32"))]
pub mod load;

#[cfg(target_arch = "wasm32")]
pub mod web;
