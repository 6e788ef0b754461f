//! Arbitrary command lines into the LMTP parser: never a panic, and whatever it accepts carries
//! no control character (addresses and XFORWARD values end up in the queue and in logs; UTF-8
//! addresses are allowed for SMTPUTF8), and its DSN parameters are within RFC 3461's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toxmail_bridge::postfix::lmtp::fuzzing::{Command, parse};

fn printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != ' ' && c != '\t')
}

fuzz_target!(|line: &[u8]| {
    let Ok(command) = parse(line) else {
        return;
    };
    assert!(std::str::from_utf8(line).is_ok(), "only UTF-8 commands parse");
    match command {
        Command::Mail { from, size, dsn, .. } => {
            assert!(printable(&from), "{from:?}");
            assert_ne!(size, Some(0), "SIZE=0 means unknown");
            if let Some(envid) = &dsn.envid {
                assert!(envid.as_str().len() <= 100 && printable(envid.as_str()), "{envid:?}");
            }
        }
        Command::Rcpt { to, dsn } => {
            assert!(!to.is_empty() && printable(&to), "{to:?}");
            if let Some(orcpt) = &dsn.orcpt {
                let stored = orcpt.as_stored();
                assert!(stored.len() <= 600 && printable(stored), "{stored:?}");
            }
            if let Some(notify) = dsn.notify {
                assert!(!notify.never() || !(notify.success() || notify.failure() || notify.delay()));
            }
        }
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
