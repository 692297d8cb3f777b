//! Labels in either compose form (`["k=v"]` or `{k: v}`), and the `shoal.*`
//! labels that choose balancing.

use std::collections::{BTreeMap, HashSet};

use crate::model::choices::UnknownPolicy;
use crate::model::Policy;
use crate::model::Probe;

use super::yaml::{self, fail, index_path, key_path, shown, Cx, Node};
use super::ComposeError;
use crate::model::{ClientAddress, PortMode};

/// One label, with the node errors about its value point at.
pub(super) struct Label<'n, 'a> {
    pub key: String,
    pub value: String,
    pub node: &'n Node<'a>,
    pub path: String,
}

/// Reads labels: a list of `KEY=VALUE` (a bare `KEY` has an empty value,
/// as in Docker) or a mapping (a null value is empty).
pub(super) fn parse<'n, 'a>(
    node: &'n Node<'a>,
    path: &str,
) -> Result<Vec<Label<'n, 'a>>, ComposeError> {
    let mut out = Vec::new();
    if let saphyr::YamlData::Sequence(items) = &node.data {
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let at = index_path(path, i);
            let text = yaml::string(item, &at)?;
            let (key, value) = match text.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (text, String::new()),
            };
            if key.is_empty() {
                return Err(fail(item, &at, "a label needs a key (KEY=VALUE)"));
            }
            if !seen.insert(key.clone()) {
                return Err(fail(
                    item,
                    &at,
                    format!("label `{}` is given twice", shown(&key)),
                ));
            }
            out.push(Label {
                key,
                value,
                node: item,
                path: at,
            });
        }
        return Ok(out);
    }
    for e in yaml::mapping(node, path)? {
        let at = key_path(path, &e.key);
        if e.key.is_empty() {
            return Err(fail(e.key_node, &at, "a label needs a key"));
        }
        let value = yaml::scalar(e.value, &at)?
            .map(|v| v.into_owned())
            .unwrap_or_default();
        out.push(Label {
            key: e.key,
            value,
            node: e.value,
            path: at,
        });
    }
    Ok(out)
}

/// Collects labels into a map.
pub(super) fn to_map(labels: Vec<Label>) -> BTreeMap<String, String> {
    labels.into_iter().map(|l| (l.key, l.value)).collect()
}

/// What the `shoal.*` labels of a service chose.
#[derive(Debug, Default)]
pub(super) struct Shoal {
    pub policy: Option<Policy>,
    pub mode: Option<PortMode>,
    pub client_address: Option<ClientAddress>,
    pub health: Option<Probe>,
}

/// Takes the `shoal.*` labels out of `labels` (the others stay), checking
/// their values.
pub(super) fn take_shoal(labels: &mut Vec<Label>, cx: &mut Cx) -> Result<Shoal, ComposeError> {
    let mut shoal = Shoal::default();
    let mut rest = Vec::with_capacity(labels.len());
    for l in labels.drain(..) {
        let bad = |what: String| fail(l.node, &l.path, what);
        match l.key.as_str() {
            "shoal.lb.policy" => {
                let p = l.value.parse::<Policy>();
                shoal.policy =
                    Some(p.map_err(|_| bad(UnknownPolicy(shown(&l.value)).to_string()))?);
            }
            "shoal.lb.mode" => {
                shoal.mode = Some(match l.value.as_str() {
                    "tcp" => PortMode::Tcp,
                    "http" => PortMode::Http,
                    v => {
                        return Err(bad(format!(
                            "shoal.lb.mode `{}`: expected tcp or http",
                            shown(v)
                        )))
                    }
                });
            }
            "shoal.lb.client-address" => {
                shoal.client_address = Some(match l.value.as_str() {
                    "none" => ClientAddress::None,
                    "proxy-v2" => ClientAddress::ProxyV2,
                    "forwarded" => ClientAddress::Forwarded,
                    v => {
                        return Err(bad(format!(
                            "shoal.lb.client-address `{}`: expected none, proxy-v2 or forwarded",
                            shown(v)
                        )))
                    }
                });
            }
            "shoal.health" => {
                let c = l.value.parse::<Probe>();
                shoal.health = Some(c.map_err(|_| {
                    bad(format!(
                        "shoal.health `{}`: expected none, tcp or http:/PATH",
                        shown(&l.value)
                    ))
                })?);
            }
            k if k.starts_with("shoal.") => {
                cx.warn(
                    &l.path,
                    "unknown shoal label (known: shoal.lb.policy, shoal.lb.mode, \
                     shoal.lb.client-address, shoal.health); kept as a plain label",
                );
                rest.push(l);
            }
            _ => rest.push(l),
        }
    }
    *labels = rest;
    Ok(shoal)
}
