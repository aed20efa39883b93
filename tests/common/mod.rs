//! Shared test support.

pub mod native;
pub mod redis;
pub mod sim;
