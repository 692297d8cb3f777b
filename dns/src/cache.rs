//! A small cache of forwarded answers, keyed by question, bounded in size,
//! on tokio's clock (so tests can pause it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, RecordType};
use tokio::time::Instant;

/// The longest an answer stays cached, whatever its TTL says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// What a cached answer is filed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub(crate) name: LowerName,
    pub(crate) qtype: RecordType,
    pub(crate) class: DNSClass,
}

#[derive(Debug)]
struct Entry {
    stored: Instant,
    expires: Instant,
    message: Arc<Message>,
}

/// Forwarded answers, each kept for the smallest TTL it carries.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    map: Mutex<HashMap<CacheKey, Entry>>,
}

impl Cache {
    /// A live copy of the cached answer to `key`, its TTLs lowered by the
    /// time it has spent here.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Message> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(key)?;
        if now >= entry.expires {
            return None;
        }
        let age = now.duration_since(entry.stored).as_secs() as u32;
        let mut message = (*entry.message).clone();
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(message)
    }

    /// Files `message` under `key` if it is cacheable (NOERROR or NXDOMAIN,
    /// not truncated, with a TTL to go by), keeping at most `capacity`
    /// entries.
    pub(crate) fn insert(&self, key: CacheKey, message: &Message, capacity: usize) {
        if capacity == 0 {
            return;
        }
        let Some(ttl) = cache_ttl(message) else {
            return;
        };
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            while map.len() >= capacity {
                let Some(victim) = map.keys().next().cloned() else {
                    break;
                };
                map.remove(&victim);
            }
        }
        map.insert(
            key,
            Entry {
                stored: now,
                expires: now + ttl,
                message: Arc::new(message.clone()),
            },
        );
    }

    /// How many answers are held (expired ones included until evicted).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// How long `message` may be cached: the smallest answer TTL, or for a
/// negative answer the SOA's (RFC 2308); `None` when it must not be.
fn cache_ttl(message: &Message) -> Option<Duration> {
    if message.metadata.truncation {
        return None;
    }
    let secs = match message.metadata.response_code {
        ResponseCode::NoError if !message.answers.is_empty() => {
            message.answers.iter().map(|r| r.ttl).min()?
        }
        ResponseCode::NoError | ResponseCode::NXDomain => message
            .authorities
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .min()?,
        _ => return None,
    };
    if secs == 0 {
        return None;
    }
    Some(Duration::from_secs(u64::from(secs)).min(MAX_CACHE_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, Record};
    use std::str::FromStr;

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: LowerName::from_str(name).unwrap(),
            qtype: RecordType::A,
            class: DNSClass::IN,
        }
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            Name::from_str("example.test.").unwrap(),
            ttl,
            RData::A(A::new(127, 0, 0, 9)),
        ));
        m
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_the_smallest_ttl_and_counts_down() {
        let cache = Cache::default();
        cache.insert(key("example.test."), &answer(10), 8);
        tokio::time::advance(Duration::from_secs(4)).await;
        let hit = cache.get(&key("example.test.")).unwrap();
        assert_eq!(hit.answers[0].ttl, 6);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cache.get(&key("example.test.")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_within_capacity() {
        let cache = Cache::default();
        for i in 0..20 {
            cache.insert(key(&format!("n{i}.test.")), &answer(60), 5);
        }
        assert_eq!(cache.len(), 5);
        cache.insert(key("zero.test."), &answer(60), 0);
        assert!(cache.get(&key("zero.test.")).is_none());
    }

    #[test]
    fn refuses_what_must_not_be_cached() {
        let mut failed = answer(60);
        failed.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&failed), None);
        let mut truncated = answer(60);
        truncated.metadata.truncation = true;
        assert_eq!(cache_ttl(&truncated), None);
        assert_eq!(cache_ttl(&answer(0)), None);
        assert_eq!(cache_ttl(&answer(99_999)), Some(MAX_CACHE_TTL));
        let mut empty = answer(60);
        empty.answers.clear();
        assert_eq!(cache_ttl(&empty), None, "no SOA to go by");
    }
}
