//! The engines on a simulated clock: one scenario per test, each asserting what a user
//! would notice (events, call states, end reasons, deadlines). Nothing sleeps.
//!
//! One test binary, one module per behaviour; shared scenario helpers live in `helpers`.
#![cfg(not(target_arch = "wasm32"))] // native: real sockets and processes (`wasm-pack test` builds every test target)

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod backoff;
mod bad_input;
mod call;
mod cluster;
mod connection_failed;
mod dedup;
mod grace;
mod limits;
mod logout_delivery;
mod logout_shutdown;
mod one_call_per_person;
mod races;
mod rejoin;
mod rejoin_clock;
mod rejoin_confirmed;
mod rejoin_countdown;
mod rejoin_race;
mod reload_while_ringing;
mod replay_overflow;
mod requests;
mod restart;
mod resume;
mod ringing;
mod server_lost;
mod welcome_never_arrives;
