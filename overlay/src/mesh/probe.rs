//! Which WireGuard backend this node gets.

use rtnetlink::LinkWireguard;

use super::Backend;
use crate::config::WireGuardBackend;
use crate::error::Error;
use crate::kernel::link;
use crate::names::Names;
use crate::netns::{self, NsTarget};

/// True when the kernel can make WireGuard links in `node_ns`: a throwaway
/// link is created and deleted at once (the request also loads the module
/// where it is available but not loaded).
pub fn kernel_has_wireguard(names: &Names, node_ns: &NsTarget) -> Result<bool, Error> {
    let probe = names.wireguard_probe();
    netns::run_in(node_ns, move |h| async move {
        if let Some(old) = link::by_name(&h, &probe).await? {
            link::delete(&h, &old).await?;
        }
        match h
            .link()
            .add(LinkWireguard::new(&probe).build())
            .execute()
            .await
        {
            Ok(()) => {
                if let Some(l) = link::by_name(&h, &probe).await? {
                    link::delete(&h, &l).await?;
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    })
}

/// The backend for `wanted`, with the sentence that reports the choice.
pub fn choose(
    wanted: WireGuardBackend,
    names: &Names,
    node_ns: &NsTarget,
) -> Result<(Backend, String), Error> {
    let dev = names.wireguard();
    let userspace = |why: &str| {
        (
            Backend::Userspace,
            format!(
                "wireguard: {dev} is a userspace device (hosted by `shoal-overlay run`): {why}"
            ),
        )
    };
    Ok(match wanted {
        WireGuardBackend::Userspace => userspace("backend = \"userspace\""),
        WireGuardBackend::Kernel => {
            if !kernel_has_wireguard(names, node_ns)? {
                return Err(Error::Conflict(format!(
                    "[wireguard] backend = \"kernel\", but this kernel cannot create WireGuard links in {node_ns} (no module)"
                )));
            }
            (
                Backend::Kernel,
                format!("wireguard: {dev} is a kernel device (backend = \"kernel\")"),
            )
        }
        WireGuardBackend::Auto => {
            if kernel_has_wireguard(names, node_ns)? {
                (
                    Backend::Kernel,
                    format!("wireguard: {dev} is a kernel device (the module exists)"),
                )
            } else {
                userspace("this kernel has no WireGuard module")
            }
        }
    })
}
