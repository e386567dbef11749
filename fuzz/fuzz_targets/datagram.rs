#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| peerlab_fuzz::targets::datagram(data));
