//! HTTP pieces shared by the Docker side and the caching proxy, with no
//! knowledge of either: the boxed body type every response uses, the
//! hop-by-hop header stripper, and the error-chain formatter.
//!
//! A leaf: nothing here imports another part of cistern.

pub mod body;
pub mod error;
pub mod headers;

pub use body::{BoxError, ProxyBody};
