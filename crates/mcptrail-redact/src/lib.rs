//! Redaction: keep secrets and personal data out of the audit record without switching the
//! record off. A [`Redactor`] scans an event's payload fields — tool arguments, resource URIs,
//! result previews, error messages, the server's command line — structurally (member names,
//! values, JSON nested inside strings) and as free text, with the built-in typed detectors of
//! [`detect`] and the custom rules of [`policy`]. What it finds is masked, replaced by a keyed
//! pseudonym, partly masked, dropped, or sealed for its subject ([`vault`]); the event records the rule, the JSON path and the
//! action in `redactions`, never the value, and gains the matching classification `labels`.
//! Every tap runs it before an event is serialised, so nothing unredacted reaches the disk.

pub mod detect;
pub mod policy;
mod token;
pub mod vault;
mod walk;

use std::path::PathBuf;

pub use detect::{Class, Detector, Finding, TextDetectors};
pub use policy::{Action, LabelConfig, RedactConfig, RuleConfig};
pub use token::{TokenKey, TOKEN_KEY_FILE};
pub use vault::{
    find_sealed, forget_subject, resolve_field, MasterKey, OpenError, Revealed, Sealed, Vault,
};
pub use walk::Redactor;

/// What went wrong setting up redaction.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// A rule (or detector setting) of `[redact]` cannot work.
    #[error("[redact] rule {rule:?}, field `{field}`: {message}")]
    Rule {
        /// The rule's name (or the detector/class name).
        rule: String,
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The token key file could not be read or created.
    #[error("redaction token key {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key).
        message: String,
    },
}
