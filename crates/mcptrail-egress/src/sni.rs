//! The server name (SNI) a TLS client asks for, read from the first bytes it sends through a
//! `CONNECT` tunnel. Nothing is decrypted or changed: the bytes are relayed as they came.
//!
//! Only a ClientHello that starts in the first TLS record is read (every mainstream client
//! sends it that way); anything else gives `None`.

/// The `server_name` of a TLS ClientHello at the start of `buf`, if there is one.
pub fn client_hello_sni(buf: &[u8]) -> Option<String> {
    let mut r = Reader(buf);
    // TLSPlaintext: content type handshake (22), legacy version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.skip(2)?;
    let record_len = r.u16()? as usize;
    let mut r = Reader(r.0.get(..record_len.min(r.0.len()))?);
    // Handshake: type client_hello (1), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?;
    r.skip(2 + 32)?; // legacy_version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let compression = r.u8()? as usize;
    r.skip(compression)?;
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len.min(r.0.len()))?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()? as usize;
        let mut body = Reader(exts.take(len)?);
        if ty != 0 {
            continue;
        }
        let list_len = body.u16()? as usize;
        let mut list = Reader(body.take(list_len)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let n = list.u16()? as usize;
            let name = list.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                let ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                return ok.then(|| name.to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal but well-formed ClientHello asking for `name`.
    pub(crate) fn client_hello(name: &str) -> Vec<u8> {
        let mut sni = Vec::new();
        let entry_len = 3 + name.len();
        sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name.as_bytes());
        let mut exts = Vec::new();
        // An unrelated extension first (supported_versions).
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        exts.extend_from_slice(&sni);
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[7u8; 32]);
        hello.push(32);
        hello.extend_from_slice(&[9u8; 32]);
        hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        hello.extend_from_slice(&[0x01, 0x00]);
        hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        hello.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&hello);
        let mut rec = vec![22, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_the_server_name() {
        assert_eq!(
            client_hello_sni(&client_hello("API.Example.com")).as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn not_tls_or_cut_short_is_none() {
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n\r\n"), None);
        let full = client_hello("example.com");
        for cut in 0..full.len() {
            assert_eq!(client_hello_sni(&full[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn odd_names_are_refused() {
        assert_eq!(client_hello_sni(&client_hello("a b\n")), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = client_hello_sni(&bytes);
        }

        #[test]
        fn survives_mutations(pos in 0usize..200, byte in any::<u8>()) {
            let mut b = client_hello("files.example.net");
            let p = pos % b.len();
            b[p] = byte;
            let _ = client_hello_sni(&b);
        }
    }
}
