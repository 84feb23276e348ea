//! cistern: a Docker API proxy that makes shared CI runners safe and fast.
//!
//! Layout:
//! - [`config`]: the YAML configuration, raw and validated.
//! - [`listen`]: unix and TCP listeners Docker clients connect to.
//! - [`docker`]: the Docker API proxy: forwarding, streaming, hijacked
//!   connections, Docker-shaped errors, the access log.
//! - [`mitm`]: transparent caching: its configuration, the CA store shared
//!   by the caching proxy and by injection into containers.
//! - [`server`]: binds listeners, serves, and shuts down gracefully.
//! - [`telemetry`]: logging setup.
#![forbid(unsafe_code)]

pub mod config;
pub mod docker;
pub mod inject;
pub mod listen;
pub mod mitm;
pub mod policy;
pub mod server;
pub mod telemetry;
pub mod tenancy;
pub mod wire;
