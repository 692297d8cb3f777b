//! The device's configuration as the datapath reads it: one immutable
//! [`Snapshot`] (key, socket, peers, allowed IPs), replaced whole by each
//! UAPI `set`; each peer's WireGuard state ([`Tunn`]) and endpoint are the
//! only parts that change in place.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;

/// Handshakes per second the device answers before it asks for cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// The device's own key pair and the rate limiter bound to its public key.
#[derive(Clone)]
pub struct Identity {
    /// The private key.
    pub secret: StaticSecret,
    /// Its public key.
    pub public: PublicKey,
    /// Checks handshake MACs and sends cookies under load.
    pub limiter: Arc<RateLimiter>,
}

impl Identity {
    /// The identity of `secret`.
    pub fn new(secret: StaticSecret) -> Identity {
        let public = PublicKey::from(&secret);
        Identity {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
        }
    }
}

/// One peer: its WireGuard state machine and where it was last seen.
pub struct Peer {
    /// Its public key.
    pub public: [u8; 32],
    /// The 24-bit index its sessions are addressed by (`receiver_idx >> 8`).
    pub index: u32,
    /// Persistent keepalive interval in seconds, 0 for none.
    pub keepalive: u16,
    /// The preshared key, if any.
    pub psk: Option<[u8; 32]>,
    tunn: Mutex<Tunn>,
    /// 0, or `1 << 48 | ip << 16 | port`: read per packet without a lock.
    endpoint: AtomicU64,
}

impl Peer {
    /// A peer of `identity` with a fresh session state. Without an identity
    /// (no private key yet, as wireguard-go allows) its state holds a
    /// placeholder key: the datapath leaves it alone until the key is set,
    /// which gives it the real one.
    pub fn new(
        identity: Option<&Identity>,
        public: [u8; 32],
        index: u32,
        keepalive: u16,
        psk: Option<[u8; 32]>,
        endpoint: Option<SocketAddrV4>,
    ) -> Peer {
        let (secret, limiter) = match identity {
            Some(id) => (id.secret.clone(), Some(Arc::clone(&id.limiter))),
            None => (StaticSecret::from([0; 32]), None),
        };
        let tunn = Tunn::new(
            secret,
            PublicKey::from(public),
            psk,
            (keepalive > 0).then_some(keepalive),
            index,
            limiter,
        );
        let peer = Peer {
            public,
            index,
            keepalive,
            psk,
            tunn: Mutex::new(tunn),
            endpoint: AtomicU64::new(0),
        };
        if let Some(e) = endpoint {
            peer.set_endpoint(e);
        }
        peer
    }

    /// Its WireGuard state, locked (a panicked holder does not poison it).
    pub fn tunn(&self) -> MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where to send its packets.
    pub fn endpoint(&self) -> Option<SocketAddrV4> {
        let v = self.endpoint.load(Ordering::Relaxed);
        (v != 0).then(|| SocketAddrV4::new(((v >> 16) as u32).into(), v as u16))
    }

    /// Sets where to send its packets (configured, or where an
    /// authenticated packet of it came from).
    pub fn set_endpoint(&self, e: SocketAddrV4) {
        let v = 1 << 48 | u64::from(u32::from(*e.ip())) << 16 | u64::from(e.port());
        self.endpoint.store(v, Ordering::Relaxed);
    }
}

/// Everything the datapath reads, as one value.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// The private key and its rate limiter; without one, nothing is sent
    /// or accepted.
    pub identity: Option<Identity>,
    /// The UDP socket, bound to `listen_port`.
    pub socket: Option<Arc<UdpSocket>>,
    /// The bound port.
    pub listen_port: u16,
    /// `SO_MARK` of the socket, 0 for none.
    pub fwmark: u32,
    /// Peers by public key.
    pub peers: HashMap<[u8; 32], Arc<Peer>>,
    /// Peers by index.
    pub by_index: HashMap<u32, Arc<Peer>>,
    /// Allowed IPs, longest prefix first: cryptokey routing.
    pub allowed: Vec<(IpNet, Arc<Peer>)>,
}

impl Snapshot {
    /// The peer whose allowed IPs hold `addr` most specifically.
    pub fn route(&self, addr: IpAddr) -> Option<&Arc<Peer>> {
        self.allowed
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, p)| p)
    }

    /// True when `addr` routes to `peer`: a packet from `peer` may carry
    /// `addr` as its source.
    pub fn allows(&self, peer: &Arc<Peer>, addr: IpAddr) -> bool {
        self.route(addr).is_some_and(|p| Arc::ptr_eq(p, peer))
    }

    /// The allowed IPs of `peer`.
    pub fn allowed_of<'a>(&'a self, peer: &'a Arc<Peer>) -> impl Iterator<Item = IpNet> + 'a {
        self.allowed
            .iter()
            .filter(move |(_, p)| Arc::ptr_eq(p, peer))
            .map(|(n, _)| *n)
    }

    /// Puts `peer` in place of any peer with its key, keeping its allowed
    /// IPs when it replaces one.
    pub fn insert(&mut self, peer: Arc<Peer>) {
        if let Some(old) = self.peers.insert(peer.public, Arc::clone(&peer)) {
            self.by_index.remove(&old.index);
            for (_, p) in self
                .allowed
                .iter_mut()
                .filter(|(_, p)| Arc::ptr_eq(p, &old))
            {
                *p = Arc::clone(&peer);
            }
        }
        self.by_index.insert(peer.index, peer);
    }

    /// Removes the peer with key `public` and its allowed IPs.
    pub fn remove(&mut self, public: &[u8; 32]) {
        if let Some(old) = self.peers.remove(public) {
            self.by_index.remove(&old.index);
            self.allowed.retain(|(_, p)| !Arc::ptr_eq(p, &old));
        }
    }

    /// Gives `net` to `peer`, taking it from any other peer.
    pub fn allow(&mut self, net: IpNet, peer: &Arc<Peer>) {
        let net = net.trunc();
        self.allowed.retain(|(n, _)| *n != net);
        self.allowed.push((net, Arc::clone(peer)));
        self.allowed
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    }

    /// Drops every allowed IP of `peer`.
    pub fn disallow_all(&mut self, peer: &Arc<Peer>) {
        self.allowed.retain(|(_, p)| !Arc::ptr_eq(p, peer));
    }

    /// A 24-bit peer index no peer has.
    pub fn free_index(&self) -> u32 {
        let mut i = (RandomState::new().hash_one(self.peers.len()) as u32) & 0xff_ffff;
        while i == 0 || self.by_index.contains_key(&i) {
            i = (i + 1) & 0xff_ffff;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &Identity, key: u8, index: u32) -> Arc<Peer> {
        let public = PublicKey::from(&StaticSecret::from([key; 32])).to_bytes();
        Arc::new(Peer::new(Some(id), public, index, 0, None, None))
    }

    #[test]
    fn routes_by_longest_prefix_and_checks_sources() {
        let id = Identity::new(StaticSecret::from([1; 32]));
        let (a, b) = (peer(&id, 2, 7), peer(&id, 3, 8));
        let mut s = Snapshot::default();
        s.insert(Arc::clone(&a));
        s.insert(Arc::clone(&b));
        s.allow("10.0.0.0/8".parse().unwrap(), &a);
        s.allow("10.1.0.9/32".parse().unwrap(), &b);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(Arc::ptr_eq(s.route(ip("10.1.0.9")).unwrap(), &b));
        assert!(Arc::ptr_eq(s.route(ip("10.1.0.8")).unwrap(), &a));
        assert!(s.route(ip("192.168.0.1")).is_none());
        assert!(s.allows(&b, ip("10.1.0.9")) && !s.allows(&a, ip("10.1.0.9")));
        // an allowed IP belongs to one peer: giving it to a takes it from b
        s.allow("10.1.0.9/32".parse().unwrap(), &a);
        assert_eq!(s.allowed_of(&b).count(), 0);
        s.remove(&a.public);
        assert!(s.route(ip("10.1.0.9")).is_none());
        assert!(s.by_index.len() == 1 && s.free_index() != 8);
    }

    #[test]
    fn endpoints_round_trip_through_the_atomic() {
        let id = Identity::new(StaticSecret::from([1; 32]));
        let p = peer(&id, 2, 7);
        assert_eq!(p.endpoint(), None);
        let e: SocketAddrV4 = "198.18.0.2:51820".parse().unwrap();
        p.set_endpoint(e);
        assert_eq!(p.endpoint(), Some(e));
    }
}
