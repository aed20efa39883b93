//! Frame decoding on the native paths: any text, under any size limit, decodes to a
//! frame or a `BadFrame` (never a panic), and whatever decodes encodes to text that
//! decodes again. (The browser's codec reads what its own `JSON.parse` built, which
//! cannot run natively; `tests/web_codec.rs` fuzzes it in Chromium with mutated
//! frames, against serde.)
#![no_main]

use holdfast::protocol::{decode_client, decode_server, encode, ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &str)| {
    let (limit, text) = input;
    for max in [usize::from(limit), usize::MAX] {
        if let Ok(frame) = decode_client(text, max) {
            let again = encode::<ClientFrame>(&frame);
            assert!(
                decode_client(&again, usize::MAX).is_ok(),
                "a decoded client frame re-encodes to undecodable text: {again}"
            );
        }
        if let Ok(frame) = decode_server(text, max) {
            let again = encode::<ServerFrame>(&frame);
            assert!(
                decode_server(&again, usize::MAX).is_ok(),
                "a decoded server frame re-encodes to undecodable text: {again}"
            );
        }
    }
});
