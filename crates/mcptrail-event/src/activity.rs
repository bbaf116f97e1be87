//! What one event adds to an agent's activity: the single definition of a tool call, a tool
//! result, a failed result and a result's bytes, shared by the behavioural baselines
//! (`mcptrail-detect`), the local index's hourly activity and the fleet store's, so a chart
//! and the baseline it is drawn against count the same things.

use crate::{Direction, Status};

/// The members of a record that [`Tally::add`] reads (borrowed from an `Event` or from a
/// record the collector parsed without building one).
#[derive(Debug, Clone, Copy, Default)]
pub struct ActivityFacts<'a> {
    /// `kind`, as stored (`mcp.request`, …).
    pub kind: &'a str,
    /// `method`.
    pub method: Option<&'a str>,
    /// `direction`.
    pub direction: Option<Direction>,
    /// `response_summary.status`.
    pub status: Option<Status>,
    /// `response_summary.is_error`.
    pub is_error: bool,
    /// `response_summary.size`.
    pub size: Option<u64>,
    /// `bytes_out`.
    pub bytes_out: Option<u64>,
}

impl ActivityFacts<'_> {
    /// A `tools/call` request from the client.
    pub fn is_tool_call(&self) -> bool {
        self.kind == "mcp.request"
            && self.method == Some("tools/call")
            && self.direction != Some(Direction::ServerToClient)
    }

    /// A result the server sent for a tool call or a resource read.
    pub fn is_tool_result(&self) -> bool {
        self.kind == "mcp.response"
            && matches!(self.method, Some("tools/call" | "resources/read"))
            && self.direction != Some(Direction::ClientToServer)
    }

    /// A response whose status is not `ok`, or a tool result with `isError`.
    pub fn failed(&self) -> bool {
        self.status
            .is_some_and(|s| s != Status::Ok || self.is_error)
    }

    /// Bytes of a response: its summary's size, else the bytes relayed to the client.
    pub fn result_bytes(&self) -> u64 {
        self.size.or(self.bytes_out).unwrap_or(0)
    }
}

/// Counts of an agent's activity over some span (an hour, in the index and the fleet store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records.
    pub events: u64,
    /// `tools/call` requests.
    pub calls: u64,
    /// Tool and resource results.
    pub results: u64,
    /// Of which failed.
    pub errors: u64,
    /// Bytes of those results.
    pub bytes: u64,
}

impl Tally {
    /// Add the counts of `other` (a tally of other records).
    pub fn merge(&mut self, other: &Tally) {
        self.events += other.events;
        self.calls += other.calls;
        self.results += other.results;
        self.errors += other.errors;
        self.bytes += other.bytes;
    }

    /// Count one record.
    pub fn add(&mut self, f: &ActivityFacts<'_>) {
        self.events += 1;
        if f.is_tool_call() {
            self.calls += 1;
        }
        if f.is_tool_result() {
            self.results += 1;
            self.errors += u64::from(f.failed());
            self.bytes += f.result_bytes();
        }
    }
}

/// The clock hour of an RFC 3339 UTC time as stored (`2026-12-07T13:45:31.5Z` →
/// `2026-12-07T13`); `None` when the text is too short to hold one.
pub fn hour_of(time: &str) -> Option<&str> {
    time.get(..13)
        .filter(|h| h.as_bytes().get(10) == Some(&b'T'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_results_failures_and_bytes_are_counted_once_each() {
        let mut t = Tally::default();
        let call = ActivityFacts {
            kind: "mcp.request",
            method: Some("tools/call"),
            direction: Some(Direction::ClientToServer),
            ..Default::default()
        };
        let ok = ActivityFacts {
            kind: "mcp.response",
            method: Some("tools/call"),
            direction: Some(Direction::ServerToClient),
            status: Some(Status::Ok),
            size: Some(120),
            bytes_out: Some(999),
            ..Default::default()
        };
        let tool_error = ActivityFacts {
            is_error: true,
            size: None,
            bytes_out: Some(30),
            ..ok
        };
        let sampling = ActivityFacts {
            direction: Some(Direction::ServerToClient),
            ..call
        };
        for f in [call, ok, tool_error, sampling] {
            t.add(&f);
        }
        assert_eq!(
            t,
            Tally {
                events: 4,
                calls: 1,
                results: 2,
                errors: 1,
                bytes: 150
            }
        );
        assert_eq!(hour_of("2026-12-07T13:45:31.5Z"), Some("2026-12-07T13"));
        assert_eq!(hour_of("2026-12-07"), None);
        assert_eq!(hour_of("2026-12-07 13:45"), None);
    }
}
