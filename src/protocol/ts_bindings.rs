//! The TypeScript twin of the wire types: `www/src/generated/protocol.ts` is generated
//! from the types above by `ts-rs` (derived in native test builds only, so the wasm
//! build carries none of it) and checked in, so the TypeScript facade imports the
//! protocol's names and shapes instead of copying them by hand.
//!
//! `cargo test --lib protocol::ts_bindings` fails when the checked-in file differs
//! from what the Rust types generate; `HOLDFAST_WRITE_TS=1` (or `npm run gen:protocol`
//! in `www/`) rewrites it.

use super::*;
use ts_rs::{Config, TS};

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/src/generated/protocol.ts");

/// One declaration: the type's doc comment, then `export type …`.
fn decl<T: TS>(cfg: &Config) -> String {
    format!("{}export {}\n", T::docs().unwrap_or_default(), T::decl(cfg))
}

/// The whole file, in the order the types appear in `protocol.rs`.
fn generate() -> String {
    // Every integer on the wire is a JSON number (sequence numbers and epoch ms stay far
    // below 2^53), which JavaScript reads as `number`, never `bigint`.
    let cfg = Config::new().with_large_int("number");
    let decls = [
        decl::<ClientFrame>(&cfg),
        decl::<Hello>(&cfg),
        decl::<Resume>(&cfg),
        decl::<ClientMsg>(&cfg),
        decl::<ServerFrame>(&cfg),
        decl::<Welcome>(&cfg),
        decl::<Timers>(&cfg),
        decl::<Limits>(&cfg),
        decl::<Snapshot>(&cfg),
        decl::<EndedCall>(&cfg),
        decl::<Peer>(&cfg),
        decl::<CallState>(&cfg),
        decl::<LinkState>(&cfg),
        decl::<ParticipantInfo>(&cfg),
        decl::<CallInfo>(&cfg),
        decl::<PresenceStatus>(&cfg),
        decl::<PresenceEntry>(&cfg),
        decl::<EndReason>(&cfg),
        decl::<ServerMsg>(&cfg),
        decl::<ErrorBody>(&cfg),
        decl::<ErrorCode>(&cfg),
        // Payloads and metadata: any JSON value.
        decl::<serde_json::Value>(&cfg),
    ];
    format!(
        "// Generated from src/protocol.rs by ts-rs (src/protocol/ts_bindings.rs). Do not edit:\n\
         // change the Rust types, then run `npm run gen:protocol` in www/.\n\n{}",
        decls.join("\n")
    )
}

#[test]
fn checked_in_typescript_matches_the_rust_protocol() {
    let generated = generate();
    if std::env::var_os("HOLDFAST_WRITE_TS").is_some() {
        std::fs::write(CHECKED_IN, &generated).expect("write www/src/generated/protocol.ts");
        return;
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "www/src/generated/protocol.ts is out of date with src/protocol.rs; \
         regenerate it with `HOLDFAST_WRITE_TS=1 cargo test --lib protocol::ts_bindings` \
         (or `npm run gen:protocol` in www/)"
    );
}
