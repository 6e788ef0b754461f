//! UNIX sockets Postfix connects to (LMTP, socketmap, milter). Whoever can connect to the LMTP
//! socket can hand in mail as any identity, so the socket is mode 0660 with the group of its
//! directory (`postfix`), and never reachable with looser permissions, not even for a moment.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Owner and group may connect (connecting needs write permission); nobody else.
pub const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{}: exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("{}: another process is listening on it", path.display())]
    InUse { path: PathBuf },
    #[error(
        "{}: its directory can be written by others, who could replace the socket",
        path.display()
    )]
    OpenDirectory { path: PathBuf },
    #[error(
        "{}: cannot give the socket its directory's group {gid} ({source}); make the directory \
         setgid (chmod g+s) so new sockets get that group",
        path.display()
    )]
    Group {
        path: PathBuf,
        gid: u32,
        source: std::io::Error,
    },
    #[error("{}: {step}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds a listening socket at `path` (absolute), mode 0660, with the group of its directory.
///
/// The socket is bound inside a fresh 0700 directory next to `path`, given its mode and group
/// there, and renamed into place: no one can connect while it still has the default mode. A
/// socket left at `path` by a stopped bridge is replaced; a live one, or anything that is not a
/// socket, is refused.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SocketError::Io { step, path, source }
    };
    check_stale(path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let parent = std::fs::metadata(dir).map_err(io("reading its directory", dir))?;
    // Writable by others is harmless only with the sticky bit (as /tmp): then only we may rename.
    if parent.mode() & 0o002 != 0 && parent.mode() & 0o1000 == 0 {
        return Err(SocketError::OpenDirectory {
            path: path.to_path_buf(),
        });
    }
    let staging = tempfile::Builder::new()
        .prefix(".toxmail-socket-")
        .tempdir_in(dir)
        .map_err(io("creating a private directory beside it", dir))?;
    let staged = staging.path().join("s");
    let listener = UnixListener::bind(&staged).map_err(io("binding", path))?;
    let perms = std::fs::Permissions::from_mode(SOCKET_MODE);
    std::fs::set_permissions(&staged, perms).map_err(io("setting its mode", path))?;
    let gid = parent.gid();
    let current = std::fs::metadata(&staged).map_err(io("reading it", path))?;
    if current.gid() != gid {
        std::os::unix::fs::chown(&staged, None, Some(gid)).map_err(|source| {
            SocketError::Group {
                path: path.to_path_buf(),
                gid,
                source,
            }
        })?;
    }
    std::fs::rename(&staged, path).map_err(io("moving it into place", path))?;
    Ok(listener)
}

/// Ok when nothing is at `path` or only the socket of a process that is gone.
fn check_stale(path: &Path) -> Result<(), SocketError> {
    let found = match std::fs::symlink_metadata(path) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                step: "looking at it",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !found.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    // A second bridge on the same socket would take half of Postfix's connections.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(SocketError::InUse {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_is_0660_with_its_directorys_group_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        let _listener = bind(&path).unwrap();
        assert_eq!(mode(&path), SOCKET_MODE);
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::os::unix::net::UnixStream::connect(&path).expect("connects at the final path");
    }

    #[tokio::test]
    async fn a_socket_made_with_another_group_gets_the_directorys() {
        let dir = tempfile::tempdir().unwrap();
        // nogroup; changing a directory's group to one we are not in needs root.
        if let Err(e) = std::os::unix::fs::chown(dir.path(), None, Some(65534)) {
            println!("note: not root ({e}); group change not tested");
            return;
        }
        let path = dir.path().join("lmtp");
        let _listener = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), 65534);
        assert_eq!(mode(&path), SOCKET_MODE);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(
            std::fs::symlink_metadata(&path).is_ok(),
            "stale socket left"
        );
        let live = bind(&path).expect("stale socket replaced");
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        drop(live);
    }

    #[tokio::test]
    async fn a_regular_file_a_link_or_a_directory_at_the_path_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for path in [&file, &link, &sub] {
            let err = bind(path).unwrap_err();
            assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[tokio::test]
    async fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("lmtp")).unwrap_err();
        assert!(matches!(err, SocketError::OpenDirectory { .. }), "{err}");
    }
}
