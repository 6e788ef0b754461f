//! Errors of the runtime: starting an instance, savedata, and calls into c-toxcore.

use std::path::PathBuf;

/// Everything the runtime can fail with. Tox API errors carry the call and c-toxcore's error code.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("c-toxcore could not start: {0}")]
    New(&'static str),
    #[error("reading savedata {path}: {source}")]
    ReadSavedata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing savedata {path}: {source}")]
    WriteSavedata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("savedata {0} is encrypted and no passphrase is configured")]
    SavedataEncrypted(PathBuf),
    #[error("savedata {0} could not be decrypted: wrong passphrase or corrupt file")]
    SavedataDecrypt(PathBuf),
    #[error(
        "savedata {0} is corrupt or not Tox savedata; refusing to start a new identity over it"
    )]
    SavedataCorrupt(PathBuf),
    #[error("passphrase key derivation failed")]
    KeyDerivation,
    #[error("savedata encryption failed")]
    Encrypt,
    #[error("{call} failed with c-toxcore error {code}")]
    Tox { call: &'static str, code: u32 },
    #[error("no friend with that public key")]
    NoSuchFriend,
    #[error("bootstrap address {0} is not an IPv4/IPv6 literal")]
    BadBootstrapHost(String),
    #[error("the Tox instance's thread has stopped")]
    Stopped,
}

impl RuntimeError {
    pub(crate) fn tox(call: &'static str, code: u32) -> Self {
        RuntimeError::Tox { call, code }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
