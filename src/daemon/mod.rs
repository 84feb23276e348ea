//! The daemon: cistern's side of the real Docker daemon, below every room
//! that talks to it.
//!
//! - [`upstream`]: the pooled connection (unix socket or TCP) requests are
//!   forwarded on, and one-shot calls with capped answers;
//! - [`client`]: the typed client for cistern's own calls (ownership,
//!   injection, jobs, cleanup);
//! - [`error`]: errors in Docker's JSON shape, knowing which side failed.

pub mod client;
pub mod error;
pub mod upstream;
