//! The errors of this crate: every rule problem names the rule and the field, every file
//! problem names the file.

use std::path::PathBuf;

/// What went wrong loading rules or keeping the detector's cursor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// A rule that cannot work as written. `rule` is its id (or its position when it has
    /// none), `field` the key at fault.
    #[error("rule `{rule}`: `{field}`: {problem}")]
    Rule {
        /// The rule's id, or `#N` (1-based position) when it has no usable id.
        rule: String,
        /// The key of the rule at fault, e.g. `where[1].regex` or `window`.
        field: String,
        /// What is wrong and how to put it right.
        problem: String,
    },
    /// A rules document (a file, or the `[detect]` table) that is not valid TOML for rules,
    /// e.g. an unknown key.
    #[error("{source_name}: {problem}")]
    Document {
        /// The file, or `[detect]`.
        source_name: String,
        /// The parser's message (it names the key and the line).
        problem: String,
    },
    /// A setting of `[detect]` outside the rules (allowed hours, lists, limits).
    #[error("[detect] `{field}`: {problem}")]
    Setting {
        /// The key at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored baseline that cannot be read.
    #[error("baseline {}: {problem}; move it aside and run `mcptrail baseline learn` again", path.display())]
    Baseline {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The detector's cursor file is not what it should be.
    #[error("detector cursor {}: {problem}; move it aside to start again from the ledger head (alerts already raised are not raised twice)", path.display())]
    Cursor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl DetectError {
    pub(crate) fn rule(rule: &str, field: impl Into<String>, problem: impl Into<String>) -> Self {
        DetectError::Rule {
            rule: rule.to_string(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
