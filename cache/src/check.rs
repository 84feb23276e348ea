//! The checks a stored body is read back against: its block format and
//! hashes.
//!
//! At commit the writer records the `xxh3-64` of each [`BLOCK`] of the body
//! ([`Meta::blocks`], built by [`BlockChecks`]) and the `xxh3-128` of the
//! whole body ([`Meta::check`], see [`xxh3_check`]). Readers check every
//! block before they hand it out, or the whole body with a [`Verifier`];
//! entries stored before those checks existed are verified against their
//! SHA-256 content address instead. SHA-256 stays the address (content is
//! shared between keys by it), but checking it on every read cost most of a
//! hit's CPU even with the SHA extensions (about 2 GB/s per core); xxh3 runs
//! at memory speed.
//!
//! No I/O and nothing of the store here: the write side and the read side
//! both build on it.
//!
//! [`Meta::check`]: crate::meta::Meta::check
//! [`Meta::blocks`]: crate::meta::Meta::blocks

use twox_hash::XxHash3_128 as Xxh3;

/// Size of the blocks whose checksums are recorded ([`Meta::blocks`]), and
/// of the pieces bodies are read and handed out in.
///
/// [`Meta::blocks`]: crate::meta::Meta::blocks
pub(crate) const BLOCK: usize = 256 * 1024;

/// Prefix of [`Meta::check`] values.
///
/// [`Meta::check`]: crate::meta::Meta::check
const XXH3_PREFIX: &str = "xxh3-128:";

/// The `check` value for a body whose xxh3-128 digest is `digest`.
pub(crate) fn xxh3_check(digest: u128) -> String {
    format!("{XXH3_PREFIX}{digest:032x}")
}

/// Builds [`Meta::blocks`] from the body, fed in order in pieces that are
/// whole blocks except the last.
///
/// [`Meta::blocks`]: crate::meta::Meta::blocks
#[derive(Debug, Default)]
pub(crate) struct BlockChecks(String);

impl BlockChecks {
    pub(crate) fn add(&mut self, data: &[u8]) {
        use std::fmt::Write;
        for block in data.chunks(BLOCK) {
            let _ = write!(self.0, "{:016x}", twox_hash::XxHash3_64::oneshot(block));
        }
    }

    pub(crate) fn finish(self) -> String {
        self.0
    }
}

/// The recorded block checksums (`blocks`) of a body of `size` bytes, if
/// they form a well-formed list for that size.
pub(crate) fn block_checks(blocks: Option<&str>, size: u64) -> Option<Vec<u64>> {
    let text = blocks?;
    let count = usize::try_from(size.div_ceil(BLOCK as u64)).ok()?;
    if text.len() != count * 16 {
        return None;
    }
    (0..count)
        .map(|i| u64::from_str_radix(text.get(i * 16..(i + 1) * 16)?, 16).ok())
        .collect()
}

/// Whether `block` matches its recorded checksum (`None`: none recorded).
pub(crate) fn block_matches(want: Option<&u64>, block: &[u8]) -> bool {
    want == Some(&twox_hash::XxHash3_64::oneshot(block))
}

/// Checks bytes against a body's whole hash as they are read.
pub(crate) enum Verifier {
    Xxh3 { hasher: Box<Xxh3>, want: u128 },
    Sri(ssri::IntegrityChecker),
}

impl Verifier {
    /// A verifier for the recorded `check`, or for the content address
    /// when there is none (or it is malformed).
    pub(crate) fn new(check: Option<&str>, integrity: &cacache::Integrity) -> Verifier {
        let want = check
            .and_then(|c| c.strip_prefix(XXH3_PREFIX))
            .and_then(|hex| u128::from_str_radix(hex, 16).ok());
        match want {
            Some(want) => Verifier::Xxh3 {
                hasher: Box::default(),
                want,
            },
            None => Verifier::Sri(ssri::IntegrityChecker::new(integrity.clone())),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Verifier::Xxh3 { hasher, .. } => hasher.write(data),
            Verifier::Sri(checker) => checker.input(data),
        }
    }

    pub(crate) fn matches(self) -> bool {
        match self {
            Verifier::Xxh3 { hasher, want } => hasher.finish_128() == want,
            Verifier::Sri(checker) => checker.result().is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(check: Option<&str>, stored: &[u8], read: &[&[u8]]) -> bool {
        let sri = ssri::Integrity::from(stored);
        let mut v = Verifier::new(check, &sri);
        for part in read {
            v.update(part);
        }
        v.matches()
    }

    #[test]
    fn the_recorded_checksum_verifies_reads_in_any_chunking() {
        let body = b"the body as it was written";
        let check = xxh3_check(twox_hash::XxHash3_128::oneshot(body));
        assert!(verdict(Some(&check), body, &[&body[..5], &body[5..]]));
        assert!(!verdict(
            Some(&check),
            body,
            &[b"the body as it was WRITTEN"]
        ));
        assert!(!verdict(Some(&check), body, &[&body[..5]]));
    }

    #[test]
    fn entries_without_a_checksum_are_verified_against_sha256() {
        let body = b"stored before checksums existed";
        assert!(verdict(None, body, &[&body[..3], &body[3..]]));
        assert!(!verdict(None, body, &[b"stored before checksums EXISTED"]));
        // A malformed checksum falls back to the content address too.
        assert!(!verdict(Some("xxh3-128:zz"), body, &[b"tampered"]));
    }
}
