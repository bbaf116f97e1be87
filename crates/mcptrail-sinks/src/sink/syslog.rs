//! Syslog: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425, rustls), carrying the ledger line, CEF or OCSF.
//!
//! Delivery: syslog has no application-level acknowledgement. Over TCP and TLS a batch counts
//! as delivered when it was written to an open connection; before each batch the connection
//! is checked for a close by the receiver (and re-opened), so a receiver that restarted
//! between batches loses nothing. A receiver that dies while a batch is in flight can lose
//! that batch: use NATS JetStream or the webhook (both acknowledge) where that matters. UDP
//! is fire-and-forget; messages larger than 65,000 bytes are cut to that size.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::config::{PayloadFormat, SyslogSinkConfig, SyslogTransport};
use crate::error::{SendError, SendErrorKind};
use crate::format::syslog::{octet_frame, write_message, SyslogHeader};
use crate::format::{cef, ocsf, parse};
use crate::sink::Sink;
use crate::tail::ShipRecord;

const UDP_MAX: usize = 65_000;

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// The syslog sink.
pub struct SyslogSink {
    cfg: SyslogSinkConfig,
    header: SyslogHeader,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    conn: Option<Conn>,
    message: Vec<u8>,
    payload: Vec<u8>,
    out: Vec<u8>,
}

fn connect_err(addr: &str, e: impl std::fmt::Display) -> SendError {
    SendError::new(SendErrorKind::Connect, format!("{addr}: {e}"))
}

impl SyslogSink {
    /// A sink for `cfg` (loads TLS material now, so a bad file is reported at start).
    pub fn new(cfg: SyslogSinkConfig) -> Result<Self, String> {
        let tls = if cfg.transport == SyslogTransport::Tls {
            let config = crate::tls::client_config(
                cfg.tls_ca_file.as_deref(),
                cfg.tls_client_cert_file
                    .as_deref()
                    .zip(cfg.tls_client_key_file.as_deref()),
            )?;
            let host = match &cfg.tls_server_name {
                Some(n) => n.clone(),
                None => host_part(&cfg.address).to_string(),
            };
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                format!("`{host}` is not a valid TLS server name (set tls_server_name)")
            })?;
            Some((config, name))
        } else {
            None
        };
        let fallback_host = nix_hostname();
        Ok(SyslogSink {
            header: SyslogHeader {
                facility: cfg.facility,
                app_name: cfg.app_name.clone(),
                fallback_host,
            },
            cfg,
            tls,
            conn: None,
            message: Vec::new(),
            payload: Vec::new(),
            out: Vec::with_capacity(1 << 20),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs.max(1))
    }

    fn connect(&mut self) -> Result<&mut Conn, SendError> {
        if self.conn.is_none() {
            let addr = &self.cfg.address;
            let sock_addr = addr
                .to_socket_addrs()
                .map_err(|e| connect_err(addr, e))?
                .next()
                .ok_or_else(|| connect_err(addr, "no address"))?;
            let conn = match self.cfg.transport {
                SyslogTransport::Udp => {
                    let local = if sock_addr.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let s = UdpSocket::bind(local).map_err(|e| connect_err(addr, e))?;
                    s.connect(sock_addr).map_err(|e| connect_err(addr, e))?;
                    Conn::Udp(s)
                }
                SyslogTransport::Tcp | SyslogTransport::Tls => {
                    let s = TcpStream::connect_timeout(&sock_addr, self.timeout())
                        .map_err(|e| connect_err(addr, e))?;
                    s.set_nodelay(true).ok();
                    s.set_write_timeout(Some(self.timeout())).ok();
                    s.set_read_timeout(Some(self.timeout())).ok();
                    match &self.tls {
                        None => Conn::Tcp(s),
                        Some((config, name)) => {
                            let c = rustls::ClientConnection::new(config.clone(), name.clone())
                                .map_err(|e| connect_err(addr, e))?;
                            let mut tls = rustls::StreamOwned::new(c, s);
                            // Complete the handshake now, so certificate problems are connect errors.
                            while tls.conn.is_handshaking() {
                                tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                                    connect_err(addr, format!("TLS handshake: {e}"))
                                })?;
                            }
                            Conn::Tls(Box::new(tls))
                        }
                    }
                }
            };
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    fn encode(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        self.out.clear();
        for rec in batch {
            self.payload.clear();
            let event = match self.cfg.format {
                PayloadFormat::Json => {
                    self.payload.extend_from_slice(&rec.line);
                    None
                }
                PayloadFormat::Cef => {
                    let v = parse(rec)?;
                    self.payload
                        .extend_from_slice(cef::event_to_cef(&v).as_bytes());
                    Some(v)
                }
                PayloadFormat::Ocsf => {
                    let v = parse(rec)?;
                    serde_json::to_writer(&mut self.payload, &ocsf::event_to_ocsf(&v))
                        .map_err(|e| SendError::new(SendErrorKind::Encode, e.to_string()))?;
                    Some(v)
                }
            };
            self.message.clear();
            write_message(
                &self.header,
                rec,
                event.as_ref(),
                &self.payload,
                &mut self.message,
            );
            if self.cfg.transport == SyslogTransport::Udp {
                self.message.truncate(UDP_MAX);
                // Datagram boundaries frame UDP messages: keep each one's length as a prefix
                // in `out` so `send` can split them again.
                self.out
                    .extend_from_slice(&(self.message.len() as u32).to_le_bytes());
                self.out.extend_from_slice(&self.message);
            } else {
                octet_frame(&self.message, &mut self.out);
            }
        }
        Ok(())
    }
}

/// Whether the receiver closed a stream connection (read without blocking).
fn peer_closed(conn: &mut Conn) -> bool {
    match conn {
        Conn::Udp(_) => false,
        Conn::Tcp(s) => {
            if s.set_nonblocking(true).is_err() {
                return true;
            }
            let mut b = [0u8; 512];
            let closed = loop {
                match s.read(&mut b) {
                    Ok(0) => break true,
                    Ok(_) => continue, // receivers do not talk; discard
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            s.set_nonblocking(false).is_err() || closed
        }
        Conn::Tls(t) => {
            if t.sock.set_nonblocking(true).is_err() {
                return true;
            }
            let closed = loop {
                match t.conn.read_tls(&mut t.sock) {
                    Ok(0) => break true,
                    Ok(_) => match t.conn.process_new_packets() {
                        Ok(state) if state.peer_has_closed() => break true,
                        Ok(_) => {
                            // Drain plaintext (there should be none) to keep buffers bounded.
                            let mut b = [0u8; 512];
                            while matches!(t.conn.reader().read(&mut b), Ok(n) if n > 0) {}
                            continue;
                        }
                        Err(_) => break true,
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            t.sock.set_nonblocking(false).is_err() || closed
        }
    }
}

impl Sink for SyslogSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        self.encode(batch)?;
        if self.conn.as_mut().is_some_and(peer_closed) {
            self.conn = None;
        }
        let out = std::mem::take(&mut self.out);
        let addr = self.cfg.address.clone();
        let result = (|| {
            let conn = self.connect()?;
            let r = match conn {
                Conn::Udp(s) => {
                    let mut rest = &out[..];
                    let mut sent = Ok(());
                    while rest.len() >= 4 && sent.is_ok() {
                        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                        sent = s.send(&rest[4..4 + n]).map(drop);
                        rest = &rest[4 + n..];
                    }
                    sent
                }
                Conn::Tcp(s) => s.write_all(&out).and_then(|()| s.flush()),
                Conn::Tls(t) => t.write_all(&out).and_then(|()| t.flush()),
            };
            r.map_err(|e| SendError::new(SendErrorKind::Transport, format!("{addr}: {e}")))
        })();
        if result.is_err() {
            self.conn = None;
        }
        self.out = out;
        result
    }

    fn probe(&mut self) -> Result<String, SendError> {
        self.conn = None;
        self.connect()?;
        Ok(match self.cfg.transport {
            SyslogTransport::Udp => format!(
                "{} (udp: no answer expected; socket ready)",
                self.cfg.address
            ),
            SyslogTransport::Tcp => format!("{} accepted a TCP connection", self.cfg.address),
            SyslogTransport::Tls => {
                format!("{} completed a verified TLS handshake", self.cfg.address)
            }
        })
    }
}

fn host_part(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_part("logs.example.com:6514"), "logs.example.com");
        assert_eq!(host_part("[::1]:6514"), "::1");
        assert_eq!(host_part("127.0.0.1:514"), "127.0.0.1");
    }
}
