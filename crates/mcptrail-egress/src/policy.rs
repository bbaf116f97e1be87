//! `[egress]` in `mcptrail.toml`: which destinations a tool server may reach, and the
//! decision for one destination.
//!
//! Entries are domain names (`api.github.com`: that name only), wildcards (`*.github.com`:
//! every name below it, not `github.com` itself), IP addresses and CIDR blocks
//! (`10.0.0.0/8`, matched against the address the name resolved to as well as against an
//! address literal). The deny list wins over the allow list; a destination on neither gets
//! `default`. Names are compared in lowercase without a trailing dot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::EgressError;

/// What happens to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Relayed (and recorded).
    #[default]
    Allow,
    /// Answered `403 Forbidden` (and recorded).
    Deny,
}

impl Decision {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// The `[egress]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Where `mcptrail egress` listens (`wrap --egress` always takes a free loopback port).
    pub listen: String,
    /// The decision for a destination on neither list. `allow` by default: turning egress
    /// recording on does not break a tool server; set `deny` for an allow-list policy.
    pub default: Decision,
    /// Destinations relayed even when `default = "deny"`.
    pub allow: Vec<String>,
    /// Destinations refused (wins over `allow`).
    pub deny: Vec<String>,
    /// Fixed name → address answers used instead of DNS (split-horizon names, tests).
    pub resolve: BTreeMap<String, IpAddr>,
    /// Seconds to wait for a destination to accept the connection.
    pub connect_timeout_secs: u64,
    /// Seconds a client has to send its request head; a relayed connection with no bytes
    /// either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// Most connections relayed at once; more are answered `503`.
    pub max_connections: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            listen: "127.0.0.1:8119".into(),
            default: Decision::Allow,
            allow: Vec::new(),
            deny: Vec::new(),
            resolve: BTreeMap::new(),
            connect_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_connections: 256,
        }
    }
}

/// One allow or deny entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `example.com`.
    Exact(String),
    /// `*.example.com`: the suffix `.example.com`.
    Below(String),
    /// An address or block.
    Net(IpNet),
}

impl Entry {
    fn parse(list: &str, raw: &str) -> Result<Entry, EgressError> {
        let bad = |why: &str| EgressError::Config(format!("egress.{list}: `{raw}` {why}"));
        let s = raw.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Entry::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Entry::Net(IpNet::from(ip)));
        }
        let name = normalize(s);
        let (below, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, name),
        };
        if name.is_empty() {
            return Err(bad("is empty"));
        }
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !valid {
            return Err(bad(
                "is not a domain name, `*.domain`, an IP address or a CIDR block",
            ));
        }
        Ok(if below {
            Entry::Below(format!(".{name}"))
        } else {
            Entry::Exact(name)
        })
    }

    fn matches(&self, host: &str, addr: Option<IpAddr>) -> bool {
        match self {
            Entry::Exact(n) => host == n,
            Entry::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Entry::Net(net) => {
                host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip))
                    || addr.is_some_and(|ip| net.contains(&ip))
            }
        }
    }
}

fn normalize(host: &str) -> String {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    // `[::1]` as written in a URL authority.
    h.strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .map(str::to_string)
        .unwrap_or(h)
}

/// The compiled lists.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    default: Decision,
    allow: Vec<(String, Entry)>,
    deny: Vec<(String, Entry)>,
    resolve: BTreeMap<String, IpAddr>,
}

/// The decision for a destination and the entry that made it (`None`: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub decision: Decision,
    /// The allow or deny entry as configured.
    pub matched: Option<String>,
}

impl EgressPolicy {
    /// Compile `cfg`; an entry that is not a name, wildcard, address or block is an error
    /// naming it.
    pub fn new(cfg: &EgressConfig) -> Result<Self, EgressError> {
        let compile = |list: &str, items: &[String]| {
            items
                .iter()
                .map(|raw| Ok((raw.trim().to_string(), Entry::parse(list, raw)?)))
                .collect::<Result<Vec<_>, EgressError>>()
        };
        Ok(EgressPolicy {
            default: cfg.default,
            allow: compile("allow", &cfg.allow)?,
            deny: compile("deny", &cfg.deny)?,
            resolve: cfg
                .resolve
                .iter()
                .map(|(k, v)| (normalize(k), *v))
                .collect(),
        })
    }

    /// The decision for `host`, knowing (where it is) the address it resolved to.
    pub fn decide(&self, host: &str, addr: Option<IpAddr>) -> Verdict {
        let host = normalize(host);
        let find = |list: &[(String, Entry)]| {
            list.iter()
                .find(|(_, e)| e.matches(&host, addr))
                .map(|(raw, _)| raw.clone())
        };
        if let Some(m) = find(&self.deny) {
            return Verdict {
                decision: Decision::Deny,
                matched: Some(m),
            };
        }
        if let Some(m) = find(&self.allow) {
            return Verdict {
                decision: Decision::Allow,
                matched: Some(m),
            };
        }
        Verdict {
            decision: self.default,
            matched: None,
        }
    }

    /// A fixed answer for `host` from `[egress.resolve]`.
    pub fn fixed_address(&self, host: &str) -> Option<IpAddr> {
        self.resolve.get(&normalize(host)).copied()
    }

    /// Whether any entry is an address block (then a name is decided again once resolved).
    pub(crate) fn has_networks(&self) -> bool {
        self.allow
            .iter()
            .chain(&self.deny)
            .any(|(_, e)| matches!(e, Entry::Net(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(default: Decision, allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy::new(&EgressConfig {
            default,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn exact_wildcard_and_default() {
        let p = policy(Decision::Deny, &["api.github.com", "*.example.org"], &[]);
        assert_eq!(p.decide("API.github.com.", None).decision, Decision::Allow);
        assert_eq!(p.decide("github.com", None).decision, Decision::Deny);
        assert_eq!(p.decide("a.b.example.org", None).decision, Decision::Allow);
        assert_eq!(p.decide("example.org", None).decision, Decision::Deny);
        assert_eq!(p.decide("badexample.org", None).decision, Decision::Deny);
        assert_eq!(
            p.decide("x.example.org", None).matched.as_deref(),
            Some("*.example.org")
        );
        assert_eq!(p.decide("other.net", None).matched, None);
    }

    #[test]
    fn deny_wins_and_networks_match_resolved_addresses() {
        let p = policy(Decision::Allow, &["*.corp.example"], &["10.0.0.0/8", "::1"]);
        assert_eq!(
            p.decide("wiki.corp.example", None).decision,
            Decision::Allow
        );
        let ten = "10.1.2.3".parse().ok();
        let v = p.decide("wiki.corp.example", ten);
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.matched.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(p.decide("[::1]", None).decision, Decision::Deny);
        assert_eq!(p.decide("10.9.9.9", None).decision, Decision::Deny);
        assert!(p.has_networks());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "*.", "exa mple.com", "a..b", "http://x.com/"] {
            let err = EgressPolicy::new(&EgressConfig {
                deny: vec![bad.into()],
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("egress.deny"), "{err}");
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml_like(r#"{"defualt": "deny"}"#);
        assert!(err.contains("defualt"), "{err}");
    }

    fn toml_like(json: &str) -> String {
        serde_json::from_str::<EgressConfig>(json)
            .unwrap_err()
            .to_string()
    }
}
