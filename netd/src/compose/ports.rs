//! `services.<name>.ports`: the short form (`"8080:8000"`, `"8000"`,
//! `"8080:8000/tcp"`, and netd's `/http`) and the long form
//! (`{target, published, protocol, mode, name, app_protocol}`).

use super::yaml::{self, fail, index_path, key_path, shown, Cx, Node};
use super::ComposeError;
use crate::model::{Port, PortMode};
use crate::spec::parse_port;

/// A port, and whether its mode was written (`/http`, `app_protocol`) or
/// is still open to the `shoal.lb.mode` label.
pub(super) struct Parsed {
    pub port: Port,
    pub mode_written: bool,
}

const UDP: &str = "UDP ports are not supported by netd (it balances TCP and HTTP)";
const HOST_IP: &str = "a host IP is not supported by netd: published ports listen on every node";

/// Reads the list.
pub(super) fn parse(node: &Node, path: &str, cx: &mut Cx) -> Result<Vec<Parsed>, ComposeError> {
    let mut out = Vec::new();
    for (i, item) in yaml::sequence(node, path)?.iter().enumerate() {
        let at = index_path(path, i);
        out.push(match &item.data {
            saphyr::YamlData::Mapping(_) => long(item, &at, cx)?,
            _ => short(item, &at)?,
        });
    }
    Ok(out)
}

fn short(node: &Node, path: &str) -> Result<Parsed, ComposeError> {
    let text = yaml::string(node, path)?;
    let bad = |why: String| fail(node, path, why);
    let (ports, protocol) = match text.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (text.as_str(), None),
    };
    let mode_written = match protocol {
        None | Some("tcp") => false,
        Some("http") => true,
        Some("udp" | "sctp") => return Err(bad(UDP.into())),
        Some(p) => {
            return Err(bad(format!(
                "unknown protocol `{}` (expected tcp)",
                shown(p)
            )))
        }
    };
    if ports.matches(':').count() > 1 {
        return Err(bad(HOST_IP.into()));
    }
    if ports.contains('-') {
        return Err(bad(format!(
            "port ranges are not supported by netd: `{}`",
            shown(&text)
        )));
    }
    let suffix = if mode_written { "/http" } else { "" };
    let port = parse_port(&format!("{ports}{suffix}")).map_err(|e| bad(e.0))?;
    Ok(Parsed { port, mode_written })
}

fn long(node: &Node, path: &str, cx: &mut Cx) -> Result<Parsed, ComposeError> {
    let mut port = Port {
        name: None,
        target: 0,
        published: None,
        mode: PortMode::Tcp,
    };
    let mut mode_written = false;
    for f in yaml::mapping(node, path)? {
        let at = key_path(path, &f.key);
        match f.key.as_str() {
            "target" => port.target = yaml::number(f.value, &at, 1..=65535)?,
            "published" => {
                if !yaml::is_null(f.value) {
                    let text = yaml::string(f.value, &at)?;
                    if text.contains('-') {
                        return Err(fail(f.value, &at, "port ranges are not supported by netd"));
                    }
                    port.published = Some(yaml::number(f.value, &at, 1..=65535)?);
                }
            }
            "protocol" => match yaml::string(f.value, &at)?.as_str() {
                "tcp" => {}
                "udp" | "sctp" => return Err(fail(f.value, &at, UDP)),
                p => {
                    let why = format!("unknown protocol `{}` (expected tcp)", shown(p));
                    return Err(fail(f.value, &at, why));
                }
            },
            "app_protocol" => match yaml::string(f.value, &at)?.as_str() {
                "http" => {
                    port.mode = PortMode::Http;
                    mode_written = true;
                }
                "tcp" => {
                    port.mode = PortMode::Tcp;
                    mode_written = true;
                }
                p => cx.warn(
                    &at,
                    format!("`{}` is not balanced by netd (tcp or http); ignored", shown(p)),
                ),
            },
            "mode" => match yaml::string(f.value, &at)?.as_str() {
                "ingress" => {}
                "host" => cx.warn(
                    &at,
                    "host mode is not supported by netd; the port is published on every node (ingress)",
                ),
                m => {
                    let why = format!("unknown mode `{}` (expected ingress or host)", shown(m));
                    return Err(fail(f.value, &at, why));
                }
            },
            "name" => port.name = Some(yaml::string(f.value, &at)?),
            "host_ip" => return Err(fail(f.value, &at, HOST_IP)),
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    if port.target == 0 {
        return Err(fail(node, path, "a port needs a `target`"));
    }
    Ok(Parsed { port, mode_written })
}
