//! The state directory: one `<id>.crt.pem` + `<id>.key.pem` pair per CA generation.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory), so a crash leaves either the old state or the new one. The key file is
//! created with mode 0600 from the start; it is never widened and never chmod-ed after the
//! fact. The key is written before the certificate: a certificate on disk means its
//! generation is complete, a key without a certificate is debris of a crash and is removed.
//! The directory itself is created with mode 0700.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::authority::{CaId, CertificateAuthority};
use crate::error::{Error, Result};

const CERT_SUFFIX: &str = ".crt.pem";
const KEY_SUFFIX: &str = ".key.pem";
const TMP_PREFIX: &str = ".tmp-";
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// Path of a generation's certificate file.
pub(crate) fn cert_path(dir: &Path, id: &CaId) -> PathBuf {
    dir.join(format!("{id}{CERT_SUFFIX}"))
}

/// Path of a generation's key file.
pub(crate) fn key_path(dir: &Path, id: &CaId) -> PathBuf {
    dir.join(format!("{id}{KEY_SUFFIX}"))
}

/// Creates the state directory with mode 0700 if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(Error::io("creating", dir, e)),
    }
    let meta = fs::metadata(dir).map_err(|e| Error::io("inspecting", dir, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "CA state directory is accessible to other users"
        );
    }
    Ok(())
}

/// Writes `contents` to `dir/name` atomically, the file having `mode` from its creation.
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let target = dir.join(name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing", &tmp, e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, &target).map_err(|e| Error::io("renaming into place", &target, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// Stores a generation: key first (0600), then certificate.
pub(crate) fn write_generation(dir: &Path, ca: &CertificateAuthority) -> Result<()> {
    let id = ca.id();
    write_atomic(
        dir,
        &format!("{id}{KEY_SUFFIX}"),
        ca.key_pem().as_bytes(),
        KEY_MODE,
    )?;
    write_atomic(
        dir,
        &format!("{id}{CERT_SUFFIX}"),
        ca.cert().pem.as_bytes(),
        CERT_MODE,
    )
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

/// Deletes a generation's files: certificate first, so a crash in between leaves only a
/// key without certificate, which the next load removes.
pub(crate) fn remove_generation(dir: &Path, id: &CaId) -> Result<()> {
    remove_if_present(&cert_path(dir, id))?;
    remove_if_present(&key_path(dir, id))?;
    sync_dir(dir)
}

#[derive(Default)]
struct Pair {
    cert: bool,
    key: bool,
}

/// Loads every usable generation that is not expired at `now`, oldest first, and removes
/// everything else this module wrote: leftover temporary files, keys without certificate,
/// certificates without key, unreadable or mismatched pairs, expired generations. Files
/// with other names are left alone.
pub(crate) fn load_all(dir: &Path, now: OffsetDateTime) -> Result<Vec<CertificateAuthority>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    let mut removed_any = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            remove_if_present(&entry.path())?;
            removed_any = true;
        } else if let Some(id) = name.strip_suffix(CERT_SUFFIX) {
            pairs.entry(id.to_owned()).or_default().cert = true;
        } else if let Some(id) = name.strip_suffix(KEY_SUFFIX) {
            pairs.entry(id.to_owned()).or_default().key = true;
        }
    }

    let mut loaded = Vec::new();
    for (name, pair) in pairs {
        let Ok(id) = CaId::parse(&name) else {
            tracing::warn!(dir = %dir.display(), file = %name, "ignoring file that is not a CA id");
            continue;
        };
        let cert_file = cert_path(dir, &id);
        let key_file = key_path(dir, &id);
        let outcome = match (pair.cert, pair.key) {
            (true, true) => load_pair(&id, &cert_file, &key_file),
            (false, true) => Err("key without certificate".to_owned()),
            (true, false) => Err("certificate without key".to_owned()),
            (false, false) => continue,
        };
        match outcome {
            Ok(ca) if ca.not_after() <= now => {
                tracing::info!(ca = %id, not_after = %ca.not_after(), "removing expired CA");
                remove_generation(dir, &id)?;
                removed_any = true;
            }
            Ok(ca) => loaded.push(ca),
            Err(reason) => {
                tracing::warn!(ca = %id, reason = %reason, "removing unusable stored CA");
                remove_generation(dir, &id)?;
                removed_any = true;
            }
        }
    }
    if removed_any {
        sync_dir(dir)?;
    }
    loaded.sort_by_key(|ca| ca.not_before());
    Ok(loaded)
}

/// Loads generations another process (such as `cistern ca rotate`) stored since
/// this one looked: complete, valid pairs whose ids are not in `known`. Removes
/// nothing: a pair still being written (key first, then certificate) is simply
/// not complete yet and is picked up next time.
pub(crate) fn load_new(
    dir: &Path,
    known: &[CaId],
    now: OffsetDateTime,
) -> Result<Vec<CertificateAuthority>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(id) = name
            .strip_suffix(CERT_SUFFIX)
            .and_then(|id| CaId::parse(id).ok())
        else {
            continue;
        };
        if known.contains(&id) {
            continue;
        }
        let key_file = key_path(dir, &id);
        if !key_file.exists() {
            continue;
        }
        match load_pair(&id, &cert_path(dir, &id), &key_file) {
            Ok(ca) if ca.is_valid_at(now) => found.push(ca),
            Ok(_) => {}
            Err(reason) => {
                tracing::debug!(ca = %id, reason = %reason, "stored CA not loadable yet");
            }
        }
    }
    Ok(found)
}

fn load_pair(
    id: &CaId,
    cert_file: &Path,
    key_file: &Path,
) -> std::result::Result<CertificateAuthority, String> {
    let cert_pem =
        fs::read_to_string(cert_file).map_err(|e| format!("reading certificate: {e}"))?;
    let key_pem = fs::read_to_string(key_file).map_err(|e| format!("reading key: {e}"))?;
    let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem)?;
    if ca.id() != id {
        return Err(format!("file name does not match key id {}", ca.id()));
    }
    Ok(ca)
}
