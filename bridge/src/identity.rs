//! Tox identities of a site: one per local mailbox that has one, plus the site's default identity.
//! Each identity is a Tox node with its own savedata file under `<state_dir>/identities/`,
//! encrypted at rest with the operator's key file; the database lists them (address, Tox ID).

use std::path::{Path, PathBuf};

use tox_runtime::{BootstrapNode, Node, Options};
use toxmail_protocol::{PublicKey, ToxId};
use zeroize::Zeroizing;

use crate::config::Config;

/// The address under which the site's default identity is listed.
pub const DEFAULT_IDENTITY: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0} is shorter than 16 bytes")]
    KeyFileShort(PathBuf),
    #[error("key file {} can be read by group or others (mode {mode:o}): chmod 600 it", path.display())]
    KeyFileMode { path: PathBuf, mode: u32 },
    #[error("identity {0}: {1}")]
    Tox(String, tox_runtime::RuntimeError),
    /// The database lists an identity whose savedata is not there: a wrong `state_dir`, or a
    /// lost file. New keys would silently cut off every peer that knows the old Tox ID.
    #[error(
        "identity {address}: its savedata {} is missing; refusing to make new keys for it \
         (is bridge.state_dir right? restore the file; only `identity add` creates identities)",
        path.display()
    )]
    Missing { address: String, path: PathBuf },
    #[error(
        "identity {address}: savedata {} cannot be opened with the key file (wrong key_file?): {source}",
        path.display()
    )]
    Unreadable {
        address: String,
        path: PathBuf,
        source: tox_runtime::RuntimeError,
    },
    #[error(
        "identity {address}: savedata {} holds Tox key {found}, the database lists {expected}",
        path.display()
    )]
    Mismatch {
        address: String,
        path: PathBuf,
        expected: PublicKey,
        found: PublicKey,
    },
}

/// Reads the operator's key file; its bytes are the toxencryptsave passphrase. Every copy made
/// here, and the one returned, is wiped from memory when dropped.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| IdentityError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
    let trimmed = Zeroizing::new(bytes.trim_ascii().to_vec());
    if trimmed.len() < 16 {
        return Err(IdentityError::KeyFileShort(path.to_path_buf()));
    }
    Ok(trimmed)
}

/// `<state_dir>/identities/<address>.tox`, with anything unusual in the address replaced.
pub fn savedata_path(state_dir: &Path, address: &str) -> PathBuf {
    let safe: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("identities").join(format!("{safe}.tox"))
}

/// Node options for one identity, from the [tox] section. The port range is the configured one
/// (`run` sets it from the identity count first when the config leaves it out).
pub fn node_options(config: &Config, address: &str, passphrase: &[u8]) -> Options {
    let mut o = Options::new();
    o.ipv6 = config.tox.ipv6;
    o.local_discovery = config.tox.local_discovery;
    [o.start_port, o.end_port] = config
        .tox
        .port_range
        .unwrap_or_else(|| config.tox.ports(0).expect("the smallest range fits"));
    o.bootstrap = config
        .tox
        .bootstrap
        .iter()
        .map(|b| BootstrapNode {
            addr: b.address,
            dht_key: b.key.parse::<PublicKey>().expect("validated at load"),
        })
        .collect();
    o.savedata(savedata_path(&config.bridge.state_dir, address))
        .passphrase(passphrase.to_vec())
        .name("toxmail")
}

/// Starts the node of an identity the database lists as `expected`. Never creates keys: a
/// missing savedata, one the key file cannot open, or one holding another key is an error that
/// names the file.
pub async fn start_node(
    config: &Config,
    address: &str,
    expected: &ToxId,
    passphrase: &[u8],
) -> Result<Node, IdentityError> {
    start_listed(
        config,
        node_options(config, address, passphrase),
        address,
        expected,
    )
    .await
}

async fn start_listed(
    config: &Config,
    options: Options,
    address: &str,
    expected: &ToxId,
) -> Result<Node, IdentityError> {
    let path = savedata_path(&config.bridge.state_dir, address);
    if !path.is_file() {
        return Err(IdentityError::Missing {
            address: address.to_string(),
            path,
        });
    }
    let node = Node::start(options)
        .await
        .map_err(|source| IdentityError::Unreadable {
            address: address.to_string(),
            path: path.clone(),
            source,
        })?;
    let found = node.info.address.public_key();
    if found != expected.public_key() {
        node.shutdown().await;
        return Err(IdentityError::Mismatch {
            address: address.to_string(),
            path,
            expected: expected.public_key(),
            found,
        });
    }
    Ok(node)
}

/// Options of a node that never joins the network: no bootstrap nodes and no UDP socket, so it
/// needs no port of a range the running bridge may hold every port of.
fn offline_options(config: &Config, address: &str, passphrase: &[u8]) -> Options {
    let mut options = node_options(config, address, passphrase);
    options.bootstrap.clear();
    options.udp = false;
    options
}

/// Checks, without joining the network, that an identity's savedata is there, opens with the
/// key file and holds the listed key; returns the Tox ID actually loaded.
pub async fn verify(
    config: &Config,
    address: &str,
    expected: &ToxId,
    passphrase: &[u8],
) -> Result<ToxId, IdentityError> {
    let options = offline_options(config, address, passphrase);
    let node = start_listed(config, options, address, expected).await?;
    let id = node.info.address;
    node.shutdown().await;
    Ok(id)
}

/// Creates (or re-reads) an identity and returns its Tox ID, without keeping the node running.
pub async fn create(config: &Config, address: &str) -> Result<ToxId, IdentityError> {
    let pass = read_key_file(&config.bridge.key_file)?;
    let options = offline_options(config, address, &pass);
    std::fs::create_dir_all(config.bridge.state_dir.join("identities")).map_err(|source| {
        IdentityError::KeyFile {
            path: config.bridge.state_dir.clone(),
            source,
        }
    })?;
    let node = Node::start(options)
        .await
        .map_err(|e| IdentityError::Tox(address.to_string(), e))?;
    let id = node.info.address;
    node.shutdown().await;
    Ok(id)
}

/// The DNS TXT record that publishes `address`'s Tox ID (`user._tox.domain`).
pub fn dns_record(address: &str, id: &ToxId, relays: &[ToxId]) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let mut value = format!("v=tox1;id={id}");
    for relay in relays {
        value.push_str(&format!(";relay={relay}"));
    }
    // A TXT character-string holds at most 255 bytes; resolvers join the strings again.
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    Some(format!(
        "{}._tox.{}. IN TXT {}",
        local.to_ascii_lowercase(),
        domain.to_ascii_lowercase(),
        strings.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_read_into_memory_that_is_wiped_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"  a passphrase of 16+ bytes\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pass: Zeroizing<Vec<u8>> = read_key_file(&path).unwrap();
        assert_eq!(&pass[..], b"a passphrase of 16+ bytes");
        // What the bridge hands the node keeps being wiped on drop.
        let options = node_options(&test_config(dir.path()), "a@x.test", &pass);
        let kept: &Zeroizing<Vec<u8>> = options.passphrase.as_ref().unwrap();
        assert_eq!(kept.as_slice(), pass.as_slice());
    }

    fn test_config(dir: &Path) -> Config {
        let text = format!(
            "[bridge]\nhostname = \"mx.x.test\"\nstate_dir = {dir:?}\nkey_file = {key:?}\n\
             [database]\nurl = \"host=127.0.0.1\"\n\
             [inbound]\nnext_hop = \"smtp:127.0.0.1:25\"\nlocal_domains = [\"x.test\"]\n",
            key = dir.join("key"),
        );
        Config::parse(Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn savedata_path_keeps_addresses_readable_and_safe() {
        let p = savedata_path(Path::new("/s"), "Al/ice@a.test");
        assert_eq!(p, Path::new("/s/identities/Al_ice@a.test.tox"));
    }

    #[test]
    fn dns_record_names_the_tox_label() {
        let id = ToxId::new(PublicKey([0x11; 32]), 0x1234_5678);
        let rec = dns_record("Bob@B.test", &id, &[]).unwrap();
        assert_eq!(rec, format!("bob._tox.b.test. IN TXT \"v=tox1;id={id}\""));
        let relays = [ToxId::new(PublicKey([0x22; 32]), 1); 3];
        let rec = dns_record("bob@b.test", &id, &relays).unwrap();
        let strings: Vec<&str> = rec.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2, "{rec}");
        assert!(strings.iter().all(|s| s.len() <= 255));
        let joined = strings.concat();
        assert_eq!(joined.matches(";relay=").count(), 3);
    }
}
