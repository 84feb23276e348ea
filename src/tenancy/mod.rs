//! Tenancy: who owns what, and the sockets cistern makes for containers.
//!
//! - [`ownership`]: identities, labels on what a tenant creates, resolution
//!   of the names and IDs a request carries to the tenant's own, filters,
//!   name namespaces, image state, cleanup.
//! - [`jobs`]: per-job sockets (a tenant of their own, removed with the job)
//!   and container sockets (a container's own socket, fixed to its creator).
//! - [`sessions`]: BuildKit session and build IDs, bound to the tenant that
//!   opened them, in memory.

pub mod jobs;
pub mod ownership;
pub mod sessions;
