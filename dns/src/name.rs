//! Names as lookup keys: checking configured names, and turning a query's
//! name into the lowercase dotted bytes the snapshot's tables are keyed by.

use hickory_proto::rr::Name;

/// The longest name on the wire, in presentation form without the root dot.
const MAX_NAME: usize = 253;
/// The longest label.
const MAX_LABEL: usize = 63;

/// Checks a configured name: one or more labels of letters, digits, `-` and
/// `_`, each 1 to 63 bytes, at most 253 bytes in all. With `single_label`,
/// dots are refused too. Returns why the name is refused.
pub(crate) fn check(name: &str, single_label: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_NAME {
        return Err("is longer than 253 bytes");
    }
    if single_label && name.contains('.') {
        return Err("must be a single label (no dots)");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (leading, trailing or double dot)");
        }
        if label.len() > MAX_LABEL {
            return Err("has a label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("may hold only letters, digits, '-', '_' and dots");
        }
    }
    Ok(())
}

/// The table key of a configured (already checked) name: lowercase bytes.
pub(crate) fn key(name: &str) -> Box<[u8]> {
    name.to_ascii_lowercase().into_bytes().into_boxed_slice()
}

/// A query name as lowercase dotted bytes, without the root, on the stack.
///
/// Built from a name off the wire, so it trusts nothing: a label holding a
/// dot (legal on the wire, ambiguous here) or a name too long makes
/// [`QueryKey::new`] return `None`, and the name is not ours.
pub(crate) struct QueryKey {
    buf: [u8; MAX_NAME + 2],
    len: usize,
}

impl QueryKey {
    /// Builds the key of `name`; `None` when it cannot be one of ours.
    pub(crate) fn new(name: &Name) -> Option<Self> {
        let mut buf = [0u8; MAX_NAME + 2];
        let mut len = 0usize;
        for label in name.iter() {
            if label.is_empty() || label.contains(&b'.') {
                return None;
            }
            let sep = usize::from(len > 0);
            let end = len.checked_add(sep)?.checked_add(label.len())?;
            if end > buf.len() {
                return None;
            }
            if sep == 1 {
                buf[len] = b'.';
            }
            let dst = buf.get_mut(len + sep..end)?;
            for (d, s) in dst.iter_mut().zip(label) {
                *d = s.to_ascii_lowercase();
            }
            len = end;
        }
        Some(Self { buf, len })
    }

    /// The key bytes (e.g. `web.front.shoal`); empty for the root.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Splits `name` at a trailing `.suffix`: `web.front` less `front` is
/// `Some(b"web")`; a name equal to `suffix` gives `Some(b"")`.
pub(crate) fn strip_suffix<'a>(name: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    if name == suffix {
        return Some(&[]);
    }
    let rest = name.strip_suffix(suffix)?;
    rest.strip_suffix(b".")
}

/// The last label of a dotted key, and what precedes it.
pub(crate) fn split_last(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn checks_configured_names() {
        assert!(check("web", true).is_ok());
        assert!(check("web.1", false).is_ok());
        assert!(check("_x-y_Z9", true).is_ok());
        assert!(check("web.1", true).is_err());
        assert!(check("", false).is_err());
        assert!(check("a..b", false).is_err());
        assert!(check("a b", false).is_err());
        assert!(check(&"a".repeat(64), false).is_err());
        assert!(check(&["a"; 130].join("."), false).is_err());
    }

    #[test]
    fn query_key_lowercases_and_joins() {
        let name = Name::from_str("Web.1.FRONT.shoal.").unwrap();
        let key = QueryKey::new(&name).unwrap();
        assert_eq!(key.as_bytes(), b"web.1.front.shoal");
        assert_eq!(QueryKey::new(&Name::root()).unwrap().as_bytes(), b"");
    }

    #[test]
    fn query_key_refuses_dots_inside_labels() {
        let name = Name::from_labels(vec![&b"a.b"[..], &b"shoal"[..]]).unwrap();
        assert!(QueryKey::new(&name).is_none());
    }

    #[test]
    fn suffixes() {
        assert_eq!(strip_suffix(b"web.shoal", b"shoal"), Some(&b"web"[..]));
        assert_eq!(strip_suffix(b"shoal", b"shoal"), Some(&b""[..]));
        assert_eq!(strip_suffix(b"webshoal", b"shoal"), None);
        assert_eq!(strip_suffix(b"web", b"shoal"), None);
        assert_eq!(split_last(b"a.b.c"), (&b"a.b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
    }
}
