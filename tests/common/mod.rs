//! Shared test support.

pub mod redis;
pub mod sim;
