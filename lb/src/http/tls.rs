//! TLS for HTTP listeners: a certificate chain and key from PEM files,
//! TLS 1.2 and 1.3, ALPN offering `h2` then `http/1.1`. Built on rustls
//! through pingora's acceptor; files are read and checked when the config
//! is loaded, so a bad file is a config error, never a panic at accept time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora_core::listeners::tls::Acceptor;
use pingora_rustls::{load_certs_and_key_files, version, ServerConfig};

/// A certificate or key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files was given.
    #[error("tls_cert and tls_key go together: give both or neither")]
    Half,
    /// The files could not be read or hold no usable certificate or key.
    #[error("cannot load certificate `{cert}` and key `{key}`: {why}")]
    Load {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// Builds the acceptor for `cert` and `key` (PEM), or says why not.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, TlsError> {
    let fail = |why: String| TlsError::Load {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why,
    };
    let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
    let (certs, key_der) = match load_certs_and_key_files(&c, &k) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return Err(fail(
                "no certificate or no private key found in the files".into(),
            ))
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    pingora_rustls::install_default_crypto_provider();
    let mut config =
        ServerConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Acceptor::from_server_config(Arc::new(config)))
}

/// The acceptor a pair of optional paths asks for.
pub fn from_paths(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Acceptor>, TlsError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => acceptor(c, k).map(Some),
        _ => Err(TlsError::Half),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_errors_naming_the_files() {
        let e = from_paths(
            Some(Path::new("/nonexistent/c.pem")),
            Some(Path::new("/nonexistent/k.pem")),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
        assert_eq!(
            from_paths(Some(Path::new("/a")), None).err(),
            Some(TlsError::Half)
        );
        assert!(from_paths(None, None).unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("shoal-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a pem").unwrap();
        assert!(acceptor(&junk, &junk).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
