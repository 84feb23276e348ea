//! State files: small JSON documents in the state directory that must
//! survive a `kill -9` (`images.json`, `jobs.json`).
//!
//! A file is written atomically (temporary file, fsync, rename, fsync of the
//! directory) under an exclusive `flock` on `<name>.lock`, read-modify-write,
//! so `cistern cleanup` and several cistern processes sharing a state
//! directory never lose an update, and a crash leaves the old or the new
//! file, never half of one. A missing file reads as the default content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::daemon::error::DockerError;

/// `<state_dir>/<name>.json`, holding a `T`.
#[derive(Debug)]
pub struct StateFile<T> {
    dir: PathBuf,
    name: &'static str,
    content: PhantomData<fn() -> T>,
}

impl<T> Clone for StateFile<T> {
    fn clone(&self) -> Self {
        StateFile {
            dir: self.dir.clone(),
            name: self.name,
            content: PhantomData,
        }
    }
}

/// Errors reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unreadable state: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl From<StoreError> for DockerError {
    fn from(err: StoreError) -> DockerError {
        DockerError::internal(format!("cistern: ownership state: {err}"))
    }
}

impl<T: Default + Serialize + DeserializeOwned> StateFile<T> {
    pub fn open(state_dir: &Path, name: &'static str) -> StateFile<T> {
        StateFile {
            dir: state_dir.to_path_buf(),
            name,
            content: PhantomData,
        }
    }

    /// `<state_dir>/<name>.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.name))
    }

    fn io(&self, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn lock(&self, exclusive: bool) -> Result<Option<nix::fcntl::Flock<File>>, StoreError> {
        let path = self.dir.join(format!("{}.lock", self.name));
        if !exclusive && !self.dir.exists() {
            return Ok(None);
        }
        fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(&path, e))?;
        let arg = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        nix::fcntl::Flock::lock(file, arg)
            .map(Some)
            .map_err(|(_, errno)| self.io(&path, io::Error::from(errno)))
    }

    fn read(&self) -> Result<T, StoreError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.display().to_string(),
                source,
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(T::default()),
            Err(err) => Err(self.io(&path, err)),
        }
    }

    /// The current content (the default when there is no file yet).
    pub fn load(&self) -> Result<T, StoreError> {
        let _lock = self.lock(false)?;
        self.read()
    }

    /// Read, change, write atomically, under the exclusive lock.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> Result<R, StoreError> {
        let _lock = self.lock(true)?;
        let mut state = self.read()?;
        let result = change(&mut state);
        let path = self.path();
        let tmp = self
            .dir
            .join(format!(".{}.json.{}.tmp", self.name, std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&state).map_err(io::Error::other)?)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io(&path, e)
        })?;
        Ok(result)
    }
}
