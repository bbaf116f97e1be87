//! The retention engine (DESIGN.md §7): a policy per classification label, sealed segments
//! archived then purged when the policy says, signed tombstones in their place, and a
//! self-check that proves it all happened as the policy says. No HTTP here: the governance
//! server calls these functions after a second principal approved.
//!
//! # The model
//!
//! - **Policy** ([`Policy`]): per label, how many days an event is kept and how many of those
//!   it stays *at hand* (on this machine); an event keeps the longest rule of its labels, an
//!   event without a listed label the default. Bootstrapped from `[retention]`
//!   ([`RetentionConfig`]); the *effective* policy lives in `<data_dir>/retention/policy.json`
//!   and every change to it is a `governance.retention` event (old, new, who asked, who
//!   approved — [`Engine::set_policy`] takes an [`Authorisation`]).
//! - **Plan** ([`Engine::plan`], read only): a sealed segment whose every event is past its
//!   at-hand time is *archived* (copied to the archive directory and read back, or found in
//!   the S3 Object Lock bucket with the same SHA-256) and removed here; one whose every event
//!   is past its retention is *purged* (here and from the archive directory; an Object Lock
//!   copy expires on its own — nobody can delete it earlier, which is its point). Removal from
//!   this machine goes oldest first without a gap and never takes the active segment; a
//!   segment also waits until every sink has shipped it (`wait_for_sinks`).
//! - **Run** ([`Engine::run`]): verifies the ledger (nothing is removed from a ledger that
//!   does not verify), carries out the plan with signed tombstones
//!   ([`mcptrail_ledger::remove_segments`]), deletes the removed records from the index,
//!   appends `governance.archive` / `governance.purge` events. It needs no fresh approval: the
//!   policy was approved, and its authority is signed into each tombstone and event.
//!   [`Engine::purge`] is the ad-hoc purge outside the policy, which needs an
//!   [`Authorisation`] of its own (refusals are recorded too).
//! - **Crashes**: a journal (`retention/JOURNAL`) is written before the first removal and
//!   deleted after the events; every removal step is durable before the next; the next run
//!   finishes an interrupted one and says so in its events.
//! - **Self-check** ([`Engine::selfcheck`]): see [`selfcheck`]; recorded as a
//!   `governance.selfcheck` event.

mod archive;
mod auth;
mod clock;
mod engine;
mod error;
mod policy;
pub mod selfcheck;

pub use archive::{Archive, Deleted, DirArchive, Held, S3Archive};
pub use auth::{Authorisation, PolicySource};
pub use clock::{Clock, FixedClock, SystemClock};
pub use engine::{
    Action, Done, EffectivePolicy, Engine, EngineConfig, EventHook, FaultHook, Place, Plan,
    RunReport, SegmentPlan, RETENTION_DIR,
};
pub use error::RetentionError;
pub use policy::{deadlines, Policy, RetentionConfig, Rule};
pub use selfcheck::{Check, SelfcheckReport, Status};
