//! Why an operation was refused, with the HTTP status the API answers and
//! the field of the request at fault. Messages name the offending item
//! ("subnet 10.77.0.0/24 overlaps network `back` (10.77.0.0/16)").

use crate::alloc::{AllocError, VIP_OWNER};
use crate::ipam::IpamError;
use crate::store::StoreError;

/// An operation that failed; nothing it started is left applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The request is wrong in itself (HTTP 400).
    #[error("{message}")]
    Invalid {
        /// The request field at fault (`subnet`, `ports`, ...).
        field: String,
        /// What is wrong, naming the item.
        message: String,
    },
    /// Something the request names does not exist (HTTP 404).
    #[error("{kind} `{name}` does not exist")]
    NotFound {
        /// `network`, `service` or `stack`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The request clashes with the cluster's state (HTTP 409).
    #[error("{message}")]
    Conflict {
        /// The request field at fault.
        field: String,
        /// What it clashes with, naming the other party.
        message: String,
    },
    /// The store could not be reached or failed (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// This node could not do its part (the kernel refused; HTTP 500).
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid { .. } => 400,
            OpError::NotFound { .. } => 404,
            OpError::Conflict { .. } => 409,
            OpError::Unavailable(_) => 503,
            OpError::Internal(_) => 500,
        }
    }

    /// The request field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            OpError::Invalid { field, .. } | OpError::Conflict { field, .. } => Some(field),
            OpError::NotFound { .. } | OpError::Unavailable(_) | OpError::Internal(_) => None,
        }
    }

    /// Prefixes the message with what it is about (`network `front`: `),
    /// for operations on many objects at once (stacks).
    pub fn about(self, what: &str) -> OpError {
        match self {
            OpError::Invalid { field, message } => OpError::Invalid {
                field,
                message: format!("{what}: {message}"),
            },
            OpError::Conflict { field, message } => OpError::Conflict {
                field,
                message: format!("{what}: {message}"),
            },
            other => other,
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> OpError {
        OpError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn conflict(field: &str, message: impl Into<String>) -> OpError {
        OpError::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An allocation error, blamed on `field` where it is about the request.
    pub(crate) fn from_alloc(e: AllocError, field: &str) -> OpError {
        match e {
            AllocError::VniTaken { .. } | AllocError::VniExhausted => {
                OpError::conflict("vni", e.to_string())
            }
            AllocError::VniRange(_) => OpError::invalid("vni", e.to_string()),
            AllocError::Store(s) => s.into(),
            AllocError::Ipam(i) => OpError::from_ipam(i, field),
        }
    }

    /// An address-management error, blamed on `field`.
    pub(crate) fn from_ipam(e: IpamError, field: &str) -> OpError {
        match e {
            IpamError::Store(s) => s.into(),
            IpamError::Unusable { .. } => OpError::invalid(field, e.to_string()),
            IpamError::Taken {
                network,
                addr,
                owner,
            } => {
                let vip_of = owner
                    .strip_prefix(VIP_OWNER)
                    .and_then(|o| o.strip_prefix("/vip:"));
                let message = match vip_of {
                    Some(svc) => format!(
                        "address {addr} in network `{network}` is already the VIP of service `{svc}`"
                    ),
                    None => format!("address {addr} in network `{network}` is taken by {owner}"),
                };
                OpError::conflict(field, message)
            }
            IpamError::Exhausted { .. } => OpError::conflict(field, e.to_string()),
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_fields() {
        let e = OpError::invalid("subnet", "bad");
        assert_eq!((e.status(), e.field()), (400, Some("subnet")));
        let e = OpError::NotFound {
            kind: "network",
            name: "back".into(),
        };
        assert_eq!((e.status(), e.field()), (404, None));
        assert_eq!(e.to_string(), "network `back` does not exist");
        let e = OpError::from(StoreError::Unavailable("etcd down".into()));
        assert_eq!((e.status(), e.field()), (503, None));
        let e = OpError::conflict("ports", "taken").about("service `web`");
        assert_eq!(e.status(), 409);
        assert_eq!(e.to_string(), "service `web`: taken");
    }

    #[test]
    fn vip_owners_are_named_as_services() {
        let e = OpError::from_ipam(
            IpamError::Taken {
                network: "front".into(),
                addr: "10.77.0.200".parse().unwrap(),
                owner: "cluster-vips/vip:api".into(),
            },
            "networks",
        );
        assert_eq!(
            e.to_string(),
            "address 10.77.0.200 in network `front` is already the VIP of service `api`"
        );
    }
}
