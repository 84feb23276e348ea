//! One reading of a tar stream as it passes, shared by everything cistern
//! checks or rewrites in one (build contexts, load and save archives), so
//! that each sees the entries the daemon's untar will see.
//!
//! The daemon reads archives with Go's `archive/tar`. Like it:
//! - a PAX extended header's `path` and `size` records, and a GNU long
//!   name, apply to the entry after them (a PAX `size` that disagreed with
//!   cistern's reading would let an entry's data pass for headers);
//! - an extended header larger than 1 MiB, or with a malformed PAX record,
//!   is refused (Go refuses the archive; the size limit is Go's), so nothing
//!   is buffered without bound.
//!
//! A block that is not a tar header with a valid checksum, or whose size
//! cannot be read, ends the reading: it and everything after it come as
//! [`Event::Raw`] (a compressed stream, or not a tar at all).
//!
//! I/O-free: [`TarStream::feed`] takes the bytes of each frame and reports
//! them as [`Event`]s, each byte exactly once and in order.

/// Largest extended header read (Go's `maxSpecialFileSize`).
const MAX_EXTENDED: u64 = 1 << 20;

/// What a stretch of the stream is.
#[derive(Debug)]
pub enum Event<'a> {
    /// Bytes of an extended header entry (its block, data and padding).
    Extended(&'a [u8]),
    /// An entry's header block and what it says, extended headers applied.
    Entry {
        block: &'a [u8],
        path: String,
        kind: tar::EntryType,
        size: u64,
        /// The size came from a PAX record, not from `block`.
        pax_size: bool,
    },
    /// Bytes of the current entry's data.
    Data(&'a [u8]),
    /// The current entry's data is complete (its padding follows).
    DataEnd,
    /// Padding after an entry's data.
    Padding(&'a [u8]),
    /// An all-zero block (the end of the archive).
    Zero(&'a [u8]),
    /// Bytes not read as tar: from the first block that is not a header on.
    Raw(&'a [u8]),
}

#[derive(Debug)]
enum At {
    Header,
    Extended { data: u64, padding: u64, pax: bool },
    Data { left: u64, padding: u64 },
    Padding(u64),
    Raw,
}

/// A tar stream being read. See the module docs.
#[derive(Debug)]
pub struct TarStream {
    at: At,
    block: Vec<u8>,
    extended: Vec<u8>,
    next_path: Option<String>,
    next_size: Option<u64>,
    headers: u64,
}

impl Default for TarStream {
    fn default() -> Self {
        TarStream {
            at: At::Header,
            block: Vec::with_capacity(512),
            extended: Vec::new(),
            next_path: None,
            next_size: None,
            headers: 0,
        }
    }
}

impl TarStream {
    /// Header blocks read so far.
    pub fn headers(&self) -> u64 {
        self.headers
    }

    /// Whether the stream stopped being read as tar.
    pub fn is_raw(&self) -> bool {
        matches!(self.at, At::Raw)
    }

    /// Reads the next bytes of the stream, reporting them to `on`.
    pub fn feed(&mut self, mut bytes: &[u8], on: &mut impl FnMut(Event<'_>)) {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Raw => {
                    on(Event::Raw(bytes));
                    return;
                }
                At::Header => {
                    let n = (512 - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.block.len() == 512 {
                        let block = std::mem::take(&mut self.block);
                        self.header(&block, on);
                        self.block = block;
                        self.block.clear();
                    }
                }
                At::Extended { data, padding, pax } => {
                    let n = (*data + *padding).min(bytes.len() as u64) as usize;
                    let in_data = (*data).min(n as u64);
                    self.extended.extend_from_slice(&bytes[..in_data as usize]);
                    *data -= in_data;
                    *padding -= n as u64 - in_data;
                    let done = (*data == 0 && *padding == 0).then_some(*pax);
                    on(Event::Extended(&bytes[..n]));
                    bytes = &bytes[n..];
                    if let Some(pax) = done {
                        self.at = At::Header;
                        self.apply_extended(pax);
                    }
                }
                At::Data { left, padding } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    let end = (*left == 0).then_some(*padding);
                    on(Event::Data(&bytes[..n as usize]));
                    bytes = &bytes[n as usize..];
                    if let Some(padding) = end {
                        on(Event::DataEnd);
                        self.at = At::Padding(padding);
                    }
                }
                At::Padding(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.at = At::Header;
                    }
                    on(Event::Padding(&bytes[..n as usize]));
                    bytes = &bytes[n as usize..];
                }
            }
            if matches!(self.at, At::Padding(0)) {
                self.at = At::Header;
            }
        }
    }

    /// A complete header block.
    fn header(&mut self, block: &[u8], on: &mut impl FnMut(Event<'_>)) {
        if block.iter().all(|b| *b == 0) {
            return on(Event::Zero(block));
        }
        let header = tar::Header::from_byte_slice(block);
        let size = match header.entry_size() {
            Ok(size) if checksum_ok(block) => size,
            _ => {
                self.at = At::Raw;
                return on(Event::Raw(block));
            }
        };
        let kind = header.entry_type();
        if kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            if size > MAX_EXTENDED {
                self.at = At::Raw;
                return on(Event::Raw(block));
            }
            self.headers += 1;
            self.extended.clear();
            on(Event::Extended(block));
            let padding = (512 - size % 512) % 512;
            let pax = kind.is_pax_local_extensions();
            if size + padding == 0 {
                self.apply_extended(pax);
            } else {
                self.at = At::Extended {
                    data: size,
                    padding,
                    pax,
                };
            }
            return;
        }
        self.headers += 1;
        let pax_size = self.next_size.take();
        let size = pax_size.unwrap_or(size);
        let path = match self.next_path.take() {
            Some(path) => path,
            None => String::from_utf8_lossy(&header.path_bytes()).into_owned(),
        };
        on(Event::Entry {
            block,
            path: clean(&path),
            kind,
            size,
            pax_size: pax_size.is_some(),
        });
        let padding = (512 - size % 512) % 512;
        if size == 0 {
            on(Event::DataEnd);
            self.at = if padding == 0 {
                At::Header
            } else {
                At::Padding(padding)
            };
        } else {
            self.at = At::Data {
                left: size,
                padding,
            };
        }
    }

    /// What a finished extended header says about the next entry.
    fn apply_extended(&mut self, pax: bool) {
        let data = std::mem::take(&mut self.extended);
        if pax {
            for record in tar::PaxExtensions::new(&data) {
                // Go refuses a malformed record, and so the whole archive.
                let Ok(record) = record else {
                    self.at = At::Raw;
                    return;
                };
                match record.key() {
                    Ok("path") => {
                        self.next_path = record.value().ok().map(str::to_owned);
                    }
                    Ok("size") => {
                        self.next_size = record.value().ok().and_then(|v| v.parse().ok());
                    }
                    _ => {}
                }
            }
        } else {
            let name = data.split(|b| *b == 0).next().unwrap_or_default();
            self.next_path = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
}

/// The path the daemon's untar writes an entry to, relative to the archive
/// root (`./a/../manifest.json` is `manifest.json`).
pub fn clean(path: &str) -> String {
    crate::wire::mounts::clean_components(path).join("/")
}

/// Whether a 512-byte block is a tar header with a correct checksum.
fn checksum_ok(block: &[u8]) -> bool {
    let Ok(stored) = tar::Header::from_byte_slice(block).cksum() else {
        return false;
    };
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == computed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    /// An entry as read: path, size, data.
    type Read = (String, u64, Vec<u8>);

    /// Every entry, and all bytes reported, fed in `step`-byte frames.
    fn read(archive: &[u8], step: usize) -> (Vec<Read>, Vec<u8>) {
        let mut s = TarStream::default();
        let mut entries = Vec::new();
        let mut all = Vec::new();
        for frame in archive.chunks(step) {
            s.feed(frame, &mut |e| match e {
                Event::Entry {
                    block, path, size, ..
                } => {
                    all.extend_from_slice(block);
                    entries.push((path, size, Vec::new()));
                }
                Event::Data(b) => {
                    all.extend_from_slice(b);
                    entries.last_mut().unwrap().2.extend_from_slice(b);
                }
                Event::Extended(b) | Event::Padding(b) | Event::Zero(b) | Event::Raw(b) => {
                    all.extend_from_slice(b)
                }
                Event::DataEnd => {}
            });
        }
        (entries, all)
    }

    #[test]
    fn every_byte_is_reported_once_whatever_the_framing() {
        let mut archive = entry("manifest.json", b"[]");
        archive.extend(pax(&[("path", "very/long/name")]));
        archive.extend(entry("short", &[7u8; 700]));
        archive.extend([0u8; 1024]);
        for step in [1, 7, 512, 513, 100_000] {
            let (entries, all) = read(&archive, step);
            assert_eq!(all, archive, "step {step}");
            assert_eq!(entries.len(), 2);
            assert_eq!(entries[0].0, "manifest.json");
            assert_eq!(entries[0].2, b"[]");
            assert_eq!(entries[1].0, "very/long/name");
            assert_eq!(entries[1].2, vec![7u8; 700]);
        }
    }

    #[test]
    fn a_pax_size_record_sets_the_entry_size_as_the_daemon_reads_it() {
        // The ustar header says 0 bytes; the PAX record says 600. Read by
        // the header alone, the entry's data would pass for a header
        // naming manifest.json.
        let hidden = entry("manifest.json", b"[{\"RepoTags\":[\"victim:1\"]}]");
        let mut padded = hidden.clone();
        padded.resize(1024, 0);
        let mut archive = pax(&[("size", "1024")]);
        archive.extend(entry("layer.tar", b""));
        archive.extend(&padded);
        let (entries, _) = read(&archive, 512);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].0, "layer.tar");
        assert_eq!(entries[0].1, 1024);
    }

    #[test]
    fn a_malformed_pax_record_ends_the_reading_as_it_fails_the_daemons() {
        let mut bad = pax(&[("path", "manifest.json")]);
        bad[512] = b'9'; // the record's length
        let mut s = TarStream::default();
        s.feed(&bad, &mut |_| {});
        assert!(s.is_raw());
    }

    #[test]
    fn an_oversized_extended_header_ends_the_reading() {
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_size(MAX_EXTENDED + 1);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        let mut s = TarStream::default();
        s.feed(h.as_bytes(), &mut |_| {});
        assert!(s.is_raw());
    }
}
