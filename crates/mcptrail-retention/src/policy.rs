//! The retention policy: how long an event is kept, and how long of that "at hand" (readable
//! on this machine), per classification label — and the `[retention]` configuration that
//! bootstraps it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::RetentionError;

/// How long one label (or the default) keeps an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Days from the event's time until it is purged everywhere.
    pub days: u32,
    /// Days of those during which it stays on this machine; after that it is archived and
    /// removed locally (when an archive is configured).
    pub at_hand_days: u32,
}

/// The retention policy. An event keeps the longest rule among its labels that have one;
/// an event none of whose labels has one keeps the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// For events without a listed label.
    pub default: Rule,
    /// Per label.
    #[serde(default)]
    pub labels: BTreeMap<String, Rule>,
}

impl Policy {
    /// Check the policy can be applied: at least one day, at-hand within the retention.
    pub fn validate(&self) -> Result<(), RetentionError> {
        for (name, r) in std::iter::once(("default", &self.default))
            .chain(self.labels.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if r.days == 0 {
                return Err(RetentionError::Policy(format!(
                    "{name}: retention must be at least 1 day"
                )));
            }
            if r.at_hand_days > r.days {
                return Err(RetentionError::Policy(format!(
                    "{name}: at_hand_days ({}) exceeds its retention ({} days)",
                    r.at_hand_days, r.days
                )));
            }
            if name.is_empty() || name.chars().any(|c| c.is_control()) {
                return Err(RetentionError::Policy(format!("bad label name {name:?}")));
            }
        }
        Ok(())
    }

    /// The rule of an event with `labels`: the longest retention (and longest at-hand) among
    /// its labels that have a rule, else the default.
    pub fn rule_for<S: AsRef<str>>(&self, labels: &[S]) -> Rule {
        let mut found: Option<Rule> = None;
        for l in labels {
            if let Some(r) = self.labels.get(l.as_ref()) {
                found = Some(match found {
                    None => *r,
                    Some(f) => Rule {
                        days: f.days.max(r.days),
                        at_hand_days: f.at_hand_days.max(r.at_hand_days),
                    },
                });
            }
        }
        found.unwrap_or(self.default)
    }

    /// The longest retention of any rule.
    pub fn longest_days(&self) -> u32 {
        self.labels
            .values()
            .map(|r| r.days)
            .chain([self.default.days])
            .max()
            .unwrap_or(self.default.days)
    }

    /// SHA-256 of the policy's canonical JSON (field order fixed, labels sorted), hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().to_string().as_bytes()))
    }

    /// The policy as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a policy serialises")
    }

    /// One line for people: `default 90d (at hand 90d), pci 365d (at hand 90d), pii 90d`.
    pub fn describe(&self) -> String {
        let one = |name: &str, r: &Rule| {
            if r.at_hand_days == r.days {
                format!("{name} {}d", r.days)
            } else {
                format!("{name} {}d (at hand {}d)", r.days, r.at_hand_days)
            }
        };
        std::iter::once(one("default", &self.default))
            .chain(self.labels.iter().map(|(k, v)| one(k, v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// When an event (of `time`, with `labels`) leaves this machine and when it is purged.
pub fn deadlines<S: AsRef<str>>(
    policy: &Policy,
    time: OffsetDateTime,
    labels: &[S],
) -> (OffsetDateTime, OffsetDateTime) {
    let r = policy.rule_for(labels);
    (
        time + Duration::days(i64::from(r.at_hand_days)),
        time + Duration::days(i64::from(r.days)),
    )
}

/// `[retention]` in `mcptrail.toml`. Key names follow the S3 sink's (`retention_days`,
/// `label_retention_days`), extended with the at-hand times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days to keep events without a label listed below (required to turn retention on).
    pub retention_days: Option<u32>,
    /// Days such events stay on this machine (default: `retention_days`, i.e. no archive).
    pub at_hand_days: Option<u32>,
    /// Per-label retention, e.g. `{ pci = 365, pii = 90 }`.
    #[serde(default)]
    pub label_retention_days: BTreeMap<String, u32>,
    /// Per-label at-hand time, e.g. `{ pci = 90 }` (default: the label's retention).
    #[serde(default)]
    pub label_at_hand_days: BTreeMap<String, u32>,
    /// Archive directory (another disk, a WORM mount): segments past their at-hand time are
    /// copied here (hash checked) before they are removed locally.
    pub archive_dir: Option<PathBuf>,
    /// Name of an `[[sinks]]` of `type = "s3"` with `segments = true`: a segment counts as
    /// archived once the bucket holds it with the same SHA-256.
    pub archive_s3_sink: Option<String>,
    /// Keep a segment until every configured sink has shipped it (default true).
    #[serde(default = "yes")]
    pub wait_for_sinks: bool,
}

fn yes() -> bool {
    true
}

impl RetentionConfig {
    /// The policy this configuration describes (`None`: retention is off, nothing is ever
    /// archived or purged).
    pub fn policy(&self) -> Result<Option<Policy>, RetentionError> {
        let Some(days) = self.retention_days else {
            if !self.label_retention_days.is_empty() || self.at_hand_days.is_some() {
                return Err(RetentionError::Policy(
                    "[retention] needs retention_days (the default) once any other retention key is set".into(),
                ));
            }
            return Ok(None);
        };
        if let Some(l) = self
            .label_at_hand_days
            .keys()
            .find(|l| !self.label_retention_days.contains_key(*l))
        {
            return Err(RetentionError::Policy(format!(
                "label_at_hand_days has `{l}` but label_retention_days does not"
            )));
        }
        let policy = Policy {
            default: Rule {
                days,
                at_hand_days: self.at_hand_days.unwrap_or(days),
            },
            labels: self
                .label_retention_days
                .iter()
                .map(|(k, &d)| {
                    (
                        k.clone(),
                        Rule {
                            days: d,
                            at_hand_days: self.label_at_hand_days.get(k).copied().unwrap_or(d),
                        },
                    )
                })
                .collect(),
        };
        policy.validate()?;
        Ok(Some(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pci() -> Policy {
        RetentionConfig {
            retention_days: Some(90),
            label_retention_days: [("pci".into(), 365), ("pii".into(), 30)].into(),
            label_at_hand_days: [("pci".into(), 90)].into(),
            ..RetentionConfig::default()
        }
        .policy()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn the_longest_label_wins_and_unlisted_labels_fall_back() {
        let p = pci();
        let r = |l: &[&str]| p.rule_for(l);
        assert_eq!(
            r(&[]),
            Rule {
                days: 90,
                at_hand_days: 90
            }
        );
        assert_eq!(
            r(&["other"]),
            Rule {
                days: 90,
                at_hand_days: 90
            }
        );
        assert_eq!(
            r(&["pii"]),
            Rule {
                days: 30,
                at_hand_days: 30
            }
        );
        assert_eq!(
            r(&["pii", "pci"]),
            Rule {
                days: 365,
                at_hand_days: 90
            }
        );
        assert_eq!(p.longest_days(), 365);
        assert_eq!(p.describe(), "default 90d, pci 365d (at hand 90d), pii 30d");
    }

    #[test]
    fn bad_policies_are_refused_with_the_key_named() {
        let err = |c: RetentionConfig| c.policy().unwrap_err().to_string();
        let e = err(RetentionConfig {
            retention_days: Some(10),
            at_hand_days: Some(20),
            ..RetentionConfig::default()
        });
        assert!(e.contains("at_hand_days (20) exceeds"), "{e}");
        let e = err(RetentionConfig {
            retention_days: Some(0),
            ..RetentionConfig::default()
        });
        assert!(e.contains("at least 1 day"), "{e}");
        let e = err(RetentionConfig {
            label_retention_days: [("pci".into(), 365)].into(),
            ..RetentionConfig::default()
        });
        assert!(e.contains("needs retention_days"), "{e}");
        let e = err(RetentionConfig {
            retention_days: Some(10),
            label_at_hand_days: [("pci".into(), 5)].into(),
            ..RetentionConfig::default()
        });
        assert!(e.contains("`pci`"), "{e}");
        assert_eq!(RetentionConfig::default().policy().unwrap(), None);
    }

    #[test]
    fn the_digest_is_stable_and_changes_with_the_policy() {
        let (a, mut b) = (pci(), pci());
        assert_eq!(a.digest(), b.digest());
        b.labels.get_mut("pci").unwrap().days = 366;
        assert_ne!(a.digest(), b.digest());
    }
}
