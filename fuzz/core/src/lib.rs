//! The engines and the protocol of holdfast, exactly as the main crate compiles them
//! (these modules are symlinks to its sources), for the fuzz targets.

pub mod engine;
pub mod protocol;
