//! AWS Signature Version 4 for S3 requests (header-based, signed payload), with hmac + sha2:
//! the only AWS code mcptrail needs, so no SDK.
//!
//! ```text
//! canonical request = METHOD \n URI-encoded path \n sorted query \n lowercase headers \n
//!                     signed header names \n hex SHA-256 of the payload
//! string to sign    = AWS4-HMAC-SHA256 \n <amz date> \n <date>/<region>/s3/aws4_request \n
//!                     hex SHA-256 of the canonical request
//! signing key       = HMAC chain "AWS4"+secret → date → region → "s3" → "aws4_request"
//! ```
//!
//! The secret never leaves this module's HMAC; errors never quote it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Credentials for signing.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id (not secret, but kept out of messages anyway).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: crate::secret::Secret,
    /// Session token of temporary credentials (`x-amz-security-token`).
    pub session_token: Option<crate::secret::Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &"(redacted)")
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// RFC 3986 percent-encoding of everything but unreserved characters (and `/` when
/// `keep_slash`), as SigV4 wants.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A request to sign. `path` is already URI-encoded (as sent); `query` pairs are raw.
pub struct Request<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// `host[:port]` exactly as the Host header carries it.
    pub host: &'a str,
    /// The encoded path (`/bucket/key`).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers besides host, x-amz-date and x-amz-content-sha256 (names any case).
    pub headers: &'a [(&'a str, String)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// The canonical query string of `query`.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The headers to send with `req` (x-amz-date, x-amz-content-sha256, the session token if
/// any, and Authorization), signed at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.to_string()));
    headers.push((
        "x-amz-content-sha256".into(),
        req.payload_sha256.to_string(),
    ));
    if let Some(t) = &creds.session_token {
        headers.push((
            "x-amz-security-token".into(),
            String::from_utf8_lossy(t.expose()).into_owned(),
        ));
    }
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: String = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        canonical_headers,
        signed,
        req.payload_sha256
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = b"AWS4".to_vec();
    key.extend_from_slice(creds.secret_access_key.expose());
    let k_date = hmac(&key, date.as_bytes());
    key.iter_mut().for_each(|b| *b = 0);
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, to_sign.as_bytes()));
    // Only what signing adds: the caller sends its own headers itself (twice would be one
    // header with both values joined, and a different signature).
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| {
            k == "x-amz-date" || k == "x-amz-content-sha256" || k == "x-amz-security-token"
        })
        .collect();
    out.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of the Amazon S3 API reference (Signature Version 4,
    /// authorization header): its published signature.
    #[test]
    fn signs_the_s3_documentation_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: crate::secret::Secret::new(
                b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_vec(),
            ),
            session_token: None,
        };
        let empty = sha256_hex(b"");
        let headers = sign(
            &Request {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                headers: &[("Range", "bytes=0-9".to_string())],
                payload_sha256: &empty,
            },
            &creds,
            "us-east-1",
            "20130524T000000Z",
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encoding_and_query_order() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(
            canonical_query(&[("prefix", "x/y"), ("list-type", "2")]),
            "list-type=2&prefix=x%2Fy"
        );
    }
}
