//! cistern: a Docker API proxy that makes shared CI runners safe and fast.
//!
//! Layout, from the bottom up: each room imports only from rooms listed
//! before it (no import loops, none running back up).
//!
//! - [`units`], [`http`], [`wire`], [`telemetry`]: leaves. Durations and
//!   sizes as written in the configuration; what both proxies share (the
//!   body type, the hop-by-hop header stripper, the error-chain formatter);
//!   the Docker wire layer (routes, queries, Go-compatible JSON, schema,
//!   bind specs, the one body value every stage edits), with no I/O.
//! - [`discover`]: which package repositories a file system's package
//!   managers use (the host's, or an image's read from its layers), with
//!   no I/O beyond reading those files.
//! - [`listen`]: unix and TCP listeners, TLS and its reload, per-client
//!   connection caps, and [`listen::serve`], the one accept loop every
//!   listener runs (TLS handshake, idle timeouts, graceful shutdown).
//! - [`policy`]: what a listener lets a CI job ask of the daemon, one rule
//!   per file, I/O-free.
//! - [`daemon`]: cistern's side of the real daemon: the pooled upstream
//!   connection, the typed client for cistern's own calls, Docker-shaped
//!   errors.
//! - [`mitm`]: transparent caching: the caching proxy, the forward proxy,
//!   the CA store shared with injection, and the `caching:` configuration.
//! - [`inject`]: cache routing and trust put into containers.
//! - [`tenancy`]: ownership (who owns what), per-job and per-container
//!   sockets, and BuildKit sessions bound to their tenant.
//! - [`buildkit`]: BuildKit's `/grpc` calls under policy: gRPC framing, the
//!   few BuildKit messages read, their judgement, and the HTTP/2 relay the
//!   `/grpc` hijack runs.
//! - [`docker`]: the Docker API proxy: the request phases on one exchange,
//!   hijacked connections, the access log, how its listeners are served.
//! - [`admin`]: the admin listener: health, readiness, Prometheus metrics,
//!   the JSON API and the status page, over every room above (nothing
//!   imports it but the server).
//! - [`config`]: the YAML configuration, raw and validated; each room gets
//!   its own section from it.
//! - [`server`]: builds each room from its section, binds listeners, starts
//!   both proxies and the admin listener, and shuts down in order.
//! - [`doctor`]: `cistern doctor`, the checks that a configuration can run
//!   on this host, beside the server (it sees the whole config too).
#![forbid(unsafe_code)]

pub mod admin;
pub mod buildkit;
pub mod config;
pub mod daemon;
pub mod discover;
pub mod docker;
pub mod doctor;
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
