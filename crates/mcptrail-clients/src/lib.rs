//! MCP client configurations: where each client keeps its servers, what they are, whether
//! mcptrail records them — and rewriting them so that every stdio server runs through
//! `mcptrail wrap`, and back, byte for byte.
//!
//! - [`client`]: the known clients and where their files are;
//! - [`servers`]: reading one file (JSON or JSON with comments) into its servers;
//! - [`edit`]: planning, showing and writing the edits, and the install records that undo them;
//! - [`watch`]: what changed in a file since the last look (a server unwrapped, added unwrapped…).

pub mod client;
pub mod edit;
mod error;
pub mod servers;
pub mod watch;

pub use client::{given, ClientKind, Location, Scope, SearchRoots};
pub use edit::{
    plan_install, plan_uninstall, write_plan, InstallRecord, Plan, RecordStore, Selection,
    WrapSpec, Written,
};
pub use error::ClientsError;
pub use servers::{ConfigFile, Server, Status, Transport, Wrapped};
pub use watch::{FileChange, ServerChange, WatchState};
