//! BuildKit's `/grpc` endpoint under policy: the gRPC calls a BuildKit client
//! (buildx's `docker` driver) makes to the daemon's embedded BuildKit over the
//! hijacked `POST /grpc` (`Upgrade: h2c`) connection.
//!
//! Instead of splicing the upgraded connections, cistern speaks HTTP/2 on
//! both ([`relay`]) and judges each call of `moby.buildkit.v1.Control`
//! before the daemon sees it ([`policy`]): a `Solve`'s entitlements,
//! frontend attributes, LLB ops and exporter image names; whose sessions
//! ([`crate::tenancy::sessions`]) and builds ([`registry`]) the calls name.
//! Messages are read with hand-written prost structs of only the fields
//! judged ([`proto`], pinned to the BuildKit dockerd 20.10.24 vendors),
//! framed as gRPC frames them ([`frame`]); the client's bytes are
//! forwarded, never re-encoded.
//!
//! Not here: the `/session` hijack and `POST /build?version=2` (the docker
//! CLI's own BuildKit path), which are the Docker API's.

pub mod frame;
pub mod policy;
pub mod proto;
pub mod registry;
pub mod relay;

pub use policy::Allow;
pub use registry::Registry;
pub use relay::{relay, Grpc, OnRefusal};
