//! `services.<name>.healthcheck`: timing from the block, the check itself
//! from the `shoal.health` label, since the block's `test` would run inside
//! a container image netd does not have.

use crate::model::Probe;

use super::words::duration_ms;
use super::yaml::{self, fail, key_path, Cx, Node};
use super::ComposeError;
use crate::model::HealthCheck;

/// Reads the block; `label` is the `shoal.health` label, if given.
pub(super) fn parse(
    node: &Node,
    path: &str,
    label: Option<Probe>,
    cx: &mut Cx,
) -> Result<HealthCheck, ComposeError> {
    let mut h = HealthCheck {
        check: label.unwrap_or(Probe::Tcp),
        ..HealthCheck::default()
    };
    let mut disabled = false;
    let mut test = None;
    for f in yaml::mapping(node, path)? {
        let at = key_path(path, &f.key);
        match f.key.as_str() {
            "test" => test = Some((command(f.value, &at)?, at)),
            "interval" => h.interval_ms = duration(f.value, &at)?,
            "timeout" => h.timeout_ms = duration(f.value, &at)?,
            "retries" => h.fall = yaml::number(f.value, &at, 1..=u32::MAX)?,
            "disable" => disabled = yaml::boolean(f.value, &at)?,
            k if k.starts_with("x-") => {}
            _ => cx.unsupported(&at),
        }
    }
    match test {
        Some((Test::Disable, _)) => disabled = true,
        Some((Test::Run, at)) if !disabled => cx.warn(
            &at,
            format!(
                "cannot run inside a container here; netd checks replicas with `{}` \
                 (set the shoal.health label to tcp, http:/PATH or none)",
                h.check
            ),
        ),
        _ => {}
    }
    if disabled {
        h.check = Probe::None;
    }
    Ok(h)
}

/// What a `test` asks for.
enum Test {
    /// Nothing (`[]`, `""`).
    Nothing,
    /// `["NONE"]`: no check.
    Disable,
    /// A command (`["CMD", ...]`, `["CMD-SHELL", ...]`, a string).
    Run,
}

fn command(node: &Node, path: &str) -> Result<Test, ComposeError> {
    if let saphyr::YamlData::Sequence(items) = &node.data {
        let Some(first) = items.first() else {
            return Ok(Test::Nothing);
        };
        let at = yaml::index_path(path, 0);
        return match yaml::string(first, &at)?.as_str() {
            "NONE" => Ok(Test::Disable),
            "CMD" | "CMD-SHELL" => Ok(Test::Run),
            other => Err(fail(
                first,
                &at,
                format!(
                    "expected NONE, CMD or CMD-SHELL, found `{}`",
                    yaml::shown(other)
                ),
            )),
        };
    }
    match yaml::scalar(node, path)? {
        Some(s) if !s.trim().is_empty() => Ok(Test::Run),
        _ => Ok(Test::Nothing),
    }
}

fn duration(node: &Node, path: &str) -> Result<u64, ComposeError> {
    let text = yaml::string(node, path)?;
    duration_ms(&text).map_err(|why| fail(node, path, why))
}
