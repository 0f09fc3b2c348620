//! Fuzz target: `peershare::protocol::fuzz::message` over arbitrary bytes (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peershare::protocol::fuzz::message(data));
