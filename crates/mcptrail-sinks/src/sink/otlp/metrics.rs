//! Metrics of a batch, with DELTA temporality: each batch's points cover the interval from
//! its earliest to its latest event, so points from a shipper that restarts, or from several
//! taps, add up instead of resetting a cumulative series. (A batch sent again after a lost
//! acknowledgement counts twice: metrics, unlike spans and logs, carry no id to dedupe by.)
//!
//! - `mcp.server.operation.duration`, `mcp.client.operation.duration` (histograms, s): one
//!   observation per answered request on each side, with the conventions' attributes
//!   (method, tool/prompt, `error.type`, `rpc.response.status_code`, protocol version,
//!   transport, server address on the client side);
//! - `mcp.server.session.duration`, `mcp.client.session.duration` (histograms, s): from
//!   `session.end` events;
//! - `mcptrail.events` (events written to the ledger, by kind), `mcptrail.redactions` (by
//!   rule), `mcptrail.alerts` (by rule and severity): monotonic sums;
//! - the sink's own gauges at export time, in a resource of their own (`service.name`,
//!   `host.name` of the shipping machine) with `mcptrail.sink.name` on each point:
//!   `mcptrail.sink.lag` (records in the ledger after the batch, i.e. still to ship) and
//!   `mcptrail.sink.lag.age` (s, how long the batch's oldest event waited in the ledger).
//!
//! Resending: spans and log records carry `mcptrail.event_id` and keep their ids, so a
//! receiver can drop a batch that arrives twice; metric points cannot be told apart, so a
//! batch whose metrics were delivered but whose acknowledgement was lost (or a shipper that
//! died before its cursor was written) counts those events twice in the delta sums and
//! histograms. Within one run a batch retried after a later signal failed does not resend
//! its metrics (the sink remembers which signals were accepted), so double counting is
//! limited to lost acknowledgements and crashes; exact counts come from the log records,
//! deduplicated by `mcptrail.event_id`. The gauges are idempotent (a resent value replaces
//! the last).

use std::collections::HashMap;

use super::encode::{transports, write_request, Batch, EncodeSettings};
use super::proto::Writer;
use super::traces::{is_span_source, outcome, write_operation_attributes, Side};

/// Bucket boundaries the conventions recommend for MCP durations (seconds).
pub(crate) const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// `AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: u64 = 1;

#[derive(Debug, Clone)]
struct Histogram {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; DURATION_BOUNDS.len() + 1],
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: [0; DURATION_BOUNDS.len() + 1],
        }
    }

    fn record(&mut self, secs: f64) {
        self.count += 1;
        self.sum += secs;
        self.min = self.min.min(secs);
        self.max = self.max.max(secs);
        // Bucket i holds (bounds[i-1], bounds[i]].
        let i = DURATION_BOUNDS.partition_point(|b| *b < secs);
        self.buckets[i] += 1;
    }
}

/// The four MCP histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Instrument {
    ServerOperation,
    ClientOperation,
    ServerSession,
    ClientSession,
}

impl Instrument {
    const ALL: [Instrument; 4] = [
        Instrument::ServerOperation,
        Instrument::ClientOperation,
        Instrument::ServerSession,
        Instrument::ClientSession,
    ];

    fn name(self) -> &'static str {
        match self {
            Instrument::ServerOperation => "mcp.server.operation.duration",
            Instrument::ClientOperation => "mcp.client.operation.duration",
            Instrument::ServerSession => "mcp.server.session.duration",
            Instrument::ClientSession => "mcp.client.session.duration",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Instrument::ServerOperation => {
                "MCP request duration as observed by mcptrail on the side facing the requester"
            }
            Instrument::ClientOperation => {
                "MCP request duration as observed by mcptrail on the side facing the responder"
            }
            Instrument::ServerSession => "MCP session duration on the side facing the client",
            Instrument::ClientSession => "MCP session duration on the side facing the server",
        }
    }
}

/// Histogram points of one instrument, keyed by their encoded attribute bytes: the same
/// attributes always encode the same way, and encoding is what the export needs anyway.
type Points = HashMap<Vec<u8>, Histogram>;

/// The sums of a resource's events, keyed by strings borrowed from the batch (a key is
/// allocated only for alerts, which are rare).
#[derive(Default)]
struct Counts<'b> {
    events: HashMap<&'b str, u64>,
    redactions: HashMap<&'b str, u64>,
    alerts: HashMap<(String, String), u64>,
}

impl Counts<'_> {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.redactions.is_empty() && self.alerts.is_empty()
    }
}

/// Count one observation under the attributes encoded in `attrs` (copied only when new).
fn observe(points: &mut Points, attrs: &[u8], secs: f64) {
    if let Some(h) = points.get_mut(attrs) {
        h.record(secs);
    } else {
        let mut h = Histogram::new();
        h.record(secs);
        points.insert(attrs.to_vec(), h);
    }
}

/// What the sink knows about itself when it exports a batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkGauges {
    /// The sink's name (`mcptrail.sink.name`).
    pub sink: String,
    /// Records in the ledger after the batch's last one (`None`: the ledger head is unknown).
    pub records_behind: Option<u64>,
    /// Now, in Unix nanoseconds (the gauges' time).
    pub now_ns: u64,
}

/// Write the sink's gauges as one more `ResourceMetrics` (field 1 of the request; a repeated
/// field, so appending it to an encoded request is valid protobuf).
fn write_sink_gauges(
    buf: &mut Vec<u8>,
    g: &SinkGauges,
    batch: &Batch<'_>,
    settings: &EncodeSettings,
) {
    let oldest = batch.span_ns.0;
    let mut w = Writer {
        buf: std::mem::take(buf),
    };
    w.message(1, |rm| {
        rm.message(1, |r| {
            r.kv_str(1, "service.name", &settings.service_name);
            r.kv_str(1, "service.version", env!("CARGO_PKG_VERSION"));
            r.kv_str(1, "host.name", &crate::sink::http::hostname());
        });
        rm.message(2, |scope| {
            super::encode::write_scope(scope);
            let mut gauge = |name: &str, unit: &str, description: &str, value: Value| {
                // Metric { name = 1; description = 2; unit = 3; gauge = 5 { data_points = 1 } }
                scope.message(2, |m| {
                    m.string(1, name);
                    m.string(2, description);
                    m.string(3, unit);
                    m.message(5, |gm| {
                        // NumberDataPoint { time = 3; as_double = 4; as_int = 6; attributes = 7 }
                        gm.message(1, |p| {
                            p.kv_str(7, "mcptrail.sink.name", &g.sink);
                            p.fixed64(3, g.now_ns);
                            match value {
                                Value::Int(v) => p.sfixed64_always(6, v),
                                Value::Double(v) => p.double_always(4, v),
                            }
                        });
                    });
                });
            };
            if let Some(n) = g.records_behind {
                gauge(
                    "mcptrail.sink.lag",
                    "{record}",
                    "Ledger records after the batch just exported, still to ship",
                    Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                );
            }
            if oldest != 0 && g.now_ns >= oldest {
                gauge(
                    "mcptrail.sink.lag.age",
                    "s",
                    "How long the batch's oldest event waited in the ledger before export",
                    Value::Double((g.now_ns - oldest) as f64 / 1e9),
                );
            }
        });
    });
    *buf = w.buf;
}

/// A gauge value.
enum Value {
    Int(i64),
    Double(f64),
}

/// Write the `ExportMetricsServiceRequest` of a batch, with the sink's gauges when given
/// (`None`: nothing to report).
pub(crate) fn encode(
    batch: &Batch<'_>,
    settings: &EncodeSettings,
    gauges: Option<&SinkGauges>,
) -> Option<Vec<u8>> {
    let mut out = encode_events(batch, settings);
    if let Some(g) = gauges {
        let mut buf = out.take().unwrap_or_default();
        write_sink_gauges(&mut buf, g, batch, settings);
        out = Some(buf);
    }
    out
}

/// The metrics the batch's events make (`None`: none).
fn encode_events(batch: &Batch<'_>, settings: &EncodeSettings) -> Option<Vec<u8>> {
    let (start, end) = (batch.span_ns.0, batch.span_ns.1 + 1);
    // Reused for every observation's attributes.
    let mut attrs = Writer::default();
    write_request(batch, settings, |scope, resource| {
        let mut hist: [Points; 4] = Default::default();
        let mut counts = Counts::default();
        for it in batch.items.iter().filter(|it| it.resource == resource) {
            *counts.events.entry(it.rec.kind.as_str()).or_default() += 1;
            let Some(v) = &it.view else { continue };
            for r in &v.redactions {
                *counts.redactions.entry(&r.rule).or_default() += 1;
            }
            if v.kind == "alert" {
                let d = v.alert_detail();
                let key = (
                    d.rule.as_deref().unwrap_or("unknown").to_string(),
                    d.severity.as_deref().unwrap_or("unknown").to_string(),
                );
                *counts.alerts.entry(key).or_default() += 1;
            }
            if is_span_source(v) {
                let Some(secs) = v.duration_ms.filter(|d| d.is_finite() && *d >= 0.0) else {
                    continue;
                };
                for (side, instrument) in [
                    (Side::Server, Instrument::ServerOperation),
                    (Side::Client, Instrument::ClientOperation),
                ] {
                    attrs.buf.clear();
                    write_operation_attributes(&mut attrs, 9, v, side);
                    let o = outcome(v, side);
                    if let Some(code) = &o.status_code {
                        attrs.kv_str(9, "rpc.response.status_code", code);
                    }
                    if let Some(t) = &o.error_type {
                        attrs.kv_str(9, "error.type", t);
                    }
                    observe(&mut hist[instrument as usize], &attrs.buf, secs / 1000.0);
                }
            } else if v.kind == "session.end" {
                let transport = v.server.as_ref().and_then(|s| s.transport.as_deref());
                // The gateway records itself as a session too; it is not an MCP session.
                let Some(secs) = v
                    .duration_ms
                    .filter(|d| d.is_finite() && *d >= 0.0 && transport != Some("gateway"))
                else {
                    continue;
                };
                let (client_side, server_side) = transports(v);
                let failed = v
                    .session
                    .as_ref()
                    .and_then(|s| s.end_reason.as_deref())
                    .filter(|r| *r == "tap_error");
                for (instrument, net) in [
                    (Instrument::ServerSession, client_side),
                    (Instrument::ClientSession, server_side),
                ] {
                    attrs.buf.clear();
                    if let Some(p) = &v.protocol_version {
                        attrs.kv_str(9, "mcp.protocol.version", p);
                    }
                    attrs.kv_str(9, "network.transport", net);
                    if net == "tcp" {
                        attrs.kv_str(9, "network.protocol.name", "http");
                    }
                    if let Some(r) = failed {
                        attrs.kv_str(9, "error.type", r);
                    }
                    observe(&mut hist[instrument as usize], &attrs.buf, secs / 1000.0);
                }
            }
        }
        if hist.iter().all(HashMap::is_empty) && counts.is_empty() {
            return false;
        }
        write_histograms(scope, hist, (start, end));
        write_counts(scope, &counts, (start, end));
        true
    })
}

fn write_histograms(scope: &mut Writer, hist: [Points; 4], (start, end): (u64, u64)) {
    for (instrument, points) in Instrument::ALL.into_iter().zip(hist) {
        if points.is_empty() {
            continue;
        }
        let mut mine: Vec<_> = points.into_iter().collect();
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        // ScopeMetrics.metrics = 2; Metric { name = 1; description = 2; unit = 3;
        // histogram = 9 { data_points = 1; aggregation_temporality = 2 } }
        scope.message(2, |m| {
            m.string(1, instrument.name());
            m.string(2, instrument.description());
            m.string(3, "s");
            m.message(9, |h| {
                for (attrs, hg) in &mine {
                    // HistogramDataPoint { start = 2; time = 3; count = 4; sum = 5;
                    // bucket_counts = 6; explicit_bounds = 7; attributes = 9; min = 11; max = 12 }
                    h.message(1, |p| {
                        p.buf.extend_from_slice(attrs);
                        p.fixed64(2, start);
                        p.fixed64(3, end);
                        p.fixed64(4, hg.count);
                        p.double_always(5, hg.sum);
                        p.packed_fixed64(6, &hg.buckets);
                        p.packed_double(7, &DURATION_BOUNDS);
                        p.double_always(11, hg.min);
                        p.double_always(12, hg.max);
                    });
                }
                h.uint(2, DELTA);
            });
        });
    }
}

/// The points of one sum: attributes (key, value) and the count, in attribute order.
type SumPoints<'c> = Vec<(Vec<(&'static str, &'c str)>, u64)>;

/// The sorted points of a sum with one attribute `key`.
fn single<'c>(key: &'static str, m: &HashMap<&'c str, u64>) -> SumPoints<'c> {
    let mut v: SumPoints<'c> = m.iter().map(|(val, n)| (vec![(key, *val)], *n)).collect();
    v.sort();
    v
}

fn write_counts(scope: &mut Writer, counts: &Counts<'_>, (start, end): (u64, u64)) {
    let mut alerts: SumPoints<'_> = counts
        .alerts
        .iter()
        .map(|((rule, severity), n)| {
            (
                vec![
                    ("mcptrail.alert.rule", rule.as_str()),
                    ("mcptrail.alert.severity", severity.as_str()),
                ],
                *n,
            )
        })
        .collect();
    alerts.sort();
    for (name, unit, description, mine) in [
        (
            "mcptrail.events",
            "{event}",
            "Events written to the audit ledger",
            single("mcptrail.event.kind", &counts.events),
        ),
        (
            "mcptrail.redactions",
            "{redaction}",
            "Values redacted from events, by rule",
            single("mcptrail.redaction.rule", &counts.redactions),
        ),
        (
            "mcptrail.alerts",
            "{alert}",
            "Alerts raised, by rule and severity",
            alerts,
        ),
    ] {
        if mine.is_empty() {
            continue;
        }
        // Metric.sum = 7: Sum { data_points = 1; aggregation_temporality = 2; is_monotonic = 3 }
        scope.message(2, |m| {
            m.string(1, name);
            m.string(2, description);
            m.string(3, unit);
            m.message(7, |s| {
                for (attrs, n) in &mine {
                    // NumberDataPoint { start = 2; time = 3; as_int = 6 (sfixed64); attributes = 7 }
                    s.message(1, |p| {
                        for (k, val) in attrs {
                            p.kv_str(7, k, val);
                        }
                        p.fixed64(2, start);
                        p.fixed64(3, end);
                        p.sfixed64_always(6, *n as i64);
                    });
                }
                s.uint(2, DELTA);
                s.uint(3, 1);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_upper_bound_holds_them() {
        let mut h = Histogram::new();
        for s in [0.001, 0.01, 0.011, 299.0, 1000.0] {
            h.record(s);
        }
        assert_eq!(h.buckets[0], 2, "(-inf, 0.01]");
        assert_eq!(h.buckets[1], 1, "(0.01, 0.02]");
        assert_eq!(h.buckets[13], 1, "(120, 300]");
        assert_eq!(h.buckets[14], 1, "(300, +inf)");
        assert_eq!(h.count, 5);
        assert_eq!(h.min, 0.001);
        assert_eq!(h.max, 1000.0);
    }
}
