#![no_main]

use peerlab_fuzz::cores;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cores::run::<cores::Flood>(data));
