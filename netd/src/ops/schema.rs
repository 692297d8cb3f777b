//! The store's schema version (`schema`, see [`crate::model::SCHEMA`]):
//! marked by the first agent, checked by every agent at start.

use crate::model::{keys, SCHEMA};
use crate::store::Store;

use super::{get_raw, OpError};

/// Marks an unmarked store with this netd's schema; fails, naming both
/// versions, when the store's is newer than this netd knows.
pub async fn ensure(store: &dyn Store) -> Result<u32, OpError> {
    loop {
        match get_raw(store, keys::SCHEMA).await? {
            None => {
                let mark = SCHEMA.to_string().into_bytes();
                if store.put_if(keys::SCHEMA, 0, mark, 0).await? {
                    return Ok(SCHEMA);
                }
            }
            Some(e) => {
                let text = String::from_utf8_lossy(&e.value);
                let found: u32 = text.trim().parse().map_err(|_| {
                    OpError::Internal(format!("the store's schema mark `{text}` is not a number"))
                })?;
                if found > SCHEMA {
                    return Err(OpError::Internal(format!(
                        "the cluster store holds schema {found}, written by a newer netd; this netd reads schema {SCHEMA}: upgrade it"
                    )));
                }
                return Ok(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn a_store_is_marked_once_and_a_newer_one_refused() {
        let s = EmbeddedStore::ephemeral();
        assert_eq!(ensure(s.as_ref()).await.unwrap(), SCHEMA);
        let rev = s.range(keys::SCHEMA).await.unwrap().0[0].mod_revision;
        assert_eq!(ensure(s.as_ref()).await.unwrap(), SCHEMA);
        assert_eq!(s.range(keys::SCHEMA).await.unwrap().0[0].mod_revision, rev);
        s.put(keys::SCHEMA, b"2".to_vec(), 0).await.unwrap();
        let e = ensure(s.as_ref()).await.unwrap_err().to_string();
        assert!(e.contains("schema 2") && e.contains("newer netd"), "{e}");
    }
}
