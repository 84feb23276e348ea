//! The Docker wire layer: requests as dockerd reads them, with no I/O and no
//! decisions.
//!
//! - [`route`]: method and path to the endpoint dockerd's router would
//!   dispatch to, with the IDs and names the path carries.
//! - [`query`]: query strings, percent-decoding and escaping as Go's `url`
//!   package does.
//! - [`json`]: Go-compatible JSON (case-insensitive keys, duplicate and
//!   ambiguous keys refused) into one [`Json`] value, canonicalised against
//!   [`schema`], the bodies of the endpoints cistern reads.
//! - [`body`]: a body read whole, as the one value every stage edits and
//!   the driver serialises once.
//! - [`mounts`]: `Binds` specs and host paths.
//! - [`refusal`]: what a client is told when its request cannot be read (and,
//!   for the policy above this layer, when it may not go on).
//!
//! Policy, ownership, injection and jobs read and edit requests through this
//! layer; nothing here knows about them.

pub mod body;
pub mod json;
pub mod mounts;
pub mod query;
pub mod refusal;
pub mod route;
pub mod schema;

pub use body::Body;
pub use json::Json;
pub use refusal::{Refusal, RefusalKind, UnknownFields};
