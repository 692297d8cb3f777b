//! The YAML layer: text to a tree of positioned nodes, with the guards
//! untrusted input needs, and typed reads that fail at a line and column.
//!
//! Scalars are loaded as written (saphyr's lazy `Representation`) and
//! typed here on demand, so a label like `version: 1.10` keeps its text.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Display;

use saphyr::{MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::{Event, Parser, ScanError, SpannedEventReceiver};

use super::ComposeError;

/// A node with its span.
pub(super) type Node<'a> = MarkedYaml<'a>;

/// Larger files are refused (a compose file is a few KiB).
const MAX_BYTES: usize = 1 << 20;
/// Deeper nesting is refused (compose needs about 6 levels); the tree is
/// dropped and cloned recursively, so depth must stay small.
const MAX_DEPTH: usize = 64;
/// Nodes that aliases may copy in all.
const ALIAS_BUDGET: usize = 10_000;

/// Warnings gathered while reading.
#[derive(Debug, Default)]
pub(super) struct Cx {
    /// One line each: `path: what`.
    pub warnings: Vec<String>,
}

impl Cx {
    /// Records a warning about `path`.
    pub fn warn(&mut self, path: &str, what: impl Display) {
        self.warnings.push(format!("{path}: {what}"));
    }

    /// Records that `path` is not used.
    pub fn unsupported(&mut self, path: &str) {
        self.warn(path, "not supported by netd; ignored");
    }
}

/// An error at `node`.
pub(super) fn fail(node: &Node, path: &str, message: impl Into<String>) -> ComposeError {
    ComposeError {
        file: String::new(),
        line: Some(node.span.start.line()),
        column: Some(node.span.start.col() + 1),
        path: path.to_string(),
        message: message.into(),
    }
}

fn syntax(e: &ScanError) -> ComposeError {
    ComposeError {
        file: String::new(),
        line: Some(e.marker().line()),
        column: Some(e.marker().col() + 1),
        path: String::new(),
        message: e.info().to_string(),
    }
}

/// A user value for a message: control characters escaped, long values cut.
pub(super) fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(64) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(64).is_some() {
        out.push_str("...");
    }
    out
}

/// `path.key`, or `path["key"]` when the key is not a plain word.
pub(super) fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[\"{}\"]", shown(key)),
    }
}

/// `path[i]`.
pub(super) fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Forwards events to saphyr's loader, refusing a second document and
/// nesting past [`MAX_DEPTH`] before the loader sees them.
struct Guard<'a> {
    loader: YamlLoader<'a, Node<'a>>,
    depth: usize,
    documents: usize,
    error: Option<ScanError>,
}

impl<'a> SpannedEventReceiver<'a> for Guard<'a> {
    fn on_event(&mut self, ev: Event<'a>, span: saphyr_parser::Span) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    let why = format!("nested more than {MAX_DEPTH} levels deep");
                    self.error = Some(ScanError::new(span.start, why));
                    return;
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    let why = "a second YAML document: a compose file holds one";
                    self.error = Some(ScanError::new_str(span.start, why));
                    return;
                }
            }
            _ => {}
        }
        self.loader.on_event(ev, span);
    }
}

/// Parses the text into its one document (a mapping, checked by the
/// caller).
pub(super) fn load(text: &str) -> Result<Node<'_>, ComposeError> {
    let whole = |message: String| ComposeError {
        file: String::new(),
        line: None,
        column: None,
        path: String::new(),
        message,
    };
    if text.len() > MAX_BYTES {
        return Err(whole(format!(
            "the file is larger than {} KiB",
            MAX_BYTES / 1024
        )));
    }
    let mut loader = YamlLoader::default();
    loader.early_parse(false);
    loader.alias_limit(ALIAS_BUDGET);
    let mut guard = Guard {
        loader,
        depth: 0,
        documents: 0,
        error: None,
    };
    for event in Parser::new_from_str(text) {
        let (ev, span) = event.map_err(|e| syntax(&e))?;
        guard.on_event(ev, span);
        if let Some(e) = &guard.error {
            return Err(syntax(e));
        }
    }
    if let Some(e) = guard.loader.error() {
        return Err(syntax(e));
    }
    match guard.loader.into_documents().into_iter().next() {
        Some(root) if !is_null(&root) => Ok(root),
        _ => Err(whole(
            "the file is empty: expected a mapping with `services`".into(),
        )),
    }
}

/// What a node is, for messages.
fn kind(node: &Node) -> &'static str {
    match &node.data {
        YamlData::Mapping(_) => "a mapping",
        YamlData::Sequence(_) => "a list",
        YamlData::Tagged(..) => "a tagged node",
        _ if is_null(node) => "null",
        _ => "a scalar",
    }
}

fn expected(node: &Node, path: &str, what: &str) -> ComposeError {
    if let YamlData::Tagged(tag, _) = &node.data {
        return fail(
            node,
            path,
            format!("YAML tag `!{}` is not supported", shown(&tag.suffix)),
        );
    }
    fail(node, path, format!("expected {what}, found {}", kind(node)))
}

/// Whether the node is null (`~`, `null`, empty, or nothing at all).
pub(super) fn is_null(node: &Node) -> bool {
    match &node.data {
        YamlData::Representation(s, ScalarStyle::Plain, tag) => {
            tag.is_none() && matches!(s.as_ref(), "" | "~" | "null" | "Null" | "NULL")
        }
        YamlData::Value(Scalar::Null) | YamlData::BadValue => true,
        _ => false,
    }
}

/// The text of a scalar; `None` for null.
pub(super) fn scalar<'n>(node: &'n Node, path: &str) -> Result<Option<Cow<'n, str>>, ComposeError> {
    if is_null(node) {
        return Ok(None);
    }
    match &node.data {
        YamlData::Representation(_, _, Some(tag)) if !tag.is_yaml_core_schema() => Err(fail(
            node,
            path,
            format!("YAML tag `!{}` is not supported", shown(&tag.suffix)),
        )),
        YamlData::Representation(s, _, _) => Ok(Some(Cow::Borrowed(s.as_ref()))),
        YamlData::Value(Scalar::String(s)) => Ok(Some(Cow::Borrowed(s.as_ref()))),
        YamlData::Value(Scalar::Boolean(b)) => Ok(Some(Cow::Owned(b.to_string()))),
        YamlData::Value(Scalar::Integer(i)) => Ok(Some(Cow::Owned(i.to_string()))),
        YamlData::Value(Scalar::FloatingPoint(f)) => Ok(Some(Cow::Owned(f.to_string()))),
        _ => Err(expected(node, path, "a scalar")),
    }
}

/// The text of a non-null scalar (numbers and booleans as written).
pub(super) fn string(node: &Node, path: &str) -> Result<String, ComposeError> {
    match scalar(node, path)? {
        Some(s) => Ok(s.into_owned()),
        None => Err(expected(node, path, "a string")),
    }
}

/// A boolean (`true`, `false`, in any of YAML's three casings).
pub(super) fn boolean(node: &Node, path: &str) -> Result<bool, ComposeError> {
    match scalar(node, path)?.as_deref() {
        Some("true" | "True" | "TRUE") => Ok(true),
        Some("false" | "False" | "FALSE") => Ok(false),
        _ => Err(expected(node, path, "true or false")),
    }
}

/// A whole number in `range` (written bare or quoted).
pub(super) fn number<T>(
    node: &Node,
    path: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ComposeError>
where
    T: std::str::FromStr + PartialOrd + Display + Copy,
{
    let bad = || {
        let (lo, hi) = (range.start(), range.end());
        expected(node, path, &format!("a whole number from {lo} to {hi}"))
    };
    let text = scalar(node, path)?.ok_or_else(bad)?;
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// The items of a list; null is an empty list.
pub(super) fn sequence<'n, 'a>(
    node: &'n Node<'a>,
    path: &str,
) -> Result<&'n [Node<'a>], ComposeError> {
    match &node.data {
        YamlData::Sequence(items) => Ok(items),
        _ if is_null(node) => Ok(&[]),
        _ => Err(expected(node, path, "a list")),
    }
}

/// One entry of a mapping.
pub(super) struct Entry<'n, 'a> {
    /// The key's text.
    pub key: String,
    /// The key node (where errors about the key point).
    pub key_node: &'n Node<'a>,
    /// The value.
    pub value: &'n Node<'a>,
}

/// The entries of a mapping, in file order, with `<<` merge keys applied
/// (keys written in the mapping win, then earlier merged mappings); null
/// is an empty mapping.
pub(super) fn mapping<'n, 'a>(
    node: &'n Node<'a>,
    path: &str,
) -> Result<Vec<Entry<'n, 'a>>, ComposeError> {
    let map = match &node.data {
        YamlData::Mapping(map) => map,
        _ if is_null(node) => return Ok(Vec::new()),
        _ => return Err(expected(node, path, "a mapping")),
    };
    let mut out = Vec::with_capacity(map.len());
    let mut seen = HashSet::new();
    let mut merges = Vec::new();
    for (k, value) in map {
        if matches!(&k.data, YamlData::Representation(s, ScalarStyle::Plain, None) if s == "<<") {
            merges.push(value);
            continue;
        }
        let key = match &k.data {
            YamlData::Mapping(_) | YamlData::Sequence(_) => {
                return Err(fail(k, path, "a key must be a string, not a collection"))
            }
            _ => scalar(k, path)?.map(Cow::into_owned).unwrap_or_default(),
        };
        if !seen.insert(key.clone()) {
            return Err(fail(k, &key_path(path, &key), "duplicate key"));
        }
        out.push(Entry {
            key,
            key_node: k,
            value,
        });
    }
    for merge in merges {
        let sources = match &merge.data {
            YamlData::Sequence(items) => items.iter().collect(),
            _ => vec![merge],
        };
        for source in sources {
            for e in mapping(source, &key_path(path, "<<"))? {
                if seen.insert(e.key.clone()) {
                    out.push(e);
                }
            }
        }
    }
    Ok(out)
}
