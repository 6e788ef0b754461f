//! Arbitrary command lines into the LMTP parser: never a panic, and whatever it accepts carries
//! only printable text (addresses and XFORWARD values end up in the queue and in logs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toxmail_bridge::postfix::lmtp::fuzzing::{Command, parse};

fn printable(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

fuzz_target!(|line: &[u8]| {
    let Ok(command) = parse(line) else {
        return;
    };
    assert!(line.is_ascii(), "only ASCII commands parse");
    match command {
        Command::Mail { from, size } => {
            assert!(printable(&from), "{from:?}");
            assert_ne!(size, Some(0), "SIZE=0 means unknown");
        }
        Command::Rcpt { to } => assert!(!to.is_empty() && printable(&to), "{to:?}"),
        Command::Xforward(attrs) => {
            assert!(!attrs.is_empty());
            for value in attrs.iter().filter_map(|(_, v)| v.as_deref()) {
                assert!(value.len() <= 255 && printable(value), "{value:?}");
                assert!(
                    !value.contains('\t'),
                    "xtext decodes to SP and graphic only"
                );
            }
        }
        _ => {}
    }
});
