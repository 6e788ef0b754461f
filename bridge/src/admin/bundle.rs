//! Identity bundles, the file `identity export` writes and `identity import` reads to move
//! identities to another host: each identity's address, Tox ID and plaintext savedata, sealed
//! under a passphrase with toxencryptsave (scrypt, XSalsa20-Poly1305), as savedata files are.
//!
//! ```text
//! bundle  = "TOXMAILB" version:u8 toxencryptsave(passphrase, payload)
//! payload = "TOXMAILB" version:u8 source:str16 count:u32 { address:str16 tox_id:[38] savedata:bytes32 }*
//! ```
//! Integers are big-endian; `str16`/`bytes32` carry a u16/u32 length. The header is repeated
//! inside the sealed payload, so a changed header is noticed like any other changed byte.

use std::path::Path;

use toxmail_protocol::ToxId;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 8] = b"TOXMAILB";
pub const VERSION: u8 = 1;
/// Where `identity export`/`import` read the passphrase when no `--passphrase-file` is given.
pub const PASSPHRASE_ENV: &str = "TOXMAIL_BUNDLE_PASSPHRASE";
/// A bundle larger than this is refused before it is read.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 30;
const MAX_IDENTITIES: u32 = 100_000;
const MAX_ADDRESS: usize = 512;
const MAX_SAVEDATA: usize = 64 << 20;
const MIN_PASSPHRASE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a toxmail identity bundle")]
    NotABundle,
    #[error("bundle format version {0}; this bridge reads version {VERSION}")]
    UnknownVersion(u8),
    /// The MAC does not hold: the passphrase is wrong, or the file was changed or cut short.
    #[error("cannot be decrypted: wrong passphrase, or the file was changed or truncated")]
    Undecryptable,
    #[error("malformed inside: {0}")]
    Malformed(&'static str),
    #[error("cannot encrypt: {0}")]
    Encrypt(tox_runtime::RuntimeError),
}

/// One identity as it travels: the savedata is plaintext (it holds the secret key) and is
/// wiped from memory when dropped.
pub struct Entry {
    pub address: String,
    pub tox_id: ToxId,
    pub savedata: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("address", &self.address)
            .field("tox_id", &self.tox_id)
            .field("savedata", &format_args!("{} bytes", self.savedata.len()))
            .finish()
    }
}

#[derive(Debug)]
pub struct Bundle {
    /// The exporting bridge's `bridge.hostname`, shown on import.
    pub source: String,
    pub identities: Vec<Entry>,
}

/// The bundle's bytes, sealed under `passphrase`.
pub fn seal(bundle: &Bundle, passphrase: &[u8]) -> Result<Vec<u8>, BundleError> {
    let payload = encode(bundle)?;
    let sealed = tox_runtime::pass_encrypt(passphrase, &payload).map_err(BundleError::Encrypt)?;
    Ok([&MAGIC[..], &[VERSION], &sealed].concat())
}

/// Opens a bundle: any changed byte, a wrong passphrase or a truncation is an error.
pub fn open(bytes: &[u8], passphrase: &[u8]) -> Result<Bundle, BundleError> {
    let sealed = header(bytes)?;
    let payload =
        tox_runtime::pass_decrypt(passphrase, sealed).ok_or(BundleError::Undecryptable)?;
    decode(&payload)
}

fn header(bytes: &[u8]) -> Result<&[u8], BundleError> {
    let rest = bytes
        .strip_prefix(&MAGIC[..])
        .ok_or(BundleError::NotABundle)?;
    match rest.split_first() {
        Some((&VERSION, sealed)) => Ok(sealed),
        Some((&other, _)) => Err(BundleError::UnknownVersion(other)),
        None => Err(BundleError::NotABundle),
    }
}

fn encode(bundle: &Bundle) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    let mut out = Zeroizing::new(Vec::new());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_str16(&mut out, &bundle.source, "source hostname too long")?;
    let count = u32::try_from(bundle.identities.len())
        .ok()
        .filter(|n| *n <= MAX_IDENTITIES)
        .ok_or(BundleError::Malformed("too many identities"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for entry in &bundle.identities {
        put_str16(&mut out, &entry.address, "address too long")?;
        out.extend_from_slice(&entry.tox_id.as_bytes()[..]);
        if entry.savedata.len() > MAX_SAVEDATA {
            return Err(BundleError::Malformed("savedata too large"));
        }
        out.extend_from_slice(&(entry.savedata.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry.savedata);
    }
    Ok(out)
}

fn put_str16(out: &mut Vec<u8>, text: &str, too_long: &'static str) -> Result<(), BundleError> {
    if text.len() > MAX_ADDRESS {
        return Err(BundleError::Malformed(too_long));
    }
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Reads the decrypted payload; every length is bounded before it is used.
fn decode(payload: &[u8]) -> Result<Bundle, BundleError> {
    let mut r = Reader(payload);
    if r.take(MAGIC.len())? != MAGIC || r.take(1)? != [VERSION] {
        return Err(BundleError::Malformed(
            "inner header differs from the outer one",
        ));
    }
    let source = r.str16()?;
    let count = r.u32()?;
    if count > MAX_IDENTITIES {
        return Err(BundleError::Malformed("too many identities"));
    }
    let mut identities = Vec::new();
    for _ in 0..count {
        let address = r.str16()?;
        let tox_id = ToxId::from_bytes(r.take(38)?)
            .map_err(|_| BundleError::Malformed("a Tox ID with a bad checksum"))?;
        let len = r.u32()? as usize;
        if len > MAX_SAVEDATA {
            return Err(BundleError::Malformed("savedata too large"));
        }
        let savedata = Zeroizing::new(r.take(len)?.to_vec());
        identities.push(Entry {
            address,
            tox_id,
            savedata,
        });
    }
    if !r.0.is_empty() {
        return Err(BundleError::Malformed("bytes after the last identity"));
    }
    Ok(Bundle { source, identities })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BundleError> {
        if self.0.len() < n {
            return Err(BundleError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, BundleError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn str16(&mut self) -> Result<String, BundleError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        if len > MAX_ADDRESS {
            return Err(BundleError::Malformed("a text field too long"));
        }
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| BundleError::Malformed("a text field that is not UTF-8"))
    }
}

/// The bundle passphrase: the contents of `file` (mode 0600 or stricter), else the
/// `TOXMAIL_BUNDLE_PASSPHRASE` environment variable; never a command-line value, never logged.
/// Surrounding whitespace is ignored; at least 16 bytes remain.
pub fn read_passphrase(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, String> {
    let raw = match file {
        Some(path) => {
            use std::os::unix::fs::PermissionsExt;
            let shown = path.display();
            let io = |e: std::io::Error| format!("passphrase file {shown}: {e}");
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "passphrase file {shown} can be read by group or others (mode {mode:o}): \
                     chmod 600 it"
                ));
            }
            Zeroizing::new(std::fs::read(path).map_err(io)?)
        }
        None => match std::env::var_os(PASSPHRASE_ENV) {
            Some(value) => Zeroizing::new(value.into_encoded_bytes()),
            None => {
                return Err(format!(
                    "no passphrase: give --passphrase-file FILE or set {PASSPHRASE_ENV}"
                ));
            }
        },
    };
    let trimmed = Zeroizing::new(raw.trim_ascii().to_vec());
    if trimmed.len() < MIN_PASSPHRASE {
        return Err(format!(
            "the bundle passphrase is shorter than {MIN_PASSPHRASE} bytes"
        ));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::PublicKey;

    fn sample() -> Bundle {
        let entry = |n: u8, address: &str| Entry {
            address: address.into(),
            tox_id: ToxId::new(PublicKey([n; 32]), 0x0102_0304),
            savedata: Zeroizing::new(vec![n; 300]),
        };
        Bundle {
            source: "mx.b.test".into(),
            identities: vec![entry(1, "bob@b.test"), entry(2, "default")],
        }
    }

    const PASS: &[u8] = b"a bundle passphrase";

    #[test]
    fn a_sealed_bundle_opens_with_its_passphrase_to_the_same_identities() {
        let bytes = seal(&sample(), PASS).unwrap();
        assert!(bytes.starts_with(b"TOXMAILB\x01"));
        assert!(!bytes.windows(10).any(|w| w == b"bob@b.test"), "sealed");
        let opened = open(&bytes, PASS).unwrap();
        assert_eq!(opened.source, "mx.b.test");
        let want = sample();
        assert_eq!(opened.identities.len(), 2);
        for (got, want) in opened.identities.iter().zip(&want.identities) {
            assert_eq!(got.address, want.address);
            assert_eq!(got.tox_id, want.tox_id);
            assert_eq!(*got.savedata, *want.savedata);
        }
    }

    #[test]
    fn a_wrong_passphrase_a_changed_byte_or_a_truncation_is_refused() {
        let bytes = seal(&sample(), PASS).unwrap();
        let wrong = open(&bytes, b"another passphrase!").unwrap_err();
        assert!(matches!(wrong, BundleError::Undecryptable), "{wrong}");
        for at in [MAGIC.len() + 1, bytes.len() / 2, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 0x40;
            let err = open(&changed, PASS).unwrap_err();
            assert!(
                matches!(err, BundleError::Undecryptable),
                "byte {at}: {err}"
            );
        }
        let cut = open(&bytes[..bytes.len() - 7], PASS).unwrap_err();
        assert!(matches!(cut, BundleError::Undecryptable), "{cut}");
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(matches!(open(&other, PASS), Err(BundleError::NotABundle)));
        let mut newer = bytes.clone();
        newer[MAGIC.len()] = 2;
        assert!(matches!(
            open(&newer, PASS),
            Err(BundleError::UnknownVersion(2))
        ));
        assert!(matches!(
            open(b"TOXMAILB", PASS),
            Err(BundleError::NotABundle)
        ));
    }

    #[test]
    fn a_payload_that_lies_about_its_lengths_is_malformed_not_a_panic() {
        let payload = encode(&sample()).unwrap();
        for len in 0..payload.len() {
            assert!(decode(&payload[..len]).is_err(), "cut at {len}");
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut huge = payload.to_vec();
        let count_at = MAGIC.len() + 1 + 2 + "mx.b.test".len();
        huge[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(BundleError::Malformed(_))));
    }

    #[test]
    fn the_passphrase_comes_from_a_private_file_and_is_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "  sixteen bytes or more\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open_to_all = read_passphrase(Some(&path)).unwrap_err();
        assert!(open_to_all.contains("chmod 600"), "{open_to_all}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            &read_passphrase(Some(&path)).unwrap()[..],
            b"sixteen bytes or more"
        );
        std::fs::write(&path, "short\n").unwrap();
        let short = read_passphrase(Some(&path)).unwrap_err();
        assert!(short.contains("shorter than 16"), "{short}");
    }
}
