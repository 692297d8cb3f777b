//! The old agent's end of a handover (see [`crate::handover`]), once its
//! control plane has stopped: the data plane's and the API's listening
//! sockets sent to the successor, the data plane serving until it has
//! taken over (or serving on for another successor if it goes away
//! first), then the proxied connections drained.

use std::os::fd::OwnedFd;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;

use crate::handover::{Key, Listening, Successor};
use crate::node::DataPlane;
use crate::store::embedded::EmbeddedStore;

/// What the old agent still holds once its control plane stopped.
pub(super) struct HandOver {
    pub(super) successor: Successor,
    pub(super) listening: Listening,
    pub(super) data_plane: DataPlane,
    /// Duplicates of the API's listening sockets.
    pub(super) api: Vec<(Key, OwnedFd)>,
    pub(super) memory: Option<Weak<EmbeddedStore>>,
}

impl HandOver {
    /// Sends the sockets, serves until the successor has taken over (or
    /// serves on and waits for another if it goes away first), then
    /// drains. Returns the exit code.
    pub(super) async fn finish(self, mut stop: watch::Receiver<bool>, drain: Duration) -> i32 {
        let HandOver {
            mut successor,
            mut listening,
            data_plane,
            api,
            memory,
        } = self;
        if let Some(store) = memory.and_then(|w| w.upgrade()) {
            // Nothing changes it any more; make sure the file is final.
            tracing::warn!("the embedded store outlived the control plane; saving it now");
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "could not save the store");
            }
        }
        loop {
            let pid = successor.pid();
            let mut sockets = data_plane.listening_sockets();
            for (key, fd) in &api {
                match fd.try_clone() {
                    Ok(fd) => sockets.push((key.clone(), fd)),
                    Err(e) => tracing::warn!(socket = %key, error = %e, "cannot duplicate"),
                }
            }
            let handed = async {
                successor.hand_over(&sockets).await?;
                tracing::info!(
                    pid,
                    sockets = sockets.len(),
                    "sockets sent; serving until the new agent has taken over"
                );
                successor.taken().await
            };
            let outcome = tokio::select! {
                r = handed => r,
                _ = stop.wait_for(|s| *s) => return 0,
            };
            drop(sockets);
            match outcome {
                Ok(true) => {
                    tracing::info!(pid, ?drain, "the new agent has taken over; draining");
                    break;
                }
                Ok(false) => tracing::warn!(
                    pid,
                    "the new agent went away before taking over; still serving"
                ),
                Err(e) => tracing::warn!(pid, error = %e, "the handover failed; still serving"),
            }
            let next = tokio::select! {
                s = listening.next() => s,
                _ = stop.wait_for(|s| *s) => return 0,
            };
            let Some(next) = next else {
                tracing::error!("the handover socket stopped; serving until stopped");
                let _ = stop.wait_for(|s| *s).await;
                return 0;
            };
            successor = next;
        }
        // Later agents find the new one; this one's copies close.
        drop((listening, api));
        let drained = tokio::select! {
            d = data_plane.stop(drain) => d,
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("stopped while draining; closing open connections");
                return 0;
            }
        };
        if drained {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!(?drain, "drain timeout; closing the connections still open");
        }
        0
    }
}
