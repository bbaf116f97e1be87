//! NATS JetStream: every event is published to `subject` with the `Nats-Msg-Id` header set
//! to its `event_id`, and the batch counts as delivered only when JetStream acknowledged
//! every message (a `PubAck`). JetStream drops a repeated `Nats-Msg-Id` within the stream's
//! duplicate window (2 minutes by default), so a batch sent again after a lost
//! acknowledgement is not stored twice; older duplicates are removable by `event_id`.
//!
//! With `fleet = { tenant, source }` (issue 9) the subjects are
//! `<prefix>.<tenant>.<source>.events` (each record verbatim: the exact ledger line, so a
//! collector can recompute its hash and check the chain) and
//! `<prefix>.<tenant>.<source>.checkpoints` (retention tombstones, before the events, and
//! each new signed checkpoint note verbatim, sent
//! after the batch's events were acknowledged, `Nats-Msg-Id` = the note's stable
//! [`CheckpointNote::record_id`](crate::checkpoints::CheckpointNote::record_id); progress in
//! `sinks/<name>.checkpoints`). The sink does not create the stream: `mcptrail collector`
//! creates (or checks) it, so a tap cannot widen what the stream captures.
//!
//! The client is async-nats on a one-worker tokio runtime owned by the sink; the shipper's
//! thread blocks on it, so nothing of this reaches the tap's relay.

use std::time::Duration;

use async_nats::jetstream;

use crate::checkpoints::{CheckpointProgress, NOTES_PER_BATCH};
use crate::config::NatsSinkConfig;
use crate::error::{SendError, SendErrorKind};
use crate::format::encode_into;
use crate::secret::Secret;
use crate::sink::Sink;
use crate::tail::ShipRecord;

/// The NATS JetStream sink.
pub struct NatsSink {
    cfg: NatsSinkConfig,
    token: Option<Secret>,
    password: Option<Secret>,
    runtime: tokio::runtime::Runtime,
    js: Option<jetstream::Context>,
    name: String,
    data_dir: Option<std::path::PathBuf>,
}

impl NatsSink {
    /// A sink for `cfg` (loads its secrets now; connects at the first batch).
    pub fn new(cfg: NatsSinkConfig) -> Result<Self, String> {
        let token = cfg
            .token
            .as_ref()
            .map(|s| s.load().map_err(|e| format!("NATS token: {e}")))
            .transpose()?;
        let password = cfg
            .password
            .as_ref()
            .map(|s| s.load().map_err(|e| format!("NATS password: {e}")))
            .transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcptrail-nats")
            .on_thread_start(crate::shipper::run_in_background)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS client runtime: {e}"))?;
        Ok(NatsSink {
            cfg,
            token,
            password,
            runtime,
            js: None,
            name: "nats".into(),
            data_dir: None,
        })
    }

    /// The sink's name (where its checkpoint progress is kept).
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Fleet mode: the checkpoint notes newer than the last shipped, as
    /// `(subject, msg id, note, size)`.
    fn pending_checkpoints(&self) -> Result<Vec<(String, String, String, u64)>, SendError> {
        let (Some(fleet), Some(dir)) = (&self.cfg.fleet, &self.data_dir) else {
            return Ok(Vec::new());
        };
        let after = CheckpointProgress::new(dir, &self.name).load();
        let notes = crate::checkpoints::pending(dir, after, NOTES_PER_BATCH)
            .map_err(|e| SendError::new(SendErrorKind::Encode, e))?;
        let subject = fleet.checkpoints_subject();
        Ok(notes
            .into_iter()
            .map(|n| (subject.clone(), n.record_id(), n.note, n.size))
            .collect())
    }

    /// Fleet mode: the retention tombstones not published yet, as `(subject, msg id, note,
    /// file name)`. They go on the checkpoints subject (a tombstone is a signed checkpoint
    /// with extension lines) *before* the batch's events, so a collector meeting this source
    /// for the first time continues its chain after the removed records instead of waiting
    /// for a seq 1 that no longer exists.
    fn pending_tombstones(&self) -> Result<Vec<(String, String, String, String)>, SendError> {
        let (Some(fleet), Some(dir)) = (&self.cfg.fleet, &self.data_dir) else {
            return Ok(Vec::new());
        };
        let pending = crate::checkpoints::TombstoneProgress::new(dir, &self.name)
            .pending(dir)
            .map_err(|e| SendError::new(SendErrorKind::Encode, e))?;
        let subject = fleet.checkpoints_subject();
        Ok(pending
            .into_iter()
            .map(|(name, note)| {
                let origin = note.lines().next().unwrap_or("").to_string();
                (
                    subject.clone(),
                    crate::checkpoints::tombstone_id(&origin, &name),
                    note,
                    name,
                )
            })
            .collect())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs.max(1))
    }

    fn context(&mut self) -> Result<jetstream::Context, SendError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout())
            .name("mcptrail-sink");
        if let Some(t) = &self.token {
            opts = opts.token(String::from_utf8_lossy(t.expose()).into_owned());
        }
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.password) {
            opts =
                opts.user_and_password(u.clone(), String::from_utf8_lossy(p.expose()).into_owned());
        }
        let url = self.cfg.url.clone();
        let timeout = self.timeout();
        let client = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, opts.connect(url.as_str())).await })
            .map_err(|_| {
                SendError::new(
                    SendErrorKind::Connect,
                    format!("{url}: connection timed out"),
                )
            })?
            .map_err(|e| SendError::new(SendErrorKind::Connect, format!("{url}: {e}")))?;
        // The JetStream context spawns its acknowledgement task on the current runtime.
        let _in_runtime = self.runtime.enter();
        let mut ctx = jetstream::new(client);
        ctx.set_timeout(timeout);
        self.js = Some(ctx.clone());
        Ok(ctx)
    }
}

fn publish_error(subject: &str, e: &jetstream::context::PublishError) -> SendError {
    use jetstream::context::PublishErrorKind as K;
    let text = e.to_string();
    let kind = match e.kind() {
        K::StreamNotFound => SendErrorKind::Rejected,
        K::TimedOut | K::BrokenPipe => SendErrorKind::Transport,
        K::MaxAckPending => SendErrorKind::Throttled,
        K::MaxPayloadExceeded => SendErrorKind::Rejected,
        _ if text.contains("no responders") => SendErrorKind::Rejected,
        _ => SendErrorKind::Transport,
    };
    let no_stream = matches!(e.kind(), K::StreamNotFound) || text.contains("no responders");
    let hint = if no_stream {
        format!(" (no JetStream stream captures subject `{subject}`: create one)")
    } else {
        String::new()
    };
    SendError::new(kind, format!("publish to `{subject}`: {text}{hint}"))
}

impl Sink for NatsSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let js = self.context()?;
        let subject = async_nats::Subject::from(self.cfg.events_subject());
        let notes = self.pending_checkpoints()?;
        let newest_note = notes.last().map(|n| n.3);
        let tombstones = self.pending_tombstones()?;
        let tombstone_names: Vec<String> = tombstones.iter().map(|t| t.3.clone()).collect();
        let format = self.cfg.format;
        let timeout = self.timeout();
        let mut payloads = Vec::with_capacity(batch.len());
        for rec in batch {
            let mut p = Vec::with_capacity(rec.line.len());
            encode_into(format, rec, &mut p)?;
            payloads.push((rec.event_id.clone(), p));
        }
        // The batch runs as a task on the runtime's worker, the thread the connection task
        // runs on, so each publish is not a wake-up across threads.
        let task = self.runtime.spawn(async move {
            let work = async {
                // Tombstones first, each acknowledged before the events after them go out.
                for (t_subject, id, note, _) in tombstones {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(note.into_bytes().into())
                        .message_id(id);
                    let t_subject = async_nats::Subject::from(t_subject);
                    js.send_publish(t_subject.clone(), msg)
                        .await
                        .map_err(|e| publish_error(&t_subject, &e))?
                        .await
                        .map_err(|e| publish_error(&t_subject, &e))?;
                }
                // Publish the whole batch, then collect the acknowledgements (pipelined).
                let mut acks = Vec::with_capacity(payloads.len());
                for (id, payload) in payloads {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(payload.into())
                        .message_id(id);
                    acks.push(
                        js.send_publish(subject.clone(), msg)
                            .await
                            .map_err(|e| publish_error(&subject, &e))?,
                    );
                }
                for ack in acks {
                    ack.await.map_err(|e| publish_error(&subject, &e))?;
                }
                // Checkpoints only after every event they may cover was acknowledged.
                let mut acks = Vec::with_capacity(notes.len());
                for (cp_subject, id, note, _) in notes {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(note.into_bytes().into())
                        .message_id(id);
                    let cp_subject = async_nats::Subject::from(cp_subject);
                    acks.push((
                        js.send_publish(cp_subject.clone(), msg)
                            .await
                            .map_err(|e| publish_error(&cp_subject, &e))?,
                        cp_subject,
                    ));
                }
                for (ack, cp_subject) in acks {
                    ack.await.map_err(|e| publish_error(&cp_subject, &e))?;
                }
                Ok::<(), SendError>(())
            };
            tokio::time::timeout(timeout * 2, work)
                .await
                .unwrap_or_else(|_| {
                    Err(SendError::new(
                        SendErrorKind::Transport,
                        format!(
                            "JetStream did not acknowledge the batch within {}s",
                            timeout.as_secs() * 2
                        ),
                    ))
                })
        });
        let result = self.runtime.block_on(task).unwrap_or_else(|e| {
            Err(SendError::new(
                SendErrorKind::Transport,
                format!("the publishing task failed: {e}"),
            ))
        });
        if matches!(&result, Err(e) if e.kind == SendErrorKind::Transport) {
            // Start over with a fresh connection next time.
            self.js = None;
        }
        if let (Ok(()), false, Some(dir)) = (&result, tombstone_names.is_empty(), &self.data_dir) {
            crate::checkpoints::TombstoneProgress::new(dir, &self.name)
                .store(tombstone_names.iter().map(String::as_str))
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
        if let (Ok(()), Some(size), Some(dir)) = (&result, newest_note, &self.data_dir) {
            CheckpointProgress::new(dir, &self.name)
                .store(size)
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
        result
    }

    fn attach_ledger(&mut self, data_dir: &std::path::Path) {
        self.data_dir = Some(data_dir.to_path_buf());
    }

    fn probe(&mut self) -> Result<String, SendError> {
        let js = self.context()?;
        let url = crate::sink::http::redact_url(&self.cfg.url);
        let subject = self.cfg.events_subject();
        let expected = self.cfg.stream.clone();
        let timeout = self.timeout();
        self.runtime.block_on(async move {
            let answer = |what: &str| {
                SendError::new(SendErrorKind::Transport, format!("JetStream did not answer {what}"))
            };
            // Which stream captures the subject: without one every publish fails.
            let name = tokio::time::timeout(timeout, js.stream_by_subject(subject.clone()))
                .await
                .map_err(|_| answer("the stream lookup"))?
                .map_err(|e| {
                    SendError::new(
                        SendErrorKind::Rejected,
                        format!("no JetStream stream captures subject `{subject}` ({e}): create one"),
                    )
                })?;
            if let Some(expected) = expected.filter(|e| *e != name) {
                return Err(SendError::new(
                    SendErrorKind::Rejected,
                    format!("subject `{subject}` goes to stream `{name}`, not the configured `{expected}`"),
                ));
            }
            let mut stream = tokio::time::timeout(timeout, js.get_stream(&name))
                .await
                .map_err(|_| answer("the stream info"))?
                .map_err(|e| SendError::new(SendErrorKind::Rejected, format!("stream `{name}`: {e}")))?;
            let info = stream
                .info()
                .await
                .map_err(|e| SendError::new(SendErrorKind::Transport, e.to_string()))?;
            Ok(format!(
                "{url} connected; subject `{subject}` goes to stream `{name}` ({} messages)",
                info.state.messages
            ))
        })
    }
}
