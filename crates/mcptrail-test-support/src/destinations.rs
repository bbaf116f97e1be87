//! Outbound destinations for the egress proxy's tests: real servers on loopback, standing in
//! for the sites a tool server calls. A plain HTTP file server (`python3 -m http.server`) and
//! a TLS server (`openssl s_server -www`, with a self-signed certificate for the name the
//! test uses). Each is killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_listening};

/// A running destination server.
#[derive(Debug)]
pub struct Destination {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Destination {
    /// `python3 -m http.server` serving the files of `root`.
    pub fn http_files(root: &Path) -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning python3 -m http.server: {e}"));
        let d = Destination {
            child,
            port,
            _dir: None,
        };
        wait_listening(port, "python3 -m http.server");
        d
    }

    /// `openssl s_server -www` with a fresh self-signed certificate for `name`: it answers
    /// any HTTPS GET with a status page.
    pub fn tls(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running openssl req: {e}"));
        assert!(made.success(), "openssl req failed: {made}");
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning openssl s_server: {e}"));
        let d = Destination {
            child,
            port,
            _dir: Some(dir),
        };
        wait_listening(port, "openssl s_server");
        d
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
