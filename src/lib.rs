//! cistern: a Docker API proxy that makes shared CI runners safe and fast.
//!
//! Layout:
//! - [`http`]: what both proxies share: the body type, the hop-by-hop
//!   header stripper, the error-chain formatter;
//! - [`listen`]: unix and TCP listeners, TLS and its reload, per-client
//!   connection caps, and [`listen::serve`], the one accept loop every
//!   listener runs (TLS handshake, idle timeouts, graceful shutdown);
//! - [`wire`]: the Docker wire layer: routes, queries, Go-compatible JSON,
//!   schema, mounts, with no I/O;
//! - [`policy`]: what a listener lets a CI job ask of the daemon;
//! - [`tenancy`]: ownership (who owns what) and per-job and per-container
//!   sockets;
//! - [`inject`]: cache routing and trust put into containers;
//! - [`mitm`]: transparent caching: its configuration, the CA store shared
//!   by the caching proxy and by injection into containers, the caching
//!   proxy and the forward proxy;
//! - [`docker`]: the Docker API proxy: forwarding, streaming, hijacked
//!   connections, Docker-shaped errors, the access log, and how its
//!   listeners are served ([`docker::listener`]);
//! - [`config`]: the YAML configuration, raw and validated;
//! - [`server`]: binds listeners, starts both proxies, and shuts down in
//!   order;
//! - [`telemetry`]: logging setup.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod docker;
pub mod http;
pub mod inject;
pub mod listen;
pub mod mitm;
pub mod policy;
pub mod server;
pub mod telemetry;
pub mod tenancy;
pub mod units;
pub mod wire;
