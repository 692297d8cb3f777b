//! Kernel requests, one file per object kind, each a thin function over an
//! rtnetlink handle (handle -> request -> `execute()`). Item docs name the
//! `ip`/`bridge` command each request equals. Functions run on an
//! [`NsWorker`](crate::netns::NsWorker) and act in its namespace.

pub mod addr;
pub mod bridge;
pub mod fdb;
pub mod guard;
pub mod link;
pub mod neigh;
pub mod route;
pub mod veth;
pub mod vxlan;

use futures_util::TryStreamExt;

/// Collects a netlink dump into a vector.
pub(crate) async fn collect<T, S>(stream: S) -> Result<Vec<T>, rtnetlink::Error>
where
    S: futures_util::Stream<Item = Result<T, rtnetlink::Error>>,
{
    stream.try_collect().await
}
