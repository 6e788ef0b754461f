//! Socketmap netstrings (socketmap_table(5)) under fuzzing:
//! - arbitrary bytes into the decoder, with a limit from the first two bytes: never a panic;
//!   a payload comes back only within the limit, and re-encodes to exactly the bytes it took
//!   (netstrings are canonical: no leading zeros); an incomplete input stays incomplete (or
//!   fails the same way) on every prefix;
//! - the rest as a payload, encoded and decoded back unchanged;
//! - the rest as a resolver's reason text: the reply for Postfix is one printable line within
//!   `MAX_REPLY` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toxmail_bridge::postfix::socketmap::{
    MAX_REPLY, NetstringError, decode_netstring, encode_netstring, reply_for,
};
use toxmail_bridge::resolve::Route;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([*hi, *lo]));

    match decode_netstring(rest, max) {
        Ok(Some((payload, used))) => {
            assert!(payload.len() <= max && used <= rest.len());
            assert_eq!(encode_netstring(payload), &rest[..used]);
        }
        Ok(None) => {
            for end in 0..rest.len() {
                assert_eq!(
                    decode_netstring(&rest[..end], max),
                    Ok(None),
                    "prefix {end}"
                );
            }
        }
        Err(NetstringError::TooLong { max: said }) => assert_eq!(said, max),
        Err(_) => {}
    }

    let encoded = encode_netstring(rest);
    let decoded = decode_netstring(&encoded, rest.len().max(1));
    assert_eq!(decoded, Ok(Some((rest, encoded.len()))));

    let reason = String::from_utf8_lossy(rest).into_owned();
    for route in [Route::Invalid(reason.clone()), Route::TempFail(reason)] {
        let reply = reply_for(&route, "lmtp:inet:[127.0.0.1]:2424");
        assert!(reply.len() <= MAX_REPLY, "{} bytes", reply.len());
        assert!(
            reply.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{reply:?}"
        );
        assert!(reply.starts_with("OK "));
    }
});
