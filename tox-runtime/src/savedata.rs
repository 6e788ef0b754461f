//! The savedata file: full c-toxcore state (keys, nospam, friends, DHT nodes), written atomically
//! (temp file, fsync, rename, fsync of the directory) and optionally encrypted with toxencryptsave.
//! The passphrase key is derived once (scrypt is slow) and reused for every later save. Plaintext
//! savedata holds the identity's secret key: every buffer of it here is wiped when dropped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use zeroize::Zeroizing;

use crate::error::{Result, RuntimeError};
use crate::sys;

const EXTRA: usize = sys::TOX_PASS_ENCRYPTION_EXTRA_LENGTH as usize;
/// Four zero bytes, then Messenger's state cookie 0x15ed1b1f (little endian).
const SAVEDATA_MAGIC: [u8; 8] = [0, 0, 0, 0, 0x1f, 0x1b, 0xed, 0x15];
const SALT: usize = sys::TOX_PASS_SALT_LENGTH as usize;

/// A derived toxencryptsave key, freed in `Drop`.
struct PassKey(NonNull<sys::Tox_Pass_Key>);

// SAFETY: a Tox_Pass_Key is plain immutable data (salt + key) once derived; it may move threads.
unsafe impl Send for PassKey {}

impl Drop for PassKey {
    fn drop(&mut self) {
        // SAFETY: the key came from tox_pass_key_derive*, freed once here (it wipes the memory).
        unsafe { sys::tox_pass_key_free(self.0.as_ptr()) }
    }
}

impl PassKey {
    fn derive(passphrase: &[u8], salt: Option<&[u8; SALT]>) -> Result<PassKey> {
        let mut err = sys::Tox_Err_Key_Derivation::TOX_ERR_KEY_DERIVATION_OK;
        // SAFETY: pointer and length describe `passphrase`; the salt has TOX_PASS_SALT_LENGTH bytes.
        let key = unsafe {
            match salt {
                Some(salt) => sys::tox_pass_key_derive_with_salt(
                    passphrase.as_ptr(),
                    passphrase.len(),
                    salt.as_ptr(),
                    &mut err,
                ),
                None => sys::tox_pass_key_derive(passphrase.as_ptr(), passphrase.len(), &mut err),
            }
        };
        NonNull::new(key)
            .map(PassKey)
            .ok_or(RuntimeError::KeyDerivation)
    }

    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; plain.len() + EXTRA];
        let mut err = sys::Tox_Err_Encryption::TOX_ERR_ENCRYPTION_OK;
        // SAFETY: `out` has plaintext length + TOX_PASS_ENCRYPTION_EXTRA_LENGTH bytes, as required.
        let ok = unsafe {
            sys::tox_pass_key_encrypt(
                self.0.as_ptr(),
                plain.as_ptr(),
                plain.len(),
                out.as_mut_ptr(),
                &mut err,
            )
        };
        ok.then_some(out).ok_or(RuntimeError::Encrypt)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Plain> {
        let len = cipher.len().checked_sub(EXTRA)?;
        let mut out = Zeroizing::new(vec![0u8; len]);
        let mut err = sys::Tox_Err_Decryption::TOX_ERR_DECRYPTION_OK;
        // SAFETY: `out` has ciphertext length − TOX_PASS_ENCRYPTION_EXTRA_LENGTH bytes.
        let ok = unsafe {
            sys::tox_pass_key_decrypt(
                self.0.as_ptr(),
                cipher.as_ptr(),
                cipher.len(),
                out.as_mut_ptr(),
                &mut err,
            )
        };
        ok.then_some(out)
    }
}

fn is_encrypted(data: &[u8]) -> bool {
    // SAFETY: tox_is_data_encrypted reads TOX_PASS_ENCRYPTION_EXTRA_LENGTH bytes; checked first.
    data.len() >= EXTRA && unsafe { sys::tox_is_data_encrypted(data.as_ptr()) }
}

fn salt_of(data: &[u8]) -> Option<[u8; SALT]> {
    let mut salt = [0u8; SALT];
    let mut err = sys::Tox_Err_Get_Salt::TOX_ERR_GET_SALT_OK;
    // SAFETY: `data` is at least EXTRA bytes (checked by the caller via is_encrypted).
    let ok = unsafe { sys::tox_get_salt(data.as_ptr(), salt.as_mut_ptr(), &mut err) };
    ok.then_some(salt)
}

/// Plaintext savedata (it holds the secret key), wiped when dropped.
pub type Plain = Zeroizing<Vec<u8>>;

/// Where one instance's savedata lives and how it is protected.
pub(crate) struct SavedataFile {
    path: PathBuf,
    passphrase: Option<Zeroizing<Vec<u8>>>,
    /// Freed by c-toxcore, which wipes it first (`tox_pass_key_free`).
    key: Option<PassKey>,
}

impl SavedataFile {
    pub(crate) fn new(path: PathBuf, passphrase: Option<Zeroizing<Vec<u8>>>) -> Self {
        SavedataFile {
            path,
            passphrase,
            key: None,
        }
    }

    /// Reads and, if needed, decrypts the savedata; `None` when no file exists yet.
    pub(crate) fn load(&mut self) -> Result<Option<Plain>> {
        // Wiped too: without a passphrase these bytes are the plaintext.
        let data = match fs::read(&self.path) {
            Ok(d) => Zeroizing::new(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RuntimeError::ReadSavedata {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if !is_encrypted(&data) {
            return self.checked(data).map(Some);
        }
        let pass = self
            .passphrase
            .as_ref()
            .ok_or_else(|| RuntimeError::SavedataEncrypted(self.path.clone()))?;
        let salt =
            salt_of(&data).ok_or_else(|| RuntimeError::SavedataDecrypt(self.path.clone()))?;
        let key = PassKey::derive(pass, Some(&salt))?;
        let plain = key
            .decrypt(&data)
            .ok_or_else(|| RuntimeError::SavedataDecrypt(self.path.clone()))?;
        self.key = Some(key);
        self.checked(plain).map(Some)
    }

    /// c-toxcore starts a *new* identity from savedata it cannot parse, and the next save would
    /// then overwrite the old one: refuse anything that does not start like Tox savedata.
    fn checked(&self, data: Plain) -> Result<Plain> {
        if data.starts_with(&SAVEDATA_MAGIC) {
            Ok(data)
        } else {
            Err(RuntimeError::SavedataCorrupt(self.path.clone()))
        }
    }

    /// Derives the key of a new file now (scrypt is slow), so its first `save` does not.
    pub(crate) fn derive_key(&mut self) -> Result<()> {
        if let (Some(pass), None) = (&self.passphrase, &self.key) {
            self.key = Some(PassKey::derive(pass, None)?);
        }
        Ok(())
    }

    /// Writes `data` atomically, encrypting it when a passphrase is configured.
    pub(crate) fn save(&mut self, data: &[u8]) -> Result<()> {
        let bytes = match &self.passphrase {
            None => Zeroizing::new(data.to_vec()),
            Some(pass) => {
                if self.key.is_none() {
                    self.key = Some(PassKey::derive(pass, None)?);
                }
                Zeroizing::new(self.key.as_ref().expect("derived above").encrypt(data)?)
            }
        };
        write_atomically(&self.path, &bytes).map_err(|source| RuntimeError::WriteSavedata {
            path: self.path.clone(),
            source,
        })
    }
}

/// Encrypts `plain` under `passphrase` with toxencryptsave (scrypt with a fresh salt, then
/// XSalsa20-Poly1305 with a fresh nonce): what savedata files use, here for other secrets
/// (the bridge's identity bundles).
pub fn pass_encrypt(passphrase: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    PassKey::derive(passphrase, None)?.encrypt(plain)
}

/// Decrypts what [`pass_encrypt`] made. `None` when `cipher` is not toxencryptsave data, the
/// passphrase is wrong, or any byte was changed (the MAC covers them all).
pub fn pass_decrypt(passphrase: &[u8], cipher: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if !is_encrypted(cipher) {
        return None;
    }
    let salt = salt_of(cipher)?;
    PassKey::derive(passphrase, Some(&salt))
        .ok()?
        .decrypt(cipher)
}

/// Reads a savedata file as a node would (decrypted with `passphrase` when it is encrypted,
/// checked to look like Tox savedata); `None` when there is no file.
pub fn read_savedata(path: &Path, passphrase: Option<&[u8]>) -> Result<Option<Plain>> {
    let pass = passphrase.map(|p| Zeroizing::new(p.to_vec()));
    SavedataFile::new(path.to_path_buf(), pass).load()
}

/// Writes plaintext savedata to `path` atomically, encrypted under `passphrase` when given;
/// refuses bytes that do not look like Tox savedata (a node would start a new identity).
pub fn write_savedata(path: &Path, passphrase: Option<&[u8]>, plain: &[u8]) -> Result<()> {
    if !plain.starts_with(&SAVEDATA_MAGIC) {
        return Err(RuntimeError::SavedataCorrupt(path.to_path_buf()));
    }
    let pass = passphrase.map(|p| Zeroizing::new(p.to_vec()));
    SavedataFile::new(path.to_path_buf(), pass).save(plain)
}

/// Temp file in the same directory, fsync, rename over the target, fsync the directory. The temp
/// file is created exclusively (O_EXCL) under a random name with mode 0600 from the start
/// (tempfile), so no other user can open it or have planted a file or link under its name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_savedata_round_trips_and_rejects_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tox");
        let mut file = SavedataFile::new(path.clone(), Some(b"correct horse".to_vec().into()));
        file.save(&tox_like(b"state bytes")).unwrap();
        let raw = fs::read(&path).unwrap();
        assert!(is_encrypted(&raw));
        assert_eq!(raw.len(), tox_like(b"state bytes").len() + EXTRA);

        let mut again = SavedataFile::new(path.clone(), Some(b"correct horse".to_vec().into()));
        assert_eq!(*again.load().unwrap().unwrap(), tox_like(b"state bytes"));

        let mut wrong = SavedataFile::new(path.clone(), Some(b"wrong".to_vec().into()));
        assert!(matches!(
            wrong.load(),
            Err(RuntimeError::SavedataDecrypt(_))
        ));
        let mut none = SavedataFile::new(path, None);
        assert!(matches!(
            none.load(),
            Err(RuntimeError::SavedataEncrypted(_))
        ));
    }

    #[test]
    fn missing_savedata_is_none_and_plain_savedata_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SavedataFile::new(dir.path().join("x.tox"), None);
        assert!(file.load().unwrap().is_none());
        file.save(&tox_like(b"plain")).unwrap();
        assert_eq!(*file.load().unwrap().unwrap(), tox_like(b"plain"));
        file.save(b"not savedata").unwrap();
        assert!(matches!(file.load(), Err(RuntimeError::SavedataCorrupt(_))));
    }

    #[test]
    fn savedata_is_written_owner_only_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tox");
        write_atomically(&path, b"secret").unwrap();
        write_atomically(&path, b"secret 2").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(fs::read(&path).unwrap(), b"secret 2");
    }

    /// Compiles only for types that wipe themselves on drop. Reading the freed memory to prove
    /// it would be undefined behaviour; the bound is what can be checked.
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn plaintext_savedata_and_the_passphrase_are_wiped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tox");
        let mut file = SavedataFile::new(path.clone(), Some(b"pass".to_vec().into()));
        file.save(&tox_like(b"secret key inside")).unwrap();
        wiped_on_drop(file.passphrase.as_ref().unwrap());
        let loaded = SavedataFile::new(path, Some(b"pass".to_vec().into()))
            .load()
            .unwrap()
            .unwrap();
        wiped_on_drop(&loaded);
        let options = crate::Options::loopback().passphrase(b"pass".to_vec());
        wiped_on_drop(options.passphrase.as_ref().unwrap());
    }

    #[test]
    fn pass_encrypted_bytes_round_trip_and_refuse_a_wrong_passphrase_or_a_changed_byte() {
        let sealed = pass_encrypt(b"bundle passphrase", b"secret bytes").unwrap();
        assert!(is_encrypted(&sealed));
        let plain = pass_decrypt(b"bundle passphrase", &sealed).unwrap();
        assert_eq!(&plain[..], b"secret bytes");
        assert!(pass_decrypt(b"another passphrase", &sealed).is_none());
        for at in [0, EXTRA / 2, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert!(
                pass_decrypt(b"bundle passphrase", &changed).is_none(),
                "byte {at}"
            );
        }
        assert!(pass_decrypt(b"bundle passphrase", &sealed[..sealed.len() - 1]).is_none());
        assert!(pass_decrypt(b"bundle passphrase", b"short").is_none());
    }

    #[test]
    fn savedata_read_and_written_outside_a_node_is_what_a_node_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tox");
        assert!(read_savedata(&path, Some(b"k")).unwrap().is_none());
        write_savedata(&path, Some(b"k"), &tox_like(b"state")).unwrap();
        let mut file = SavedataFile::new(path.clone(), Some(b"k".to_vec().into()));
        assert_eq!(*file.load().unwrap().unwrap(), tox_like(b"state"));
        assert_eq!(
            *read_savedata(&path, Some(b"k")).unwrap().unwrap(),
            tox_like(b"state")
        );
        assert!(read_savedata(&path, Some(b"other")).is_err());
        assert!(write_savedata(&path, None, b"not savedata").is_err());
    }

    fn tox_like(body: &[u8]) -> Vec<u8> {
        [&SAVEDATA_MAGIC[..], body].concat()
    }
}
