//! Shared test support.

pub mod cluster;
pub mod load;
pub mod native;
pub mod process;
pub mod redis;
pub mod sim;
