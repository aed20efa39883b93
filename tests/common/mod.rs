//! Shared test support.

pub mod sim;
