//! Arbitrary packets into `Frame::decode`: never a panic, and whatever decodes must encode back
//! to the same bytes and decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toxmail_protocol::Frame;

fuzz_target!(|packet: &[u8]| {
    if let Ok(frame) = Frame::decode(packet) {
        let bytes = frame.encode();
        assert_eq!(bytes, packet, "decoded frames are canonical");
        assert_eq!(Frame::decode(&bytes), Ok(frame));
    }
});
