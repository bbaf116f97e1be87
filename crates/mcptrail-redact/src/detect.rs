//! The built-in detectors: typed patterns over free text, each confirmed by a validator where
//! the type has one (Luhn for cards, mod 97 for IBANs, the JOSE header of a JWT, octet ranges
//! of an IP address, …), and the key-name rules that mark a JSON member's whole value as
//! secret. One `RegexSet` answers "could anything be here?" for a string in one pass; only the
//! detectors it names run their own regex and validator.
//!
//! Every pattern is ASCII-only (`(?-u:\b)`, `[0-9]`): a Unicode `\b` makes the whole set
//! hundreds of times slower as soon as the text holds one non-ASCII character.

use std::net::Ipv6Addr;

use regex::{Regex, RegexSet};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Payment card number (PAN): IIN range, length, Luhn.
    Card,
    /// International bank account number: country length, mod 97.
    Iban,
    /// E-mail address.
    Email,
    /// Phone number: E.164 (`+` and 8–15 digits) or a common national format.
    Phone,
    /// US social security number (`AAA-GG-SSSS`, valid ranges).
    UsSsn,
    /// IPv4 or IPv6 address.
    IpAddress,
    /// JSON Web Token (three base64url parts, a JOSE header with `alg`).
    Jwt,
    /// `Bearer …` / `Basic …` credentials in text.
    AuthHeader,
    /// A PEM private key block.
    PrivateKey,
    /// AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// AWS secret access key next to an AWS key name.
    AwsSecretKey,
    /// Google API key (`AIza…`) or OAuth access token (`ya29.…`).
    GcpKey,
    /// Azure storage account key, SAS signature, or Entra ID client secret.
    AzureKey,
    /// GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack token (`xox?-`, `xapp-`) or incoming-webhook URL.
    SlackToken,
    /// Stripe secret, restricted or webhook key.
    StripeKey,
    /// OpenAI-style API key (`sk-…`, `sk-proj-…`).
    OpenaiKey,
    /// Anthropic API key (`sk-ant-api03-…`).
    AnthropicKey,
    /// The password of a URL's user info (`scheme://user:password@host`).
    UrlPassword,
    /// `NAME=value` / `name: value` in text where the name says secret (`.env` files, logs).
    SecretAssignment,
    /// A JSON member whose name says secret (`password`, `token`, `authorization`, …).
    SecretKeyName,
    /// A high-entropy string in a member whose name suggests a credential.
    HighEntropySecret,
}

/// The data class a detector finds, which is also the event label it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Payment card data (`pci`).
    Pci,
    /// Personal data (`pii`).
    Pii,
    /// Credentials and keys (`secret`).
    Secret,
}

impl Class {
    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            Class::Pci => "pci",
            Class::Pii => "pii",
            Class::Secret => "secret",
        }
    }
}

impl Detector {
    /// Every built-in detector.
    pub const ALL: [Detector; 22] = [
        Detector::Card,
        Detector::Iban,
        Detector::Email,
        Detector::Phone,
        Detector::UsSsn,
        Detector::IpAddress,
        Detector::Jwt,
        Detector::AuthHeader,
        Detector::PrivateKey,
        Detector::AwsAccessKeyId,
        Detector::AwsSecretKey,
        Detector::GcpKey,
        Detector::AzureKey,
        Detector::GithubToken,
        Detector::SlackToken,
        Detector::StripeKey,
        Detector::OpenaiKey,
        Detector::AnthropicKey,
        Detector::UrlPassword,
        Detector::SecretAssignment,
        Detector::SecretKeyName,
        Detector::HighEntropySecret,
    ];

    /// The rule name recorded in `redactions[].rule` and used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::UsSsn => "us_ssn",
            Detector::IpAddress => "ip_address",
            Detector::Jwt => "jwt",
            Detector::AuthHeader => "auth_header",
            Detector::PrivateKey => "private_key",
            Detector::AwsAccessKeyId => "aws_access_key_id",
            Detector::AwsSecretKey => "aws_secret_key",
            Detector::GcpKey => "gcp_key",
            Detector::AzureKey => "azure_key",
            Detector::GithubToken => "github_token",
            Detector::SlackToken => "slack_token",
            Detector::StripeKey => "stripe_key",
            Detector::OpenaiKey => "openai_key",
            Detector::AnthropicKey => "anthropic_key",
            Detector::UrlPassword => "url_password",
            Detector::SecretAssignment => "secret_assignment",
            Detector::SecretKeyName => "secret_key_name",
            Detector::HighEntropySecret => "high_entropy_secret",
        }
    }

    /// The detector of a rule name.
    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// What it finds.
    pub fn class(self) -> Class {
        match self {
            Detector::Card => Class::Pci,
            Detector::Iban
            | Detector::Email
            | Detector::Phone
            | Detector::UsSsn
            | Detector::IpAddress => Class::Pii,
            _ => Class::Secret,
        }
    }
}

/// One detector's pattern. `group` is the capture group holding the sensitive part (0: the
/// whole match), so `scheme://user:` stays readable around a masked password.
#[derive(Clone)]
struct Pattern {
    detector: Detector,
    regex: Regex,
    group: usize,
}

/// A sensitive span of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub detector: Detector,
    /// Byte range in the text.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

/// The compiled built-in text detectors.
#[derive(Clone)]
pub struct TextDetectors {
    set: RegexSet,
    patterns: Vec<Pattern>,
}

impl std::fmt::Debug for TextDetectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextDetectors")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

/// Where a token may start: at a word boundary, or right after a JSON escape (`\n`, `\t`,
/// `\r`) in serialized JSON (a preview), where `\b` cannot see the boundary because the
/// escape's letter is glued to the token. `scan` leaves the escape out of the finding.
macro_rules! start {
    () => {
        r"(?:(?-u:\b)|\\[ntr])"
    };
}

/// (detector, pattern, capture group of the secret).
const PATTERNS: &[(Detector, &str, usize)] = &[
    (
        Detector::PrivateKey,
        r"-----BEGIN[A-Z0-9 ]{0,32}PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]{0,32}PRIVATE KEY(?: BLOCK)?-----|\z)",
        0,
    ),
    (
        Detector::Jwt,
        concat!(
            start!(),
            r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"
        ),
        0,
    ),
    (
        Detector::AnthropicKey,
        concat!(
            start!(),
            r"sk-ant-(?:api|admin|oat)[0-9]{2}-[A-Za-z0-9_-]{40,200}"
        ),
        0,
    ),
    (
        Detector::OpenaiKey,
        concat!(
            start!(),
            r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,200}"
        ),
        0,
    ),
    (
        Detector::StripeKey,
        concat!(
            start!(),
            r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,128}|",
            start!(),
            r"whsec_[0-9A-Za-z+/]{24,}"
        ),
        0,
    ),
    (
        Detector::GithubToken,
        concat!(
            start!(),
            r"gh[pousr]_[A-Za-z0-9]{36,251}(?-u:\b)|",
            start!(),
            r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}(?-u:\b)"
        ),
        0,
    ),
    (
        Detector::SlackToken,
        concat!(
            start!(),
            r"xox[abposre]-[0-9A-Za-z-]{10,250}|",
            start!(),
            r"xapp-[0-9]-[A-Z0-9]{6,}-[0-9]{6,}-[a-f0-9]{32,}|",
            r"https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"
        ),
        0,
    ),
    (
        Detector::AwsAccessKeyId,
        concat!(start!(), r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?-u:\b)"),
        0,
    ),
    (
        // `aws_secret_access_key = …`, `"SecretAccessKey": "…"` (STS and IAM JSON). The key may
        // end in `/` or `+`, so its end is checked by the validator, not by `\b`.
        Detector::AwsSecretKey,
        r"(?i-u:aws[A-Za-z0-9_. -]{0,24}?(?:secret|sk)|secret[_. -]?access[_. -]?key)[A-Za-z0-9_. -]{0,16}?[^A-Za-z0-9/+]{1,8}([A-Za-z0-9/+]{40})",
        1,
    ),
    (
        Detector::GcpKey,
        concat!(
            start!(),
            r"AIza[0-9A-Za-z_-]{35}|",
            start!(),
            r"ya29\.[0-9A-Za-z_-]{20,}"
        ),
        0,
    ),
    (
        // Storage account key, SAS signature, Entra ID client secret (`xxx8Q~…`; it may start
        // or end with `~`, `.` or `-`, so its edges are checked by the validator).
        Detector::AzureKey,
        r"(?i-u:AccountKey)=([A-Za-z0-9+/]{86}==)|[?&]sig=([A-Za-z0-9%+/=]{30,})|([A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})",
        0,
    ),
    (
        // The user may be empty (`redis://:password@host`).
        Detector::UrlPassword,
        r"(?-u:\b)[A-Za-z][A-Za-z0-9+.-]{1,20}://[^ \t\r\n/:@?#]{0,128}:([^ \t\r\n/@?#]{1,256})@[A-Za-z0-9.\[\]-]",
        1,
    ),
    (
        Detector::AuthHeader,
        concat!(
            r"(?i-u:",
            start!(),
            r"(?:bearer|basic|token))[ \t]{1,4}([A-Za-z0-9._~+/-]{8,}=*)"
        ),
        1,
    ),
    (
        // `NAME=value`, `name: value`, `"name": "value"` (also JSON-escaped, `\"name\": \"…\"`),
        // `name := "value"`, `'name' => 'value'`. The validator reads the name and the value.
        Detector::SecretAssignment,
        r#"(?i-u:[A-Za-z0-9_.-]{0,40}(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|private[_-]?key|access[_-]?key|encryption[_-]?key|signing[_-]?key|master[_-]?key|credentials?|auth))[A-Za-z0-9_.-]{0,24}(?:\\?["'])?[ \t]{0,3}(?::=|=>|[:=])[ \t]{0,3}(?:\\?["'])?([^ \t\r\n"'`,;&\\]{4,256})"#,
        1,
    ),
    (
        // One run of 13–19 digits, or the brands' groupings: 4-4-4-4(-3), 4-6-5 (Amex),
        // 4-6-4 (Diners).
        Detector::Card,
        concat!(
            start!(),
            r"(?:[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{3}|[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{13,19})(?-u:\b)"
        ),
        0,
    ),
    (
        // Compact, or in groups of four; the validator cuts at the country's length, so a word
        // after the last group (`… 3000 BIC …`) is not taken for part of it.
        Detector::Iban,
        concat!(
            start!(),
            r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?:[ ][A-Z0-9]{4}){2,7}(?:[ ][A-Z0-9]{1,4})?)(?-u:\b)"
        ),
        0,
    ),
    (
        Detector::Email,
        concat!(
            start!(),
            r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?-u:\b)"
        ),
        0,
    ),
    (
        Detector::UsSsn,
        concat!(start!(), r"[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
        0,
    ),
    (
        // E.164 (`+` and 8–15 digits); US `(415) 555-0134`, `415-555-0134`, `415.555.0134`;
        // national numbers with a trunk 0: UK `020 7946 0958`, `07700 900123`, DE
        // `030 12345678`, `(030) 1234567`, `030/1234567`, FR `01 23 45 67 89`, `06.12.34.56.78`.
        Detector::Phone,
        concat!(
            r"\+[1-9][0-9 ().-]{6,20}[0-9](?-u:\b)|",
            r"(?:\+?1[ ]?)?\([2-9][0-9]{2}\)[ ]?[2-9][0-9]{2}[-. ][0-9]{4}(?-u:\b)|",
            start!(),
            r"(?:1[-. ])?[2-9][0-9]{2}[-. ][2-9][0-9]{2}[-. ][0-9]{4}(?-u:\b)|",
            r"\(0[1-9][0-9]{1,4}\)[ ]?[0-9]{2,8}(?:[-. ][0-9]{2,8}){0,4}(?-u:\b)|",
            start!(),
            r"0[1-9][0-9]{0,4}[-. /][0-9]{2,8}(?:[-. ][0-9]{2,8}){0,4}(?-u:\b)"
        ),
        0,
    ),
    (
        // IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as Node.js reports remote addresses), IPv4,
        // IPv6.
        Detector::IpAddress,
        concat!(
            r"::[fF]{4}:(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|",
            start!(),
            r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|",
            r"(?:[0-9A-Fa-f]{1,4}:){1,7}(?:(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4}|:)|::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}"
        ),
        0,
    ),
];

impl TextDetectors {
    /// Compile the built-in detectors, leaving out those in `disabled`.
    pub fn new(disabled: &[Detector]) -> Self {
        let chosen: Vec<_> = PATTERNS
            .iter()
            .filter(|(d, _, _)| !disabled.contains(d))
            .collect();
        let set =
            RegexSet::new(chosen.iter().map(|(_, p, _)| *p)).expect("built-in patterns compile");
        let patterns = chosen
            .iter()
            .map(|(d, p, g)| Pattern {
                detector: *d,
                regex: Regex::new(p).expect("built-in patterns compile"),
                group: *g,
            })
            .collect();
        TextDetectors { set, patterns }
    }

    /// Every validated finding in `text`, in order, without overlaps. Findings that overlap
    /// become one, spanning them all, named after the most specific detector among them (a
    /// typed token before a card or an address, before a phone number, before a generic
    /// `NAME=value`), so that nothing of either is left readable.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        let mut shadows = Vec::new();
        if text.len() < 7 || !self.set.is_match(text) {
            return found;
        }
        for i in self.set.matches(text).iter() {
            let p = &self.patterns[i];
            for caps in p.regex.captures_iter(text) {
                // Azure's alternatives each capture their own group: take the first present.
                let m = if p.group == 0 && caps.len() > 1 {
                    (1..caps.len())
                        .find_map(|g| caps.get(g))
                        .unwrap_or_else(|| caps.get(0).expect("match"))
                } else {
                    match caps.get(p.group) {
                        Some(m) => m,
                        None => continue,
                    }
                };
                let whole = caps.get(0).expect("match");
                let mut at = Match {
                    text,
                    start: m.start(),
                    end: m.end(),
                    whole_start: whole.start(),
                    whole_end: whole.end(),
                };
                // A JSON escape matched in place of a word boundary is not part of the finding.
                if escape_at(text, at.whole_start) {
                    at.whole_start += 2;
                    at.start = at.start.max(at.whole_start);
                }
                if let Some((start, end)) = validate(p.detector, &at) {
                    found.push(Finding {
                        detector: p.detector,
                        start,
                        end,
                    });
                } else if p.detector == Detector::Iban {
                    if let Some(span) = iban_shape(&at) {
                        shadows.push(span);
                    }
                }
            }
        }
        // Digits inside an IBAN whose only fault is its check digits (a typo) are not a
        // card or a phone number.
        found.retain(|f| {
            !matches!(
                f.detector,
                Detector::Card | Detector::Phone | Detector::UsSsn
            ) || !shadows.iter().any(|&(s, e)| s <= f.start && f.end <= e)
        });
        resolve(found)
    }
}

/// How specific a detector is, for overlapping findings: lower wins.
fn rank(d: Detector) -> u8 {
    match d {
        Detector::SecretAssignment => 3,
        Detector::Phone => 2,
        Detector::UrlPassword
        | Detector::AuthHeader
        | Detector::Card
        | Detector::Iban
        | Detector::Email
        | Detector::UsSsn
        | Detector::IpAddress => 1,
        _ => 0,
    }
}

/// Merge overlapping findings: each group of them becomes one finding over their union, of
/// the most specific detector (then the earliest, then the longest), except that a credential
/// holding personal data names the finding.
fn resolve(mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(found.len());
    let mut i = 0;
    while i < found.len() {
        let mut end = found[i].end;
        let mut j = i + 1;
        while j < found.len() && found[j].start < end {
            end = end.max(found[j].end);
            j += 1;
        }
        let group = &found[i..j];
        let mut best = group
            .iter()
            .min_by_key(|f| (rank(f.detector), f.start, usize::MAX - (f.end - f.start)))
            .expect("a group is never empty");
        // Personal data inside a credential (`p4ss@w0rd.xy` in `DB_PASSWORD=…`) is part of
        // the credential.
        if best.detector.class() != Class::Secret {
            if let Some(outer) = group.iter().find(|f| {
                f.detector.class() == Class::Secret && f.start <= best.start && best.end <= f.end
            }) {
                best = outer;
            }
        }
        out.push(Finding {
            detector: best.detector,
            start: found[i].start,
            end,
        });
        i = j;
    }
    out
}

/// A pattern's match: the sensitive part (`start..end`) and the whole match around it.
struct Match<'t> {
    text: &'t str,
    start: usize,
    end: usize,
    whole_start: usize,
    whole_end: usize,
}

impl Match<'_> {
    fn m(&self) -> &str {
        &self.text[self.start..self.end]
    }
    fn span(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// Whether a JSON escape (`\n`, `\t`, `\r`) starts at `i`.
fn escape_at(text: &str, i: usize) -> bool {
    let b = text.as_bytes();
    b.get(i) == Some(&b'\\') && matches!(b.get(i + 1), Some(b'n' | b't' | b'r'))
}

/// The character before `i`; the letter of a JSON escape (`\n`) reads as the space it is.
fn char_before(text: &str, i: usize) -> Option<char> {
    let c = text[..i].chars().next_back()?;
    if matches!(c, 'n' | 't' | 'r') && text[..i - 1].ends_with('\\') {
        Some(' ')
    } else {
        Some(c)
    }
}

fn char_after(text: &str, i: usize) -> Option<char> {
    text[i..].chars().next()
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether a number ending at `i` goes on through a separator (`1.2`, `12-3`, `10:30`).
fn continues_after(text: &str, i: usize) -> bool {
    let b = text.as_bytes();
    matches!(b.get(i), Some(b'.' | b'-' | b'/' | b':' | b'_'))
        && b.get(i + 1).is_some_and(u8::is_ascii_digit)
}

/// Whether a number starting at `i` continues one before it through a separator.
fn continues_before(text: &str, i: usize) -> bool {
    let b = text.as_bytes();
    i >= 2 && matches!(b[i - 1], b'.' | b'-' | b'/' | b':' | b'_') && b[i - 2].is_ascii_digit()
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Luhn check over the digits.
pub fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !d.is_empty() && sum.is_multiple_of(10)
}

fn card_brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x));
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    match p1 {
        4 => matches!(n, 13 | 16 | 19),                    // Visa
        5 => (51..=55).contains(&p2) && n == 16,           // Mastercard
        2 => (222_100..=272_099).contains(&p6) && n == 16, // Mastercard 2-series
        3 => {
            (matches!(p2, 34 | 37) && n == 15)                              // Amex
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))  // JCB
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && (14..=19).contains(&n))
            // Diners
        }
        6 => {
            (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62)
                && (16..=19).contains(&n) // Discover, UnionPay
        }
        _ => false,
    }
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// ISO 13616 check: country length and mod 97 == 1.
pub fn iban_ok(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| compact.starts_with(c)) else {
        return false;
    };
    if compact.len() != len || !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let rearranged = compact[4..].bytes().chain(compact[..4].bytes());
    let mut rem = 0u32;
    for b in rearranged {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Shannon entropy of a string, bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether the random part of a token looks random rather than like a placeholder
/// (`ghp_xxxx…`, `T00000000/B00000000/XXXX…`): no one character is half of it, and it mixes
/// at least `classes` of lowercase, uppercase and digits.
fn random_enough(s: &str, classes: usize) -> bool {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    let kinds = [
        u8::is_ascii_lowercase as fn(&u8) -> bool,
        u8::is_ascii_uppercase,
        u8::is_ascii_digit,
    ]
    .iter()
    .filter(|f| s.bytes().any(|b| f(&b)))
    .count();
    !s.is_empty() && most * 2 <= s.len() && kinds >= classes
}

/// Values that name a secret without being one: placeholders, references, booleans.
fn placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.starts_with(['$', '<', '{', '*', '[', '(', '#'])
        || (v.starts_with('%') && v.ends_with('%'))
        || v.chars()
            .all(|c| matches!(c, '*' | 'x' | 'X' | '.' | '-' | '_' | '\u{2022}'))
        || lower.contains("xxxx")
        || elided(v)
        || [
            "your",
            "replace",
            "insert",
            "enter-",
            "enter_",
            "placeholder",
            "changeme",
            "change-me",
            "change_me",
            "[redacted",
            "[tok:",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
        || matches!(
            lower.as_str(),
            "null"
                | "nil"
                | "none"
                | "true"
                | "false"
                | "required"
                | "optional"
                | "string"
                | "redacted"
                | "undefined"
                | "example"
                | "secret"
                | "password"
                | "token"
        )
}

/// An example cut short to its prefix (`sk-...`, `sk-ant-api03-…`, `ghp_...`): nothing but a
/// prefix before the ellipsis. (A longer value before it is a secret shown in part.)
fn elided(v: &str) -> bool {
    let head = v.trim_end_matches(['.', '\u{2026}']);
    head.len() < v.len()
        && v.len() - head.len() >= if v.ends_with('\u{2026}') { 1 } else { 3 }
        && head
            .rsplit(['-', '_'])
            .next()
            .is_none_or(|last| last.len() < 6)
}

/// A path (`/run/secrets/db`, `~/.ssh/id_ed25519`), not a secret.
fn path_like(v: &str) -> bool {
    (v.starts_with('/') || v.starts_with("~/") || v.starts_with("./") || v.starts_with("../"))
        && v.matches('/').count() >= 2
        && !v.contains(['+', '='])
}

/// Code or a type where a value would be (`process.env.DB_PASSWORD`, `os.getenv(`,
/// `Option<String>`, `Optional[str]`, `str)` in a signature).
fn code_like(v: &str) -> bool {
    // `env`, `DB_PASSWORD`, `getenv`, `SecretKey`: one case, or camel case (no two capitals
    // in a row), not the random case of a password (`qIptyWQRbf`).
    let identifier = |s: &str| {
        let b = s.as_bytes();
        !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && b.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
            && (!b.iter().any(u8::is_ascii_lowercase)
                || !b
                    .windows(2)
                    .any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase()))
    };
    // A member path starts with a lowercase object or module (`process.`, `os.`, `self.`).
    let object = |s: &str| s.len() >= 2 && s.bytes().all(|b| b.is_ascii_lowercase());
    v.contains(['(', ')', '[', ']', '<', '>'])
        || (v.contains('.')
            && !v.bytes().any(|b| b.is_ascii_digit())
            && v.split('.').next().is_some_and(object)
            && v.split('.').all(identifier))
}

/// Words where a `name: value` pair of prose or an error message puts something that is not a
/// secret (`Invalid token: expired`, `token: must be a string`, `password: number`).
const NOT_VALUES: &[&str] = &[
    "expired",
    "invalid",
    "missing",
    "revoked",
    "malformed",
    "unauthorized",
    "forbidden",
    "rejected",
    "denied",
    "incorrect",
    "mismatch",
    "wrong",
    "empty",
    "unknown",
    "expected",
    "provided",
    "supplied",
    "present",
    "absent",
    "unset",
    "hidden",
    "masked",
    "encrypted",
    "removed",
    "deleted",
    "rotated",
    "valid",
    "verified",
    "accepted",
    "enabled",
    "disabled",
    "must",
    "should",
    "cannot",
    "number",
    "boolean",
    "bool",
    "integer",
    "text",
    "bytes",
    "object",
    "array",
    "list",
    "dict",
    "blank",
    "default",
];

/// The secret words of an assignment's name (as in its pattern), lowercased.
const ASSIGNMENT_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "private-key",
    "accesskey",
    "access_key",
    "access-key",
    "encryptionkey",
    "encryption_key",
    "encryption-key",
    "signingkey",
    "signing_key",
    "signing-key",
    "masterkey",
    "master_key",
    "master-key",
    "credential",
    "credentials",
    "auth",
];

/// Words after the secret word that make the name a setting about the secret or an identity,
/// not the secret (`PASSWORD_MIN_LENGTH`, `token_url`, `auth_method`, `SMTP_AUTH_USER`).
const SETTING_WORDS: &[&str] = &[
    "len",
    "length",
    "min",
    "max",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "expire",
    "timeout",
    "count",
    "limit",
    "size",
    "url",
    "uri",
    "endpoint",
    "file",
    "path",
    "dir",
    "type",
    "name",
    "header",
    "ref",
    "policy",
    "rotation",
    "enabled",
    "required",
    "hint",
    "field",
    "param",
    "format",
    "mode",
    "version",
    "age",
    "lifetime",
    "scope",
    "scopes",
    "audience",
    "issuer",
    "method",
    "provider",
    "id",
    "user",
    "username",
    "email",
    "login",
    "account",
];

/// Words before `token` that make it something other than a credential (`progressToken`,
/// `nextPageToken`, `max_token`).
const NOT_CREDENTIAL_TOKENS: &[&str] = &[
    "progress",
    "page",
    "pagination",
    "continuation",
    "cancellation",
    "cancel",
    "next",
    "prev",
    "previous",
    "sync",
    "max",
    "min",
    "num",
    "total",
    "prompt",
    "completion",
    "input",
    "output",
    "cached",
    "reasoning",
];

/// The words of a name: split at separators and at lowercase-to-uppercase steps, lowercased.
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            prev_lower = false;
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Whether the name of a `name = value` pair says the value is a secret.
fn assignment_name_ok(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    // The last secret word of the name (the pattern found one).
    let Some((at, word)) = ASSIGNMENT_WORDS
        .iter()
        .filter_map(|w| lower.rfind(w).map(|i| (i, *w)))
        .max_by_key(|(i, w)| (i + w.len(), w.len()))
    else {
        return false;
    };
    let end = at + word.len();
    let tail = &name[end..];
    // The word goes on (`tokenizer`, `Authorization`, `author`, `passwordless`); a plural is
    // a count (`max_tokens`), except for `credentials`, `passwords`, `secrets`; `secretkey`
    // is a key.
    if let Some(next) = tail.chars().next().filter(char::is_ascii_alphabetic) {
        let last = name[..end].chars().next_back().unwrap_or(' ');
        let continues = last.is_ascii_lowercase() == next.is_ascii_lowercase();
        let plural = tail.eq_ignore_ascii_case("s") && word != "token";
        // `secretkey`, `authkey`: run together, still a secret.
        let key = tail.get(..3).is_some_and(|k| k.eq_ignore_ascii_case("key"));
        if continues && !plural && !key {
            return false;
        }
    }
    if name_words(tail)
        .iter()
        .any(|w| SETTING_WORDS.contains(&w.as_str()))
    {
        return false;
    }
    let before = name_words(&name[..at]);
    !(word == "token"
        && before
            .last()
            .is_some_and(|w| NOT_CREDENTIAL_TOKENS.contains(&w.as_str())))
}

/// Whether the value of a `name = value` pair can be a secret.
fn assignment_value_ok(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    !placeholder(v)
        && !v.contains("://")
        && !path_like(v)
        && !code_like(v)
        && !NOT_VALUES.contains(&lower.as_str())
}

/// Whether a PEM block holds key material: after the `-----BEGIN … KEY-----` line (and any
/// armor headers, `Proc-Type: 4,ENCRYPTED`, `Version: …`), a line of base64, not a mention
/// of the header in prose. Lines end with a newline or a JSON `\n` escape.
fn pem_body_ok(m: &str) -> bool {
    let Some(begin) = m.find("BEGIN") else {
        return false;
    };
    let Some(close) = m[begin..].find("-----") else {
        return false;
    };
    let mut rest = &m[begin + close + 5..];
    loop {
        let before = rest.len();
        rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        while let Some(r) = rest
            .strip_prefix("\\n")
            .or_else(|| rest.strip_prefix("\\r"))
        {
            rest = r;
        }
        let line_end = rest
            .find('\n')
            .into_iter()
            .chain(rest.find("\\n"))
            .min()
            .unwrap_or(rest.len());
        if rest[..line_end].contains(": ") {
            rest = &rest[line_end..];
        } else if rest.len() == before {
            break;
        }
    }
    let run = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .count();
    run >= 16 || (run > 0 && run == rest.len())
}

/// Validate a match; the span of the finding (it may be narrower than the match).
fn validate(d: Detector, at: &Match<'_>) -> Option<(usize, usize)> {
    let text = at.text;
    let m = at.m();
    let ok = match d {
        Detector::Card => validate_card(at),
        Detector::Iban => return validate_iban(at),
        Detector::PrivateKey => pem_body_ok(m),
        Detector::Email => {
            let (local, domain) = m.rsplit_once('@')?;
            let tld = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
            // The token the address is in: `scheme://user@host`, `scheme://u:p%40ss@host`
            // name a URL's user, not an address.
            let token_start = text[..at.start]
                .rfind(|c: char| {
                    c.is_ascii_whitespace()
                        || matches!(c, '"' | '\'' | '<' | '(' | '[' | '{' | ',' | ';' | '=')
                })
                .map_or(0, |i| i + 1);
            // `git@github.com:org/repo.git`: an SSH remote.
            let scp = char_after(text, at.end) == Some(':')
                && text[at.end + 1..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '~');
            // A token going on past the "domain" (`p4@ss.Wd+x9`, a password) is no address.
            let glued = char_after(text, at.end).is_some_and(|c| {
                matches!(
                    c,
                    '+' | '/' | '=' | '!' | '#' | '$' | '%' | '*' | '^' | '~' | '-'
                )
            }) && text[at.end + 1..].starts_with(|c: char| c.is_ascii_alphanumeric());
            // A top-level domain is written in one case (`.com`, `.COM`), not `.aP`.
            let one_case = !(tld.len() > 1
                && domain.rsplit('.').next().is_some_and(|t| {
                    t.bytes().any(|b| b.is_ascii_lowercase())
                        && t.bytes().any(|b| b.is_ascii_uppercase())
                }));
            one_case
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && !matches!(
                    tld.as_str(),
                    "png"
                        | "jpg"
                        | "jpeg"
                        | "gif"
                        | "svg"
                        | "webp"
                        | "js"
                        | "ts"
                        | "css"
                        | "map"
                        | "json"
                )
                && char_before(text, at.start) != Some('/')
                && !text[token_start..at.start].contains("://")
                && !scp
                && !glued
        }
        Detector::Phone => return validate_phone(at),
        Detector::UsSsn => {
            let ds = digits(m);
            let area = u32::from(ds[0]) * 100 + u32::from(ds[1]) * 10 + u32::from(ds[2]);
            let group = u32::from(ds[3]) * 10 + u32::from(ds[4]);
            let serial = ds[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
            area != 0
                && area != 666
                && area < 900
                && group != 0
                && serial != 0
                && !continues_before(text, at.start)
                && !continues_after(text, at.end)
        }
        Detector::IpAddress => {
            let before = char_before(text, at.start);
            let after = char_after(text, at.end);
            if m.contains(':') {
                let lower = m.bytes().any(|b| b.is_ascii_lowercase());
                let upper = m.bytes().any(|b| b.is_ascii_uppercase());
                m.matches(':').count() >= 2
                    && m.parse::<Ipv6Addr>().is_ok_and(|a| {
                        // Loopback and unspecified addresses identify no one.
                        !a.is_loopback()
                            && !a.is_unspecified()
                            && !a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
                    })
                    // Not inside a word or a longer run (`std::fs`, `Db::Add`, a MAC address).
                    && !before.is_some_and(|c| is_word(c) || matches!(c, ':' | '.'))
                    && !after.is_some_and(|c| is_word(c) || c == ':')
                    // Addresses have digits and one case; `Cafe::Bad` has neither.
                    && m.bytes().any(|b| b.is_ascii_digit())
                    && !(lower && upper)
                    // A clock time (`10:30:00`) is not an address.
                    && !m.split(':').all(|g| g.len() <= 2 && g.bytes().all(|b| b.is_ascii_digit()))
            } else {
                !matches!(before, Some('.' | '-'))
                    && !matches!(after, Some('.') if continues_after(text, at.end))
                    && m.split('.').all(|o| {
                        (o == "0" || !o.starts_with('0'))
                            && o.parse::<u16>().is_ok_and(|v| v <= 255)
                    })
                    && !m.starts_with("127.")
                    && m != "0.0.0.0"
            }
        }
        Detector::Jwt => {
            let header = m.split('.').next().unwrap_or("");
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header.trim_end_matches('='))
                .ok()
                .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
                .is_some_and(|h| h.get("alg").is_some())
        }
        Detector::AuthHeader => {
            let lower = text[at.whole_start..]
                .get(..6)
                .unwrap_or("")
                .to_ascii_lowercase();
            if lower.starts_with("basic") {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(m)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .is_some_and(|s| s.contains(':') && !s.contains(char::is_control))
            } else {
                // Random: digits, or both cases throughout (`Bearer authentication`,
                // `Bearer YOUR_TOKEN`, `TokenAuthentication` are words).
                let count = |f: fn(&u8) -> bool| m.bytes().filter(f).count();
                let (upper, lower) = (count(u8::is_ascii_uppercase), count(u8::is_ascii_lowercase));
                m.len() >= 16
                    && (m.bytes().any(|b| b.is_ascii_digit()) && upper + lower > 0
                        || upper >= 4 && lower >= 4)
                    && entropy(m) >= 3.0
            }
        }
        Detector::OpenaiKey => {
            // Random base62: both cases throughout, and (nearly always) digits; not a
            // kebab-case name (`sk-learn-Tutorial-notebook`).
            let count = |f: fn(&u8) -> bool| m.bytes().filter(f).count();
            let (upper, lower) = (count(u8::is_ascii_uppercase), count(u8::is_ascii_lowercase));
            !m.starts_with("sk-ant-")
                && upper > 0
                && lower > 0
                && (m.bytes().any(|b| b.is_ascii_digit()) || upper >= 4 && lower >= 4)
        }
        // The random part after `sk-ant-api03-`.
        Detector::AnthropicKey => random_enough(m.splitn(4, '-').nth(3).unwrap_or(m), 2),
        // The random part after the prefix (`sk_live_`, `whsec_`, `ghp_`, `github_pat_…_`).
        Detector::StripeKey | Detector::GithubToken => {
            random_enough(m.rsplit('_').next().unwrap_or(m), 2)
        }
        Detector::SlackToken => {
            if let Some(rest) = m.strip_prefix("https://") {
                random_enough(rest.rsplit('/').next().unwrap_or(""), 2)
            } else if m.starts_with("xox") {
                // Team and user ids come first: `xoxb-123…-456…-…`, not `xoxb-your-token`.
                m[5..].starts_with(|c: char| c.is_ascii_digit()) && random_enough(&m[5..], 2)
            } else {
                true
            }
        }
        Detector::AwsAccessKeyId => random_enough(&m[4..], 1),
        Detector::AwsSecretKey => {
            !char_after(text, at.end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '='))
                && m.bytes().any(|b| b.is_ascii_uppercase())
                && m.bytes().any(|b| b.is_ascii_lowercase())
        }
        Detector::GcpKey => {
            if let Some(random) = m.strip_prefix("AIza") {
                !char_after(text, at.end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                    && random_enough(random, 2)
            } else {
                true
            }
        }
        Detector::AzureKey => {
            let whole = &text[at.whole_start..at.whole_end];
            if whole.len() > 11 && whole[..11].eq_ignore_ascii_case("accountkey=") {
                true
            } else if whole.starts_with("?sig=") || whole.starts_with("&sig=") {
                m.len() >= 30
            } else {
                // An Entra ID client secret stands alone, not inside a longer run.
                let edge =
                    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '~' | '.' | '-');
                !char_before(text, at.start).is_some_and(edge)
                    && !char_after(text, at.end).is_some_and(|c| edge(c) && c != '.')
                    && random_enough(m, 2)
            }
        }
        Detector::UrlPassword => !placeholder(m),
        Detector::SecretAssignment => {
            let name = text[at.whole_start..at.start].trim_end_matches(|c: char| {
                matches!(c, '"' | '\'' | '\\' | ' ' | '\t' | ':' | '=' | '>')
            });
            // `scheme://user:password@host` is a URL's password, not an assignment.
            !text[..at.whole_start].ends_with("://")
                && assignment_name_ok(name)
                && assignment_value_ok(m)
        }
        Detector::SecretKeyName | Detector::HighEntropySecret => true,
    };
    ok.then_some(at.span())
}

fn validate_card(at: &Match<'_>) -> bool {
    let (text, m) = (at.text, at.m());
    let ds = digits(m);
    (13..=19).contains(&ds.len())
        // Not a run inside a longer number, a dotted version or address, a phone number.
        && char_before(text, at.start) != Some('+')
        && !continues_before(text, at.start)
        && !continues_after(text, at.end)
        && card_brand_ok(&ds)
        && luhn(&ds)
        && consistent_grouping(m)
}

/// The span of an IBAN of a known country and its exact length (its check digits aside).
fn iban_shape(at: &Match<'_>) -> Option<(usize, usize)> {
    let m = at.m();
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| m.starts_with(c))?;
    let compact = m.bytes().filter(|&b| b != b' ').count();
    (compact == len).then_some(at.span())
}

fn validate_iban(at: &Match<'_>) -> Option<(usize, usize)> {
    let m = at.m();
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| m.starts_with(c))?;
    // Cut at the country's length: the match may have run into the next word.
    let mut n = 0;
    let mut cut = None;
    for (i, b) in m.bytes().enumerate() {
        if b != b' ' {
            n += 1;
            if n == len {
                cut = Some(i + 1);
                break;
            }
        }
    }
    let cut = cut?;
    if cut < m.len() && m.as_bytes()[cut] != b' ' {
        return None;
    }
    iban_ok(&m[..cut]).then_some((at.start, at.start + cut))
}

/// A phone number; its span leaves out what the pattern ran on into: the hour of a clock time
/// after it (`030 12345678 10:30`), or, past 15 digits, the groups after an E.164 number.
fn validate_phone(at: &Match<'_>) -> Option<(usize, usize)> {
    let (text, start) = (at.text, at.start);
    let trim = |end: usize| {
        start
            + text[start..end]
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .len()
    };
    let mut end = at.end;
    if continues_after(text, end) && text.as_bytes()[end] == b':' {
        end = trim(start + text[start..end].rfind(' ')?);
    }
    loop {
        if phone_ok(text, start, end) {
            return Some((start, end));
        }
        let m = &text[start..end];
        match m.rfind(' ') {
            Some(sp) if m.starts_with('+') && digits(m).len() > 15 => end = trim(start + sp),
            _ => return None,
        }
    }
}

fn phone_ok(text: &str, start: usize, end: usize) -> bool {
    let at = Match {
        text,
        start,
        end,
        whole_start: start,
        whole_end: end,
    };
    let m = at.m();
    let ds = digits(m);
    if ds.is_empty() {
        return false;
    }
    let n = ds.len();
    let b = text.as_bytes();
    // Not the tail of a longer run of digit groups (a card, an account number), nor a part of
    // a longer token joined by separators (a UUID, a serial number).
    let in_run = !m.starts_with('+')
        && at.start >= 2
        && ((matches!(b[at.start - 1], b' ' | b'-' | b'.') && b[at.start - 2].is_ascii_digit())
            || (matches!(b[at.start - 1], b'-' | b'.' | b'/' | b'_')
                && b[at.start - 2].is_ascii_alphanumeric()));
    let joined_after = matches!(b.get(at.end), Some(b'-' | b'.' | b'/' | b'_' | b':'))
        && b.get(at.end + 1).is_some_and(u8::is_ascii_alphanumeric);
    if char_before(text, at.start).is_some_and(is_word)
        || in_run
        || joined_after
        || continues_before(text, at.start)
        || continues_after(text, at.end)
        || ds.iter().all(|&x| x == ds[0])
        || m.matches('(').count() != m.matches(')').count()
    {
        return false;
    }
    let parts: Vec<&str> = m
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .collect();
    if m.starts_with('+') {
        // A signed decimal (`+52.520008`) is a coordinate or a change, not a number to call.
        let decimal = parts.len() == 2 && !m.contains([' ', '-', '(']);
        (8..=15).contains(&n) && !decimal
    } else if m.starts_with('0') || m.starts_with("(0") {
        // A trunk prefix and 9–12 digits; a date (`01.02.2024 10`) is not one.
        let len = |i: usize| parts.get(i).map_or(0, |p| p.len());
        let date = (len(0) == 2 && len(1) == 2 && len(2) == 4)
            || (len(0) == 4 && len(1) == 2 && len(2) == 2);
        // A MAC address whose hex digits happen to be decimal (`00-19-…` six pairs, Cisco's
        // `0680.2935.5776`), not a phone number.
        let mac = (parts.len() >= 6 && parts.iter().all(|p| p.len() == 2))
            || (parts.len() == 3 && parts.iter().all(|p| p.len() == 4) && m.contains('.'));
        (9..=12).contains(&n) && !date && !mac && !is_ssn_shape(m)
    } else {
        // North American: area code, exchange, line (and an optional 1).
        n == 10 || (n == 11 && ds[0] == 1)
    }
}

fn is_ssn_shape(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() == 11 && b[3] == b'-' && b[6] == b'-'
}

/// A card number is written as one run of digits or in groups split by one kind of
/// separator (`4111 1111 1111 1111`, `3782-822463-10005`), not with separators anywhere.
fn consistent_grouping(m: &str) -> bool {
    let seps: Vec<char> = m.chars().filter(|c| !c.is_ascii_digit()).collect();
    if seps.is_empty() {
        return true;
    }
    if seps.iter().any(|&c| c != seps[0]) {
        return false;
    }
    let groups: Vec<usize> = m.split(seps[0]).map(str::len).collect();
    groups.len() >= 3 && groups.len() <= 5 && groups.iter().all(|&g| (3..=6).contains(&g))
}

/// Key names whose value is a secret whatever it looks like (compared after lowercasing and
/// removing `_`, `-`, `.` and spaces).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authtoken",
    "sessiontoken",
    "bearertoken",
    "authorization",
    "proxyauthorization",
    "cookie",
    "setcookie",
    "apikey",
    "xapikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "secretaccesskey",
    "awssecretaccesskey",
    "credentials",
    "credential",
    "jwt",
    "otp",
    "totp",
    "cvv",
    "cvc",
    "cvv2",
    "pin",
    "ssn",
    "connectionstring",
    "dsn",
    "signature",
    "xauthtoken",
    "xamzsecuritytoken",
    "webhooksecret",
    "signingkey",
    "encryptionkey",
];

/// Suffixes that make a key name secret (`db_password`, `github_token`, `x-api-key`).
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "credentials",
    "passphrase",
    "connectionstring",
];

/// Names that end like a secret's but hold none: MCP's `progressToken`, the pagination
/// tokens of Google and AWS APIs, .NET's `cancellationToken`.
const NOT_SECRET_KEYS: &[&str] = &[
    "progresstoken",
    "pagetoken",
    "nextpagetoken",
    "prevpagetoken",
    "previouspagetoken",
    "paginationtoken",
    "continuationtoken",
    "cancellationtoken",
    "nexttoken",
    "synctoken",
];

/// Fragments that make a key name *suggest* a credential: its value is checked for entropy.
const HINT_FRAGMENTS: &[&str] = &[
    "key", "secret", "token", "auth", "cred", "pass", "sig", "cert", "session",
];

/// Words that hold a hint fragment without being about credentials (`author`, `keyboard`,
/// `passenger`, `signal`, `design`, `assignee`, `certain`).
const HINT_FALSE_FRIENDS: &[&str] = &[
    "author",
    "keyboard",
    "keyword",
    "keynote",
    "keyframe",
    "monkey",
    "hockey",
    "turkey",
    "donkey",
    "jockey",
    "whiskey",
    "passenger",
    "passage",
    "compass",
    "bypass",
    "passive",
    "signal",
    "design",
    "assign",
    "consign",
    "resign",
    "insignia",
    "signed",
    "certain",
    "concert",
];

/// A key name lowercased without separators.
pub fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a member with this (normalised) name holds a secret whatever its value.
pub fn secret_key(normalised: &str) -> bool {
    !NOT_SECRET_KEYS.contains(&normalised)
        && (SECRET_KEYS.contains(&normalised)
            || SECRET_SUFFIXES.iter().any(|s| normalised.ends_with(s)))
}

/// Whether a member with this (normalised) name suggests a credential.
pub fn hint_key(normalised: &str) -> bool {
    // `authorization…` is about credentials even though it holds `author`.
    if normalised.contains("authoriz") {
        return true;
    }
    let mut rest = normalised.to_string();
    for w in HINT_FALSE_FRIENDS {
        if rest.contains(w) {
            rest = rest.replace(w, " ");
        }
    }
    HINT_FRAGMENTS.iter().any(|f| rest.contains(f))
}

/// A value that looks like a random credential: long, no spaces, high entropy, and not
/// something else with many distinct characters (a UUID, a timestamp, a path, an address,
/// words and numbers joined by separators like `material-ui-v5.16.7`).
pub fn high_entropy(v: &str) -> bool {
    v.len() >= 16
        && v.len() <= 4096
        && !v.contains(char::is_whitespace)
        && !placeholder(v)
        && !v.contains("://")
        && !uuid_like(v)
        && !timestamp_like(v)
        && !path_like(v)
        && !email_like(v)
        && !wordy(v)
        // Hex carries at most 4 bits a character: a random 40-digit one is often below 3.6.
        && entropy(v) >= if v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) { 3.0 } else { 3.5 }
}

fn uuid_like(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn timestamp_like(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
}

fn email_like(v: &str) -> bool {
    v.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    })
}

/// Lowercase words and numbers joined by separators (`user:1234:profile`,
/// `prod/db/credentials`, `morning-standup-notes`): no part mixes letters and digits or cases.
fn wordy(v: &str) -> bool {
    v.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .all(|p| {
            p.len() <= 3
                || p.bytes().all(|b| b.is_ascii_lowercase())
                || p.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(t: &str) -> Vec<(Detector, String)> {
        TextDetectors::new(&[])
            .scan(t)
            .into_iter()
            .map(|f| (f.detector, t[f.start..f.end].to_string()))
            .collect()
    }

    #[test]
    fn validators() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_ok("DE89370400440532013000"));
        assert!(!iban_ok("DE89370400440532013001"));
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("q8Zr2LmX0pVb7NcW") > 3.5);
    }

    #[test]
    fn finds_and_skips() {
        assert_eq!(
            kinds("pay 4111 1111 1111 1111 now"),
            [(Detector::Card, "4111 1111 1111 1111".into())]
        );
        assert!(kinds("order 4111 1111 1111 1112").is_empty());
        assert_eq!(
            kinds("mail bob@example.com"),
            [(Detector::Email, "bob@example.com".into())]
        );
        assert!(kinds("icon@2x.png").is_empty());
        assert_eq!(
            kinds("ssn 123-45-6789"),
            [(Detector::UsSsn, "123-45-6789".into())]
        );
        assert!(kinds("ssn 666-45-6789").is_empty());
        assert_eq!(
            kinds("from 10.1.2.3 ok"),
            [(Detector::IpAddress, "10.1.2.3".into())]
        );
        assert!(kinds("version 1.2.3.4.5").is_empty());
        assert!(kinds("at 10:30:00 on 2026-11-25").is_empty());
        assert_eq!(
            kinds("addr 2001:db8::1 ok"),
            [(Detector::IpAddress, "2001:db8::1".into())]
        );
        assert_eq!(
            kinds("call +44 20 7946 0958"),
            [(Detector::Phone, "+44 20 7946 0958".into())]
        );
        assert_eq!(
            kinds("postgres://app:s3cr3tPW@db:5432/x"),
            [(Detector::UrlPassword, "s3cr3tPW".into())]
        );
        assert_eq!(
            kinds("DB_PASSWORD=hunter2x\n"),
            [(Detector::SecretAssignment, "hunter2x".into())]
        );
        assert!(kinds("password: ${DB_PASSWORD}").is_empty());
        assert_eq!(
            kinds("key AKIAIOSFODNN7EXAMPLE."),
            [(Detector::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE".into())]
        );
        assert!(kinds("use the Bearer authentication scheme").is_empty());
        assert!(kinds("caf\u{e9} 4111111111111111 \u{1F600}").len() == 1);
    }

    #[test]
    fn edges_of_a_match() {
        // A JSON escape glued to a token (`\nghp_…` in a serialized preview) is not part of it.
        let gh = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
        assert_eq!(
            kinds(&format!(r#"{{"text":"notes\n{gh}\n"}}"#)),
            [(Detector::GithubToken, gh)]
        );
        // The word after a grouped IBAN, the full stop after a phone number or an SSN.
        assert_eq!(
            kinds("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX"),
            [(Detector::Iban, "DE89 3704 0044 0532 0130 00".into())]
        );
        assert_eq!(
            kinds("call (415) 555-0134."),
            [(Detector::Phone, "(415) 555-0134".into())]
        );
        assert_eq!(
            kinds("SSN 123-45-6789."),
            [(Detector::UsSsn, "123-45-6789".into())]
        );
        assert_eq!(
            kinds("missed call from 030 12345678 10:30"),
            [(Detector::Phone, "030 12345678".into())]
        );
        // A typed token inside a `NAME=value` keeps its type.
        assert_eq!(
            kinds("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\\n"),
            [(Detector::AwsAccessKeyId, "AKIAIOSFODNN7EXAMPLE".into())]
        );
    }

    #[test]
    fn names_and_values_that_are_not_secrets() {
        for t in [
            "Authorization: Bearer <token>",
            "author: Jane Doe",
            "max_tokens: 4096",
            "\"progressToken\": \"op-17\"",
            "PASSWORD_MIN_LENGTH=12",
            "const password = process.env.DB_PASSWORD;",
            "api_key = os.getenv(\"API_KEY\")",
            "OPENAI_API_KEY=sk-...",
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "std::fs::read_to_string",
            "git@github.com:example/repo.git",
            "Listening on http://127.0.0.1:3000",
            "The key file must start with -----BEGIN OPENSSH PRIVATE KEY----- and end with END.",
        ] {
            assert!(kinds(t).is_empty(), "{t}: {:?}", kinds(t));
        }
        assert!(!secret_key("progresstoken") && secret_key("accesstoken"));
        assert!(
            !hint_key("author") && !hint_key("keyboardlayout") && hint_key("authorizationcode")
        );
        assert!(!high_entropy("7ffff0b4-2c93-4e30-bc3b-47d263d12931"));
        assert!(!high_entropy("2025-03-14T09:26:53.589Z"));
        assert!(high_entropy("41e0d0e71fd32c759fc2c14119294cf2f420049c"));
    }
}
