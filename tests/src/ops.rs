//! Operator tools from the tests: runs `bgfctl` (ops/, built once per test
//! process like `bgf-callgen`) against a cluster file, and checks
//! Prometheus text exposition ([`parse_metrics`]) the way a scraper reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `bgfctl` binary (`$BGFCTL_BIN`, else built at most once per test process).
pub fn bgfctl_binary() -> PathBuf {
    crate::build::workspace_binary("ops", "bgfctl", "BGFCTL_BIN")
        .unwrap_or_else(|e| panic!("bgfctl: {e}"))
}

/// How a `bgfctl` run ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (panics with the output otherwise).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bgfctl --json output is not JSON ({e}): {self:?}"))
    }
}

/// Run `bgfctl --cluster <cluster> args...` through `cmd` (e.g. a
/// namespace's `ip netns exec`), bounded by the tool's own timeouts.
pub fn bgfctl_in(mut cmd: Command, cluster: &Path, args: &[&str]) -> Run {
    let out = cmd
        .arg("--cluster")
        .arg(cluster)
        .args(args)
        .env_remove("BGF_CLUSTER")
        .env_remove("BGF_TOKEN_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run bgfctl: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `bgfctl --cluster <cluster> args...` here.
pub fn bgfctl(cluster: &Path, args: &[&str]) -> Run {
    bgfctl_in(Command::new(bgfctl_binary()), cluster, args)
}

/// One sample: labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed family.
#[derive(Clone, Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: String,
    /// By sample name (`name`, or `name_bucket` / `_sum` / `_count`).
    pub samples: BTreeMap<String, Vec<Sample>>,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(format!("label without '=': {s}"))?;
        let name = rest[..eq].trim_start_matches(',').to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?} in {s}"));
        }
        let after = &rest[eq + 1..];
        let mut chars = after.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label value not quoted in {s}"));
        }
        let mut val = String::new();
        let mut end = None;
        let mut esc = false;
        for (i, c) in chars {
            if esc {
                val.push(match c {
                    'n' => '\n',
                    c => c,
                });
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                val.push(c);
            }
        }
        let end = end.ok_or(format!("unterminated label value in {s}"))?;
        out.insert(name, val);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(out)
}

/// Parse the text exposition format strictly enough to catch what a
/// Prometheus server would refuse: every sample belongs to a family
/// declared by `# TYPE` before it, a family's lines are contiguous, names
/// and labels are well formed, values are numbers, histograms have
/// `_bucket` (with `le`, ending at `+Inf`), `_sum` and `_count`.
pub fn parse_metrics(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut closed: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            if current.as_deref() != Some(name.as_str()) {
                if closed.contains(&name) {
                    return Err(format!("family {name} split: {line}"));
                }
                if let Some(c) = current.take() {
                    closed.push(c);
                }
                current = Some(name.clone());
            }
            let f = fams.entry(name).or_default();
            match kw {
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"]
                        .contains(&tail.as_str())
                    {
                        return Err(format!("bad type: {line}"));
                    }
                    f.kind = tail;
                }
                "HELP" => f.help = tail,
                _ => {}
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .ok_or(format!("sample without value: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|e| format!("bad value in {line}: {e}"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(l.strip_suffix('}').ok_or(format!("no '}}' in {line}"))?)?,
            ),
            None => (name_labels, BTreeMap::new()),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("bad metric name in {line}"));
        }
        let fam = current
            .clone()
            .filter(|c| {
                name == c
                    || [
                        c.clone() + "_bucket",
                        c.clone() + "_sum",
                        c.clone() + "_count",
                    ]
                    .contains(&name.to_string())
            })
            .ok_or(format!(
                "sample outside its family (no # TYPE before it): {line}"
            ))?;
        fams.entry(fam)
            .or_default()
            .samples
            .entry(name.to_string())
            .or_default()
            .push(Sample { labels, value });
    }
    for (name, f) in &fams {
        if f.kind.is_empty() {
            return Err(format!("family {name} has no # TYPE"));
        }
        if f.kind == "histogram" {
            let b = f
                .samples
                .get(&format!("{name}_bucket"))
                .ok_or(format!("histogram {name} without buckets"))?;
            if b.last()
                .and_then(|s| s.labels.get("le"))
                .map(String::as_str)
                != Some("+Inf")
            {
                return Err(format!("histogram {name}: last bucket is not +Inf"));
            }
            if !f.samples.contains_key(&format!("{name}_sum"))
                || !f.samples.contains_key(&format!("{name}_count"))
            {
                return Err(format!("histogram {name} without _sum/_count"));
            }
        }
    }
    Ok(fams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                  # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
        let f = parse_metrics(ok).unwrap();
        assert_eq!(f["a_total"].samples["a_total"][0].labels["y"], "q\"");
        assert_eq!(f["h"].samples["h_count"][0].value, 2.0);
        assert!(parse_metrics("a 1\n").is_err());
        assert!(parse_metrics("# TYPE a gauge\na x\n").is_err());
        assert!(
            parse_metrics("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na 2\n")
                .is_err()
        );
        assert!(
            parse_metrics("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n")
                .is_err()
        );
    }
}
