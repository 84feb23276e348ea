//! Configuration: the YAML file as written (`raw`), validated into the typed
//! [`Config`] the rest of cistern uses.
//!
//! Only [`load`] and [`parse`] touch serde_yaml. Every error names the file, the
//! line and column, and the key path (`listeners[0].unix.mode`), so an operator
//! can fix a config without reading our source.

mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::RawConfig;

/// The configuration cistern runs on when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.yaml");

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    pub upstream: Upstream,
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `cistern=debug`.
    pub level: String,
}

/// Where the real Docker daemon listens.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub endpoint: UpstreamEndpoint,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEndpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl fmt::Display for UpstreamEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamEndpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            UpstreamEndpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// One socket cistern accepts Docker clients on.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    Unix(UnixListener),
    Tcp(TcpListener),
}

#[derive(Debug, Clone)]
pub struct UnixListener {
    pub path: PathBuf,
    /// Permission bits applied to the socket file.
    pub mode: u32,
    /// Numeric owner and group, resolved from names at load time.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct TcpListener {
    pub address: SocketAddr,
    /// Set only when the operator explicitly accepted plain TCP on a
    /// non-loopback address.
    pub insecure: bool,
}

/// A configuration error, with where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// Reads and validates a configuration file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    parse(&name, &text)
}

/// Parses and validates configuration text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let raw = parse_raw(file, text)?;
    validate::validate(file, raw)
}

/// The embedded default configuration.
pub fn embedded_default() -> Config {
    parse("<embedded default>", EMBEDDED_DEFAULT)
        .unwrap_or_else(|err| panic!("the embedded default configuration is invalid: {err}"))
}

fn parse_raw(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    // An empty file means "all defaults", like an empty mapping.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|loc| (loc.line(), loc.column()))
            .unwrap_or((0, 0));
        // serde_yaml appends "at line L column C" itself; we print it up front.
        let message = inner.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            path: if path == "." { "(top level)".into() } else { path },
            message,
        }
    })
}
