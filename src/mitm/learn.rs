//! How learned repository hosts join the cached set, and the set itself
//! while cistern runs.
//!
//! [`crate::discover`] finds the hosts package managers download from: on
//! this host at start, and in each image a container is created from. This
//! decides which of them the caching proxy serves: those the operator's
//! `caching.discover` allow and deny globs admit, not already covered by a
//! cached domain, at most `max_hosts` learned hosts in all.
//!
//! [`CachedSet`] is the cached set at run time, shared by the proxy (which
//! names it serves), the TLS side (which names get leaves) and injection
//! (which names containers are routed and trusted for). When it grows, the
//! CA store makes a generation constrained to the grown set at once, so the
//! very container whose image named the host trusts the proxy for it; the
//! containers created before keep what they were given. Hosts learned from
//! images are kept in `<state_dir>/learned-hosts.json` and cached again
//! after a restart (hosts learned from this host are found again anyway).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cistern_ca::CaStore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::discover::{self, Filter, Found, Root};
use crate::http::ProxyBody;

use http_body_util::BodyExt;

use super::body::Sniffed;
use super::config::CachingConfig;
use super::domains::{Domains, Learned, LeftOut};

/// Name of the file, in `caching.state_dir`, that keeps the hosts learned
/// from images.
pub const LEARNED_FILE: &str = "learned-hosts.json";

/// Splits what discovery found into hosts to add and hosts left out, given
/// the domains cached already and how many hosts were learned already.
fn learn(config: &CachingConfig, cached: &Domains, already: usize, found: &[Found]) -> Learned {
    let d = &config.discover;
    let filter = Filter::new(&d.allow, &d.deny, d.max_hosts.saturating_sub(already));
    let mut learned = Learned::default();
    let mut candidates = Vec::new();
    for f in found {
        if cached.matching(&f.host) == Some(f.host.as_str()) {
            // A cached domain itself.
        } else if !filter.admits(&f.host) {
            learned.left_out.insert(f.host.clone(), LeftOut::Filtered);
        } else {
            candidates.push(f.clone());
        }
    }
    let (kept, over) = filter.hosts(&candidates);
    for host in over {
        learned.left_out.insert(host, LeftOut::OverLimit);
    }
    for host in kept {
        let places = candidates
            .iter()
            .filter(|f| f.host == host)
            .cloned()
            .collect();
        if cached.matching(&host).is_some() {
            learned.routed.insert(host, places);
        } else {
            learned.added.insert(host, places);
        }
    }
    learned
}

/// `learned-hosts.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LearnedFile {
    /// Host → where it was found.
    hosts: BTreeMap<String, Vec<Found>>,
}

/// Reads the learned hosts file (empty when missing or unreadable).
fn read_learned(state_dir: &Path) -> LearnedFile {
    let path = state_dir.join(LEARNED_FILE);
    let mut file: LearnedFile = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            tracing::warn!(path = %path.display(), error = %err, "unreadable learned hosts file, starting afresh");
            LearnedFile::default()
        }),
        Err(_) => LearnedFile::default(),
    };
    // A host that is not a name a CA can hold (the file was edited by hand,
    // say) is dropped, as is a place that names another host.
    file.hosts.retain(|host, places| {
        places.retain(|f| f.host == *host);
        let usable = discover::host_of(&format!("https://{host}/")).as_deref() == Some(host);
        usable && !places.is_empty()
    });
    file
}

impl CachingConfig {
    /// At start: with `discover.host` on, reads the host's package-manager
    /// configuration (with this process's environment as theirs); then the
    /// hosts learned from images in earlier runs. Adds the admitted hosts to
    /// `domains` and records them in `learned` (for logs and `cistern cache
    /// domains`).
    pub fn learn_at_start(&mut self) -> &Learned {
        let mut found = Vec::new();
        if self.discover.host {
            let env: discover::Env = std::env::vars().collect();
            found = discover::find(&Root::new("/"), &env);
        }
        found.extend(read_learned(&self.state_dir).hosts.into_values().flatten());
        let learned = learn(self, &Domains::new(&self.domains), 0, &found);
        self.domains.extend(learned.added.keys().cloned());
        self.learned = learned;
        &self.learned
    }
}

/// The cached set while cistern runs.
#[derive(Debug)]
pub struct CachedSet {
    now: RwLock<Arc<Domains>>,
    /// Learned hosts under a cached domain, routed by name.
    routed: RwLock<Arc<Vec<String>>>,
    ca: Arc<CaStore>,
    config: CachingConfig,
    /// Hosts learned so far (at start and since), for the bound.
    learned: Mutex<usize>,
    /// Hosts learned from images, as kept in the file.
    from_images: Mutex<LearnedFile>,
    file: PathBuf,
}

impl CachedSet {
    /// The set of `config` (after [`CachingConfig::learn_at_start`]), whose
    /// generations `ca` makes.
    pub fn new(config: &CachingConfig, ca: Arc<CaStore>) -> CachedSet {
        let from_images = read_learned(&config.state_dir);
        CachedSet {
            now: RwLock::new(Arc::new(Domains::new(ca.domains().iter()))),
            routed: RwLock::new(Arc::new(config.learned.routed.keys().cloned().collect())),
            ca,
            learned: Mutex::new(config.learned.added.len() + config.learned.routed.len()),
            from_images: Mutex::new(from_images),
            file: config.state_dir.join(LEARNED_FILE),
            config: config.clone(),
        }
    }

    /// The cached domains now.
    pub fn domains(&self) -> Arc<Domains> {
        self.now
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The learned hosts under a cached domain, which containers are
    /// routed for by name besides the cached domains.
    pub fn routed(&self) -> Arc<Vec<String>> {
        self.routed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds the admitted hosts of `found` (found in an image, or a create's
    /// environment) to the set: a CA generation for the grown set first
    /// (none for a host under a cached domain: it is routed by name), then
    /// the hosts are kept in the learned hosts file. Returns the hosts
    /// added or routed.
    pub fn learn(&self, found: &[Found], now: OffsetDateTime) -> Vec<String> {
        let mut count = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let routed = self.routed();
        let fresh: Vec<Found> = found
            .iter()
            .filter(|f| !routed.contains(&f.host))
            .cloned()
            .collect();
        let learned = learn(&self.config, &self.domains(), *count, &fresh);
        for (host, why) in &learned.left_out {
            tracing::debug!(%host, ?why, "learned repository host left out");
        }
        let mut kept = learned.routed.clone();
        let mut generation = None;
        let added: Vec<String> = learned.added.keys().cloned().collect();
        if !added.is_empty() {
            match self.ca.add_domains(&added, now) {
                Ok(made) => {
                    generation = made.map(|g| g.id.to_string());
                    kept.extend(learned.added.clone());
                }
                Err(err) => {
                    tracing::warn!(hosts = ?added, error = %err, "learned hosts not cached: no CA for them");
                }
            }
        }
        if kept.is_empty() {
            return Vec::new();
        }
        *count += kept.len();
        // Kept only once a CA holds them: a name kept is a name the next
        // start's CA configuration accepts.
        let mut file = self
            .from_images
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        file.hosts.extend(kept.clone());
        if let Err(err) = write_atomic(&self.file, &file) {
            tracing::warn!(path = %self.file.display(), error = %err, "cannot keep the learned hosts; they are cached until cistern stops");
        }
        drop(file);
        if !learned.routed.is_empty() {
            let mut names = routed.to_vec();
            names.extend(learned.routed.keys().cloned());
            *self.routed.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(names);
        }
        *self.now.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Domains::new(self.ca.domains().iter()));
        for (host, places) in &kept {
            let from: Vec<String> = places
                .iter()
                .map(|f| format!("{} ({})", f.tool, f.from))
                .collect();
            if learned.routed.contains_key(host) {
                tracing::info!(%host, from = %from.join(", "), "routing a learned repository host under a cached domain");
            } else {
                tracing::info!(%host, from = %from.join(", "), ca = ?generation, "caching a learned repository host");
            }
        }
        kept.into_keys().collect()
    }
}

/// Largest registry configuration file read for the host it names.
const MAX_INDEX_CONFIG: usize = 64 << 10;

impl CachedSet {
    /// Whether hosts are learned while cistern runs (`discover.images`).
    pub fn learns_at_run_time(&self) -> bool {
        self.config.discover.images
    }

    /// `body`, the answer to a `GET` of `url` (a cached host's
    /// `…/config.json`), passed on unchanged; once the client has it whole,
    /// a cargo sparse registry's configuration gives its download host
    /// (`dl`), which cargo fetches the `.crate` files from and which is
    /// often another host than the index. It is learned like a host found
    /// in an image (the filters and the bound apply); containers created
    /// from then on are routed and trusted for it.
    pub fn learn_from_index_config(
        self: &Arc<Self>,
        url: String,
        encoding: Option<String>,
        expected: Option<u64>,
        body: ProxyBody,
    ) -> ProxyBody {
        let set = self.clone();
        let learn = move |bytes: bytes::Bytes| {
            let Some(json) = decoded(&bytes, encoding.as_deref()) else {
                return;
            };
            let found = discover::cargo_index_config(&json, &url);
            let (domains, routed) = (set.domains(), set.routed());
            let known = |host: &str| {
                domains.matching(host) == Some(host) || routed.iter().any(|r| r == host)
            };
            if found.iter().all(|f| known(&f.host)) {
                return;
            }
            // A new CA generation is made off the runtime's threads.
            tokio::task::spawn_blocking(move || set.learn(&found, OffsetDateTime::now_utc()));
        };
        BodyExt::boxed_unsync(Sniffed::new(body, MAX_INDEX_CONFIG, expected, learn))
    }
}

/// A response body as it was before its `Content-Encoding` (`gzip`,
/// `deflate`, or none), at most [`MAX_INDEX_CONFIG`] bytes; `None` for
/// another encoding, a corrupt one, or more.
fn decoded(body: &[u8], encoding: Option<&str>) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = MAX_INDEX_CONFIG as u64 + 1;
    let read = match encoding.map(str::trim) {
        None | Some("") | Some("identity") => return Some(body.to_vec()),
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
            flate2::read::GzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
        }
        Some(e) if e.eq_ignore_ascii_case("deflate") => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        Some(_) => return None,
    };
    (read.is_ok() && out.len() <= MAX_INDEX_CONFIG).then_some(out)
}

fn write_atomic(path: &Path, file: &LearnedFile) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Tool;
    use crate::mitm::RawCaching;

    fn config(yaml: &str) -> CachingConfig {
        serde_yaml::from_str::<RawCaching>(yaml)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn found(host: &str) -> Found {
        Found {
            host: host.into(),
            tool: Tool::Apt,
            from: "/etc/apt/sources.list".into(),
        }
    }

    #[test]
    fn learned_subdomains_of_configured_domains_are_routed_and_filters_apply() {
        let cfg = config(
            "domains: [example.test]\ndiscover: { deny: ['*.internal.example'], max_hosts: 2 }\n",
        );
        let learned = learn(
            &cfg,
            &Domains::new(&cfg.domains),
            0,
            &[
                found("deb.example.test"),
                found("pkgs.example"),
                found("repo.internal.example"),
                found("more.example"),
            ],
        );
        assert_eq!(learned.added.keys().collect::<Vec<_>>(), ["pkgs.example"]);
        assert_eq!(
            learned.routed.keys().collect::<Vec<_>>(),
            ["deb.example.test"]
        );
        assert_eq!(learned.left_out["repo.internal.example"], LeftOut::Filtered);
        assert_eq!(learned.left_out["more.example"], LeftOut::OverLimit);
    }

    #[test]
    fn an_index_config_is_read_plain_gzipped_or_deflated_and_bounded() {
        use std::io::Write;
        let json = br#"{"dl":"https://static.example.test/crates"}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(json).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(decoded(json, None).unwrap(), json);
        assert_eq!(decoded(&gz, Some("gzip")).unwrap(), json);
        assert_eq!(decoded(&zlib, Some("deflate")).unwrap(), json);
        assert!(decoded(json, Some("br")).is_none());
        assert!(decoded(json, Some("gzip")).is_none(), "not gzip");
        // A small body that inflates past the bound is not read.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; MAX_INDEX_CONFIG + 1]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 1024);
        assert!(decoded(&bomb, Some("gzip")).is_none());
    }

    #[test]
    fn the_set_grows_with_a_new_ca_generation_is_kept_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&format!(
            "domains: [example.test]\nstate_dir: {}\ndiscover: {{ host: false, max_hosts: 3 }}\n",
            dir.path().display()
        ));
        let now = OffsetDateTime::now_utc();
        let ca = Arc::new(CaStore::open(cfg.ca_config().unwrap(), now).unwrap());
        let set = CachedSet::new(&cfg, ca.clone());
        let before = ca.current_for_new_container(now).unwrap();
        assert_eq!(set.learn(&[found("pkgs.example")], now), ["pkgs.example"]);
        assert!(set.domains().matching("pkgs.example").is_some());
        let after = ca.current_for_new_container(now).unwrap();
        assert_ne!(before.id, after.id, "a generation permitting the new host");
        // Under a cached domain: routed by name, with no new generation.
        assert_eq!(
            set.learn(&[found("pkgs.example"), found("a.example.test")], now),
            ["a.example.test"]
        );
        assert_eq!(*set.routed(), ["a.example.test"]);
        assert_eq!(ca.current_for_new_container(now).unwrap().id, after.id);
        // Known: nothing new.
        assert!(set
            .learn(&[found("pkgs.example"), found("a.example.test")], now)
            .is_empty());
        // The bound counts every learned host.
        assert_eq!(
            set.learn(&[found("b.example"), found("c.example")], now),
            ["b.example"]
        );
        assert!(set.domains().matching("c.example").is_none());

        // After a restart, the hosts learned from images are cached again.
        let mut again = cfg.clone();
        again.learn_at_start();
        assert_eq!(again.domains, ["example.test", "b.example", "pkgs.example"]);
        assert_eq!(
            again.learned.routed.keys().collect::<Vec<_>>(),
            ["a.example.test"]
        );
    }

    #[test]
    fn no_domains_are_needed_when_hosts_are_learned_but_one_is_without() {
        assert!(config("{}").domains.is_empty());
        assert!(config("discover: { host: false }").domains.is_empty());
        let err = serde_yaml::from_str::<RawCaching>("discover: { host: false, images: false }")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("discover.host"), "{err}");
    }
}
