//! Who asked for a governance action and who approved it: what every mutating entry point
//! of the engine takes and signs into the tombstones and `governance.*` events it writes.

use serde::{Deserialize, Serialize};

use crate::RetentionError;

/// A request by one principal, approved by another (the server's dual authorisation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorisation {
    /// The request's id (the server's approval request).
    pub request_id: String,
    /// Who asked.
    pub requested_by: String,
    /// Who approved (never the one who asked).
    pub approved_by: String,
}

impl Authorisation {
    /// Refuse an empty or self-approved authorisation.
    pub fn check(&self) -> Result<(), RetentionError> {
        let blank = |s: &str| s.trim().is_empty();
        if blank(&self.request_id) || blank(&self.requested_by) || blank(&self.approved_by) {
            return Err(RetentionError::Unauthorised(
                "an authorisation needs a request id, who requested it and who approved it".into(),
            ));
        }
        if self.requested_by.trim() == self.approved_by.trim() {
            return Err(RetentionError::Unauthorised(format!(
                "{} cannot approve their own request {}: a second principal must approve it",
                self.requested_by, self.request_id
            )));
        }
        Ok(())
    }
}

/// Where the effective policy's authority comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum PolicySource {
    /// Bootstrapped from the `[retention]` table of the configuration file, by whoever can
    /// write it and the data directory.
    Config {
        /// The configuration file, if known.
        file: Option<String>,
        /// The OS user that bootstrapped it.
        by: String,
    },
    /// Set with a second principal's approval.
    Approved(Authorisation),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_approval_and_blanks_are_refused() {
        let a = |r: &str, by: &str, ok: &str| Authorisation {
            request_id: r.into(),
            requested_by: by.into(),
            approved_by: ok.into(),
        };
        assert!(a("r1", "alice", "bob").check().is_ok());
        let e = a("r1", "alice", " alice ").check().unwrap_err().to_string();
        assert!(e.contains("cannot approve their own request"), "{e}");
        assert!(a("", "alice", "bob").check().is_err());
        assert!(a("r1", "alice", "").check().is_err());
    }
}
