//! Unix socket listeners: stale-file handling, permissions and ownership.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::ListenError;
use super::UnixListener as UnixListenerConfig;

/// A bound unix socket; its file is removed when this is dropped (only if the
/// file is still the one cistern created).
#[derive(Debug)]
pub struct UnixSocket {
    pub listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

impl UnixSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        // Another cistern may have replaced the file since; leave theirs alone.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.ino() == self.inode {
                if let Err(err) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %err, "cannot remove socket file");
                }
            }
        }
    }
}

/// Binds a unix socket listener as configured.
///
/// A file at the path is replaced only if it is a socket nobody answers on
/// (left behind by a crash). A live socket or any other file is an error.
pub fn bind_unix(name: &str, cfg: &UnixListenerConfig) -> Result<UnixSocket, ListenError> {
    let path = &cfg.path;
    let shown = path.display().to_string();
    let io = |what: &'static str, source: std::io::Error| ListenError::Io {
        listener: name.to_string(),
        what,
        target: shown.clone(),
        source,
    };

    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
            // Only the socket file's own mode and owner grant access; the
            // directory just has to be traversable.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }

    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError::InUse {
                        listener: name.to_string(),
                        path: shown,
                    })
                }
                Err(_) => {
                    tracing::info!(listener = name, path = %shown, "replacing stale socket file");
                    std::fs::remove_file(path).map_err(|e| io("cannot remove stale socket", e))?;
                }
            }
        }
        Ok(_) => {
            return Err(ListenError::NotASocket {
                listener: name.to_string(),
                path: shown,
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io("cannot inspect", err)),
    }

    let listener = UnixListener::bind(path).map_err(|e| io("cannot bind", e))?;
    // Until mode and owner are set the socket must not be usable by others:
    // remove it again if either step fails.
    let finish = || -> Result<u64, ListenError> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
            .map_err(|e| io("cannot set the mode of", e))?;
        if cfg.owner.is_some() || cfg.group.is_some() {
            std::os::unix::fs::chown(path, cfg.owner, cfg.group)
                .map_err(|e| io("cannot set the owner of", e))?;
        }
        Ok(std::fs::symlink_metadata(path)
            .map_err(|e| io("cannot inspect", e))?
            .ino())
    };
    match finish() {
        Ok(inode) => Ok(UnixSocket {
            listener,
            path: path.clone(),
            inode,
        }),
        Err(err) => {
            let _ = std::fs::remove_file(path);
            Err(err)
        }
    }
}
