//! Hijacked connections: attach, exec start and any other `101 Switching
//! Protocols` answer (BuildKit's `/session` and `/grpc` included).
//!
//! After the switch both connections carry raw bytes. Each direction is copied
//! until its reader ends, then the other side's write half is shut down: a
//! client that closes stdin (`echo hi | docker run -i ... cat`) makes the
//! container see EOF while its output still flows back.
//!
//! BuildKit's `/grpc` is not spliced: [`grpc`] hands both sides to
//! [`crate::buildkit::relay`], which speaks HTTP/2 on each and judges every
//! call.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::access_log::RequestRecord;

/// Buffer per direction. Large enough that piping 100 MB through `exec -i`
/// costs few syscalls; allocated only while a stream is open.
const COPY_BUF: usize = 128 * 1024;

/// Waits for both upgrades and copies bytes both ways until each side closes.
pub async fn splice(client: OnUpgrade, daemon: OnUpgrade, record: Arc<RequestRecord>) {
    let (client, daemon) = match tokio::try_join!(client, daemon) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(path = %record.path, error = %err, "upgrade did not complete");
            return;
        }
    };
    record.set_upgraded();
    let mut client = TokioIo::new(client);
    let mut daemon = TokioIo::new(daemon);
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut daemon, COPY_BUF, COPY_BUF)
        .await
    {
        Ok((to_daemon, to_client)) => {
            record.add_in(to_daemon);
            record.add_out(to_client);
            record.set_complete();
        }
        Err(err) => {
            tracing::debug!(path = %record.path, error = %err, "hijacked stream ended with an error");
        }
    }
}

/// Waits for both upgrades of a `POST /grpc` and relays its HTTP/2 calls
/// under the listener's policy until the client's connection ends.
pub async fn grpc(
    client: OnUpgrade,
    daemon: OnUpgrade,
    record: Arc<RequestRecord>,
    grpc: Arc<crate::buildkit::Grpc>,
) {
    let (client, daemon) = match tokio::try_join!(client, daemon) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(path = %record.path, error = %err, "upgrade did not complete");
            return;
        }
    };
    record.set_upgraded();
    match crate::buildkit::relay(client, daemon, grpc).await {
        Ok(()) => record.set_complete(),
        Err(err) => {
            tracing::debug!(path = %record.path, error = %err, "BuildKit gRPC connection ended with an error");
        }
    }
}
