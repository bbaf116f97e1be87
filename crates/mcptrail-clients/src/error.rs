//! Errors of reading and rewriting client configurations: each names the file and, for a
//! syntax error, the line and column, so the user can open the file and fix it.

use std::path::PathBuf;

/// What went wrong with a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path}: not UTF-8 text (byte {offset}); an MCP client configuration is JSON")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// The file is not JSON (or JSON with comments).
    #[error("{path}:{line}:{column}: not valid JSON: {message}; the file was left as it is")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file is JSON but not shaped like a client configuration where it matters.
    #[error("{path}: {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong, in the file's terms.
        message: String,
    },
    /// The file changed between reading and writing: nothing was written.
    #[error(
        "{path} changed while mcptrail was editing it; nothing was written, run the command again"
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
}

impl ClientsError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ClientsError {
        let path = path.into();
        move |source| ClientsError::Io { path, source }
    }
}
