//! `mcptrail.toml`: one file, every key known (an unknown key is an error naming it), every
//! value with a laptop-friendly default, and environment overrides for the data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mcptrail_ledger::{CheckpointPolicy, LedgerConfig, MacPolicy};
use mcptrail_redact::{RedactConfig, Redactor, TokenKey};
use mcptrail_tap::TapConfig;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the ledger and index live.
    pub(crate) data_dir: Option<PathBuf>,
    /// Ledger settings.
    #[serde(default)]
    pub(crate) ledger: LedgerSettings,
    /// Tap settings.
    #[serde(default)]
    pub(crate) tap: TapConfig,
    /// Redaction of secrets and personal data.
    #[serde(default)]
    pub(crate) redact: RedactConfig,
    /// The HTTP audit gateway.
    #[serde(default)]
    pub(crate) gateway: mcptrail_gateway::GatewayConfig,
    /// `[[sinks]]`: where events are shipped (`mcptrail ship`, and in the background of `wrap`).
    #[serde(default)]
    pub(crate) sinks: Vec<mcptrail_sinks::SinkConfig>,
    /// `[egress]`: the forward proxy tool servers are started behind (`mcptrail egress`,
    /// `wrap --egress`).
    #[serde(default)]
    pub(crate) egress: mcptrail_egress::EgressConfig,
    /// `[detect]`: rules, the built-in pack, the streaming detector of the taps.
    #[serde(default)]
    pub(crate) detect: mcptrail_detect::DetectConfig,
    /// `[retention]`: the policy per label, the archive (`mcptrail retention`).
    #[serde(default)]
    pub(crate) retention: mcptrail_retention::RetentionConfig,
    /// `[serve]`: the governance server (`mcptrail serve`).
    #[serde(default)]
    pub(crate) serve: mcptrail_server::ServeConfig,
    /// `[collector]`: NATS JetStream to PostgreSQL (`mcptrail collector`).
    #[serde(default)]
    pub(crate) collector: Option<mcptrail_collector::CollectorConfig>,
    /// The directory of the configuration file (relative rule files are taken from there).
    #[serde(skip)]
    pub(crate) base_dir: Option<PathBuf>,
}

/// `[ledger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LedgerSettings {
    /// Rotate segments at this size.
    pub(crate) segment_max_bytes: u64,
    /// Rotate segments at this age.
    pub(crate) segment_max_age_secs: u64,
    /// fdatasync every group commit (keep on).
    pub(crate) fsync: bool,
    /// Sign a Merkle checkpoint every this many records (0: only by time and at seal).
    pub(crate) checkpoint_every_records: u64,
    /// Sign a Merkle checkpoint at the first append this long after the last.
    pub(crate) checkpoint_interval_secs: u64,
    /// Also write every checkpoint to this directory (off the data directory's disk, ideally).
    pub(crate) anchor_dir: Option<PathBuf>,
    /// Forward-secure MAC on every record.
    pub(crate) mac: bool,
    /// Evolve the MAC key after this many records (0: only by time).
    pub(crate) mac_epoch_records: u64,
    /// Evolve the MAC key at the first append this long after the epoch began.
    pub(crate) mac_epoch_secs: u64,
    /// Where the MAC verification seed is written when the key is created (default
    /// `<data_dir>/keys/mac.seed`; move it off the machine).
    pub(crate) mac_seed_path: Option<PathBuf>,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        let d = LedgerConfig::default();
        LedgerSettings {
            segment_max_bytes: d.segment_max_bytes,
            segment_max_age_secs: d.segment_max_age.as_secs(),
            fsync: d.fsync,
            checkpoint_every_records: d.checkpoints.every_records,
            checkpoint_interval_secs: d.checkpoints.interval.as_secs(),
            anchor_dir: d.checkpoints.anchor_dir,
            mac: d.macs.enabled,
            mac_epoch_records: d.macs.epoch_records,
            mac_epoch_secs: d.macs.epoch_interval.as_secs(),
            mac_seed_path: d.macs.seed_path,
        }
    }
}

impl LedgerSettings {
    pub(crate) fn to_ledger_config(&self) -> LedgerConfig {
        LedgerConfig {
            segment_max_bytes: self.segment_max_bytes.max(4096),
            segment_max_age: Duration::from_secs(self.segment_max_age_secs.max(1)),
            fsync: self.fsync,
            checkpoints: CheckpointPolicy {
                every_records: self.checkpoint_every_records,
                interval: Duration::from_secs(self.checkpoint_interval_secs.max(1)),
                anchor_dir: self.anchor_dir.clone(),
                ..CheckpointPolicy::default()
            },
            macs: MacPolicy {
                enabled: self.mac,
                epoch_records: self.mac_epoch_records,
                epoch_interval: Duration::from_secs(self.mac_epoch_secs.max(1)),
                seed_path: self.mac_seed_path.clone(),
            },
        }
    }
}

/// The configuration file in effect: `explicit`, `$MCPTRAIL_CONFIG`, or the XDG default path
/// when it exists; none means the defaults.
pub(crate) fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    let env = std::env::var_os("MCPTRAIL_CONFIG").map(PathBuf::from);
    explicit.map(Path::to_path_buf).or(env).or_else(|| {
        xdg("XDG_CONFIG_HOME", ".config")
            .map(|d| d.join("mcptrail/mcptrail.toml"))
            .filter(|p| p.exists())
    })
}

/// Load the configuration from [`path`], or the defaults.
pub(crate) fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path(explicit) else {
        return Ok(Config::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut cfg =
        parse(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    cfg.base_dir = path.parent().map(Path::to_path_buf);
    // Rules are checked now, so a rule that cannot work stops every command with its name.
    mcptrail_detect::RuleSet::load(&cfg.detect, &[], cfg.base_dir.as_deref())
        .with_context(|| format!("invalid config file {}", path.display()))?;
    Ok(cfg)
}

pub(crate) fn parse(text: &str) -> anyhow::Result<Config> {
    let cfg: Config =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    mcptrail_sinks::validate_all(&cfg.sinks)?;
    validate_retention(&cfg)?;
    Ok(cfg)
}

/// `[retention]` must describe a policy that can be applied, and `archive_s3_sink` must name
/// an S3 sink that uploads sealed segments.
fn validate_retention(cfg: &Config) -> anyhow::Result<()> {
    cfg.retention.policy()?;
    if let Some(name) = &cfg.retention.archive_s3_sink {
        let sink = cfg.sinks.iter().find(|s| &s.name == name);
        match sink.map(|s| &s.target) {
            Some(mcptrail_sinks::SinkTarget::S3(c)) if c.segments => {}
            Some(mcptrail_sinks::SinkTarget::S3(_)) => anyhow::bail!(
                "[retention] archive_s3_sink = \"{name}\": that sink has segments = false, so it never uploads the segments to archive"
            ),
            _ => anyhow::bail!(
                "[retention] archive_s3_sink = \"{name}\": no [[sinks]] of type \"s3\" has that name"
            ),
        }
    }
    Ok(())
}

/// Where the pseudonym key is: `[redact] token_key_file`, else `<data_dir>/keys/redact.key`.
pub(crate) fn token_key_path(cfg: &Config, data_dir: &Path) -> PathBuf {
    cfg.redact.token_key_file.clone().unwrap_or_else(|| {
        data_dir
            .join(mcptrail_ledger::KEY_DIR)
            .join(mcptrail_redact::TOKEN_KEY_FILE)
    })
}

/// The redactor of a tap (creating the pseudonym key on first use), or none when
/// `[redact] enabled = false`.
pub(crate) fn redactor(cfg: &Config, data_dir: &Path) -> anyhow::Result<Option<Redactor>> {
    if !cfg.redact.enabled {
        return Ok(None);
    }
    let key = TokenKey::load_or_create(&token_key_path(cfg, data_dir))?;
    let redactor = Redactor::new(&cfg.redact, key)?;
    if !redactor.encrypts() {
        return Ok(Some(redactor));
    }
    let master = mcptrail_redact::MasterKey::load(cfg.redact.master_key_file.as_deref())?;
    Ok(Some(
        redactor.with_vault(mcptrail_redact::Vault::new(data_dir, master)),
    ))
}

/// The data directory: flag, then `$MCPTRAIL_DATA_DIR`, then config, then XDG default.
pub(crate) fn data_dir(flag: Option<PathBuf>, cfg: &Config) -> anyhow::Result<PathBuf> {
    flag.or_else(|| std::env::var_os("MCPTRAIL_DATA_DIR").map(PathBuf::from))
        .or_else(|| cfg.data_dir.clone())
        .or_else(|| xdg("XDG_DATA_HOME", ".local/share").map(|d| d.join("mcptrail")))
        .context("no data directory: set --data-dir or MCPTRAIL_DATA_DIR (HOME is not set either)")
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[tap]\nheartbeat_interval = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_interval"), "{err}");
        assert!(
            err.contains("heartbeat_interval_secs"),
            "should list the valid keys: {err}"
        );
        let err = parse("datadir = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("datadir"), "{err}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c =
            parse("[tap]\nheartbeat_interval_secs = 5\n[ledger]\nsegment_max_bytes = 1000000\n")
                .unwrap();
        assert_eq!(c.tap.heartbeat_interval_secs, 5);
        assert_eq!(
            c.tap.shutdown_grace_secs,
            TapConfig::default().shutdown_grace_secs
        );
        assert_eq!(c.ledger.segment_max_bytes, 1_000_000);
        assert!(c.ledger.fsync);
    }

    #[test]
    fn sink_errors_name_the_sink_and_the_key() {
        let c = parse("[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"/tmp/x\"\n").unwrap();
        assert_eq!(c.sinks.len(), 1);
        let err = parse("[[sinks]]\nname = \"siem\"\ntype = \"file\"\npath = \"/x\"\nrotate = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sink \"siem\"") && err.contains("rotate"),
            "{err}"
        );
        let twice = "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\n";
        let err = parse(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("two [[sinks]] tables"), "{err}");
    }

    #[test]
    fn detect_settings_are_checked() {
        let c = parse("[detect]\nstreaming = true\ndisable = [\"builtin.unknown_tool\"]\n[detect.lists]\negress_allow = [\"*.example.com\"]\n").unwrap();
        assert!(c.detect.streaming);
        let err = parse("[detect]\nstreming = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streming"), "{err}");
    }

    #[test]
    fn retention_settings_are_checked() {
        let c = parse("[retention]\nretention_days = 90\nlabel_retention_days = { pci = 365 }\nlabel_at_hand_days = { pci = 90 }\narchive_dir = \"/mnt/a\"\n").unwrap();
        let p = c.retention.policy().unwrap().unwrap();
        assert_eq!(p.rule_for(&["pci"]).at_hand_days, 90);
        let err = parse("[retention]\nretention_days = 10\nat_hand_days = 11\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at_hand_days (11) exceeds"), "{err}");
        let err = parse("[retention]\nretention_days = 10\narchive_s3_sink = \"worm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[sinks]] of type"), "{err}");
        let err = parse("[retention]\nretension_days = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retension_days"), "{err}");
    }

    #[test]
    fn serve_settings_are_checked() {
        let c = parse("[serve]\nlisten = \"127.0.0.1:0\"\napproval_ttl_secs = 60\n[serve.jwt]\nissuer = \"https://idp\"\nrole_claim = \"roles\"\n").unwrap();
        assert_eq!(c.serve.approval_ttl_secs, 60);
        assert_eq!(c.serve.jwt.unwrap().role_claim, "roles");
        let err = parse("[serve]\nlisten_addr = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = parse("[serve.jwt]\nrole = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("role"), "{err}");
    }

    #[test]
    fn wrong_types_are_explained() {
        let err = parse("[tap]\nheartbeat_interval_secs = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_interval_secs"), "{err}");
    }
}
