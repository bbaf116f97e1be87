//! The built-in detectors: typed patterns over free text, each confirmed by a validator where
//! the type has one (Luhn for cards, mod 97 for IBANs, the JOSE header of a JWT, octet ranges
//! of an IP address, …), and the key-name rules that mark a JSON member's whole value as
//! secret.
//!
//! The scan never runs the patterns over the whole text. Three cheap passes find where a
//! finding could start: packed (SIMD Teddy) searches for the literal anchors of the typed
//! detectors (`eyJ`, `ghp_`, `AKIA`, `://`, …) and, over a case-folded copy, the secret words
//! in every casing (`pass`, `toke`, `key`, `bear`, …); `memchr` for `@` and `~`; and the
//! groups of digits, found 64 bytes at a time. A gate at each candidate checks, with a few byte
//! comparisons, what its detector's pattern needs there (a long enough token after `ghp_`, a
//! separator after `password`, a card's digit groups, two colons around an IPv6 group, …);
//! nearly all candidates stop there.
//! Where a gate passes, the detector's regex runs over a region no match of it can cross —
//! the run of the characters its pattern is made of, or the reach of its pattern from the
//! anchor — with the text around as context for `\b`. Every match of a pattern lies in such a
//! region, so the findings are exactly those of running every pattern over the whole text,
//! which the tests check against a reference that does.
//!
//! Every pattern is ASCII-only (`(?-u:\b)`, `[0-9]`): a Unicode `\b` makes a regex hundreds of
//! times slower as soon as the text holds one non-ASCII character.

use std::net::Ipv6Addr;

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, Input, MatchKind, Span};
use regex::Regex;

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
    /// Whether the pattern has capture groups (else a plain `find` gives the match).
    groups: bool,
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
    /// By position in [`PATTERNS`]; `None` when disabled.
    patterns: Vec<Option<Pattern>>,
    /// Bit `i`: pattern `i` is enabled.
    on: u32,
    anchors: Anchors,
}

impl std::fmt::Debug for TextDetectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextDetectors")
            .field("patterns", &self.on.count_ones())
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

// Positions in `PATTERNS` (checked by `tests::pattern_positions`).
const PEM: u8 = 0;
const JWT: u8 = 1;
const ANTHROPIC: u8 = 2;
const OPENAI: u8 = 3;
const STRIPE: u8 = 4;
const GITHUB: u8 = 5;
const SLACK: u8 = 6;
const AWS_ID: u8 = 7;
const AWS_SECRET: u8 = 8;
const GCP: u8 = 9;
const AZURE: u8 = 10;
const URL_PASSWORD: u8 = 11;
const AUTH_HEADER: u8 = 12;
const ASSIGNMENT: u8 = 13;
const CARD: u8 = 14;
const IBAN: u8 = 15;
const EMAIL: u8 = 16;
const SSN: u8 = 17;
const PHONE: u8 = 18;
const IP: u8 = 19;

/// What a literal anchor of the packed search stands for.
#[derive(Debug, Clone, Copy)]
enum Anchor {
    Pem,
    Jwt,
    SkDash,
    Stripe,
    Whsec,
    Github,
    GithubPat,
    Xox,
    Xapp,
    AwsId,
    Aiza,
    Ya29,
    Sig,
    Scheme,
    Word(Word),
}

/// The start of a secret word, found in any casing.
#[derive(Debug, Clone, Copy)]
enum Word {
    /// `password`, `passwd`, `passphrase`.
    Pas,
    Pwd,
    /// `secret`.
    Sec,
    /// `token`.
    Tok,
    /// The end of `api_key`, `private-key`, `accesskey`, … and `AccountKey`.
    Key,
    /// `credential`.
    Cre,
    /// `auth`.
    Aut,
    /// `bearer`.
    Bea,
    /// `basic`.
    Bas,
    Aws,
}

/// The typed detectors' anchors, case-sensitive as in their patterns.
const TYPED_ANCHORS: &[(&str, Anchor)] = &[
    ("-----BEGIN", Anchor::Pem),
    ("eyJ", Anchor::Jwt),
    ("sk-", Anchor::SkDash),
    ("sk_", Anchor::Stripe),
    ("rk_", Anchor::Stripe),
    ("whsec_", Anchor::Whsec),
    ("ghp_", Anchor::Github),
    ("gho_", Anchor::Github),
    ("ghu_", Anchor::Github),
    ("ghs_", Anchor::Github),
    ("ghr_", Anchor::Github),
    ("github_pat_", Anchor::GithubPat),
    ("xox", Anchor::Xox),
    ("xapp-", Anchor::Xapp),
    ("AKIA", Anchor::AwsId),
    ("ASIA", Anchor::AwsId),
    ("ABIA", Anchor::AwsId),
    ("ACCA", Anchor::AwsId),
    ("AIza", Anchor::Aiza),
    ("ya29.", Anchor::Ya29),
    ("?sig=", Anchor::Sig),
    ("&sig=", Anchor::Sig),
    ("://", Anchor::Scheme),
];

/// The secret words' first letters (all of them for the short ones), found in any casing.
const WORD_ANCHORS: &[(&str, Word)] = &[
    ("pass", Word::Pas),
    ("pwd", Word::Pwd),
    ("secr", Word::Sec),
    ("toke", Word::Tok),
    ("key", Word::Key),
    ("cred", Word::Cre),
    ("auth", Word::Aut),
    ("bear", Word::Bea),
    ("basi", Word::Bas),
    ("aws", Word::Aws),
];

/// ASCII letters to lowercase (and `@[\\]^_` to `` `{|}~\x7f ``): one `OR` a byte, so a copy
/// of the text folded this way is quick to make, and a search of it for lowercase words finds
/// them in every casing.
fn fold(b: u8) -> u8 {
    b | 0x20
}

/// Text is folded for the literal search a chunk at a time (plus the overlap a pattern needs).
const FOLD_CHUNK: usize = 4096;

thread_local! {
    static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One literal search: Teddy where the CPU has it, else an Aho-Corasick automaton.
#[derive(Clone)]
struct Literals {
    packed: Option<packed::Searcher>,
    automaton: AhoCorasick,
}

impl Literals {
    fn new(patterns: &[Vec<u8>], fat: bool) -> Literals {
        let packed = |fat: Option<bool>| {
            packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .only_teddy_fat(fat)
                .builder()
                .extend(patterns)
                .build()
        };
        Literals {
            // Fat Teddy (AVX2, 16 buckets) keeps more patterns apart than slim Teddy's 8.
            packed: if fat { packed(Some(true)) } else { None }.or_else(|| packed(None)),
            automaton: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(Some(AhoCorasickKind::DFA))
                .build(patterns)
                .expect("fixed patterns"),
        }
    }

    fn minimum_len(&self) -> usize {
        self.packed
            .as_ref()
            .map_or(0, packed::Searcher::minimum_len)
    }

    fn find(&self, hay: &[u8], from: usize) -> Option<aho_corasick::Match> {
        match &self.packed {
            Some(p) => p.find_in(hay, Span::from(from..hay.len())),
            None => self.automaton.find(Input::new(hay).span(from..hay.len())),
        }
    }
}

/// The literal search for the anchors, over a folded copy of the text: the typed anchors
/// (folded too, then compared with the text as it is, in their own case) and the secret words.
/// Two searches of a few patterns each are quicker than one of them all (Teddy's buckets stay
/// apart).
#[derive(Clone)]
struct Anchors {
    typed: Literals,
    words: Literals,
    longest: usize,
}

impl Anchors {
    fn new() -> Anchors {
        let typed: Vec<Vec<u8>> = TYPED_ANCHORS
            .iter()
            .map(|(p, _)| p.bytes().map(fold).collect())
            .collect();
        let words: Vec<Vec<u8>> = WORD_ANCHORS
            .iter()
            .map(|(w, _)| w.as_bytes().to_vec())
            .collect();
        Anchors {
            typed: Literals::new(&typed, true),
            words: Literals::new(&words, false),
            longest: typed.iter().chain(&words).map(Vec::len).max().unwrap_or(1),
        }
    }

    /// Every anchor in `t` (at every start, even inside another anchor): `f(kind, start,
    /// end)`; the typed ones first, each kind in order.
    fn each(&self, t: &[u8], mut f: impl FnMut(Anchor, usize, usize)) {
        // Teddy wants a haystack of some length: a short text is padded with NULs, which no
        // anchor holds.
        let min = self.typed.minimum_len().max(self.words.minimum_len());
        FOLDED.with_borrow_mut(|buf| {
            let overlap = self.longest - 1;
            let (mut base, mut used) = (0, 0);
            loop {
                let end = (base + FOLD_CHUNK + overlap).min(t.len());
                buf.clear();
                buf.extend(t[base..end].iter().map(|&b| fold(b)));
                if buf.len() < min {
                    buf.resize(min, 0);
                }
                used = used.max(buf.len());
                let last = end == t.len();
                // Anchors starting in the overlap are the next chunk's.
                let limit = if last { end - base } else { FOLD_CHUNK };
                for (lits, typed) in [(&self.typed, true), (&self.words, false)] {
                    let mut from = 0;
                    while from < limit {
                        let Some(m) = lits.find(buf, from) else {
                            break;
                        };
                        if m.start() >= limit {
                            break;
                        }
                        let k = base + m.start();
                        let i = m.pattern().as_usize();
                        if typed {
                            let (p, a) = TYPED_ANCHORS[i];
                            if t[k..].starts_with(p.as_bytes()) {
                                f(a, k, base + m.end());
                            }
                        } else {
                            f(Anchor::Word(WORD_ANCHORS[i].1), k, base + m.end());
                        }
                        from = m.start() + 1;
                    }
                }
                if last {
                    break;
                }
                base += FOLD_CHUNK;
            }
            // Leave no copy of the text behind.
            buf.clear();
            buf.resize(used, 0);
        });
    }
}

// Byte classes of the scan.
/// What the typed tokens, e-mail addresses and Azure secrets are made of (with the `\` of a
/// JSON escape before them): a run of these holds every match of their patterns.
const TOK: u16 = 1 << 1;
/// Card, SSN and phone numbers: digits and `( ) + - . / ` and space.
const NUM: u16 = 1 << 2;
/// IPv4 and IPv6 addresses: hex digits, `:` and `.`.
const IPC: u16 = 1 << 3;
/// The name of a `NAME=value` assignment.
const NAME: u16 = 1 << 4;
/// The value of an assignment (`[^ \t\r\n"'`,;&\\]`, any non-ASCII byte).
const VALUE: u16 = 1 << 5;
/// IBANs: `[A-Z0-9 ]`.
const IBANC: u16 = 1 << 6;
/// The credential after `Bearer`/`Basic`/`Token` (and its `=` padding).
const CRED: u16 = 1 << 7;
/// An AWS secret access key.
const AWSKEY: u16 = 1 << 8;
/// Hex digits.
const HEX: u16 = 1 << 9;

const fn byte_classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let digit = b.is_ascii_digit();
        let alnum = b.is_ascii_alphanumeric();
        let mut c = 0;
        if alnum
            || matches!(
                b,
                b'_' | b'.'
                    | b'+'
                    | b'/'
                    | b'='
                    | b':'
                    | b'?'
                    | b'&'
                    | b'%'
                    | b'~'
                    | b'@'
                    | b'\\'
                    | b'-'
            )
        {
            c |= TOK;
        }
        if digit || matches!(b, b' ' | b'(' | b')' | b'+' | b'-' | b'.' | b'/') {
            c |= NUM;
        }
        if b.is_ascii_hexdigit() || b == b':' || b == b'.' {
            c |= IPC;
        }
        if alnum || matches!(b, b'_' | b'.' | b'-') {
            c |= NAME;
        }
        if !matches!(
            b,
            b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'' | b'`' | b',' | b';' | b'&' | b'\\'
        ) {
            c |= VALUE;
        }
        if b.is_ascii_uppercase() || digit || b == b' ' {
            c |= IBANC;
        }
        if alnum || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'-' | b'=') {
            c |= CRED;
        }
        if alnum || b == b'/' || b == b'+' {
            c |= AWSKEY;
        }
        if b.is_ascii_hexdigit() {
            c |= HEX;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CLASSES: [u16; 256] = byte_classes();

fn is(b: u8, class: u16) -> bool {
    CLASSES[b as usize] & class != 0
}

/// The start of the run of `class` bytes that ends just before `i`… or holds `i`.
fn run_start(t: &[u8], mut i: usize, class: u16) -> usize {
    while i > 0 && is(t[i - 1], class) {
        i -= 1;
    }
    i
}

fn run_end(t: &[u8], mut i: usize, class: u16) -> usize {
    while i < t.len() && is(t[i], class) {
        i += 1;
    }
    i
}

/// A region starting at `s` also takes a JSON escape (`\n`, `\t`, `\r`) right before it: the
/// patterns may start there (see `start!`).
fn with_escape(t: &[u8], s: usize) -> usize {
    if s >= 2 && t[s - 2] == b'\\' && matches!(t[s - 1], b'n' | b't' | b'r') {
        s - 2
    } else {
        s
    }
}

/// `t[at..]` starts with `word` (lowercase), in any casing.
fn word_at(t: &[u8], at: usize, word: &str) -> bool {
    t.get(at..at + word.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(word.as_bytes()))
}

/// Where each detector's regex has to run: (pattern position, start, end).
struct Candidates<'t> {
    text: &'t str,
    t: &'t [u8],
    on: u32,
    regions: Vec<(u8, usize, usize)>,
    /// The last run of `TOK` bytes and of non-blank bytes computed (anchors come in order).
    tok: (usize, usize),
    nonblank: (usize, usize),
    /// The last run of `IPC` bytes looked at.
    ip: (usize, usize),
}

impl<'t> Candidates<'t> {
    fn new(text: &'t str, on: u32) -> Self {
        Candidates {
            text,
            t: text.as_bytes(),
            on,
            regions: Vec::new(),
            tok: (0, 0),
            nonblank: (0, 0),
            ip: (0, 0),
        }
    }

    fn on(&self, p: u8) -> bool {
        self.on & (1 << p) != 0
    }

    fn add(&mut self, p: u8, start: usize, end: usize) {
        if self.on(p) {
            self.regions.push((p, start, end));
        }
    }

    /// The run of `TOK` bytes holding `i`.
    fn tok_run(&mut self, i: usize) -> (usize, usize) {
        if !(self.tok.0 <= i && i < self.tok.1) {
            self.tok = (run_start(self.t, i, TOK), run_end(self.t, i, TOK));
        }
        self.tok
    }

    /// The run of bytes other than space, tab, CR, LF holding `i`.
    fn nonblank_run(&mut self, i: usize) -> (usize, usize) {
        if !(self.nonblank.0 <= i && i < self.nonblank.1) {
            let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
            let s = self.t[..i].iter().rposition(blank).map_or(0, |p| p + 1);
            let e = self.t[i..]
                .iter()
                .position(blank)
                .map_or(self.t.len(), |p| i + p);
            self.nonblank = (s, e);
        }
        self.nonblank
    }

    // ---- literal anchors ---------------------------------------------------------------------

    fn anchor(&mut self, a: Anchor, k: usize, ke: usize) {
        let (need, pats): (usize, &[u8]) = match a {
            Anchor::Pem => {
                if self.on(PEM) && pem_header(self.t, ke) {
                    self.add(PEM, k, self.t.len());
                }
                return;
            }
            Anchor::Scheme => return self.scheme(k, ke),
            Anchor::Word(w) => return self.word(w, k, ke),
            // The shortest match of each pattern from its anchor.
            Anchor::Jwt => (28, &[JWT]),
            Anchor::SkDash => (23, &[ANTHROPIC, OPENAI]),
            Anchor::Stripe => (28, &[STRIPE]),
            Anchor::Whsec => (30, &[STRIPE]),
            Anchor::Github => (40, &[GITHUB]),
            Anchor::GithubPat => (93, &[GITHUB]),
            Anchor::Xox => (15, &[SLACK]),
            Anchor::Xapp => (53, &[SLACK]),
            Anchor::AwsId => (20, &[AWS_ID]),
            Anchor::Aiza => (39, &[GCP]),
            Anchor::Ya29 => (25, &[GCP]),
            Anchor::Sig => (35, &[AZURE]),
        };
        if pats.iter().all(|&p| !self.on(p)) {
            return;
        }
        let (s, e) = self.tok_run(k);
        if e - k >= need {
            for &p in pats {
                self.add(p, s, e);
            }
        }
    }

    /// `://`: a password in the user info, a Slack webhook.
    fn scheme(&mut self, k: usize, ke: usize) {
        let t = self.t;
        if self.on(SLACK) && t[..k].ends_with(b"https") && t[ke..].starts_with(b"hooks.slack.com/")
        {
            let (s, e) = self.tok_run(k);
            self.add(SLACK, s, e);
        }
        if self.on(URL_PASSWORD) && k >= 2 && url_userinfo(t, ke) {
            let (s, e) = self.nonblank_run(k);
            self.add(URL_PASSWORD, s, e);
        }
    }

    fn word(&mut self, w: Word, k: usize, ke: usize) {
        let t = self.t;
        match w {
            Word::Pas => {
                if let Some(word) = ["password", "passwd", "passphrase"]
                    .into_iter()
                    .find(|w| word_at(t, k, w))
                {
                    self.assignment(k, k + word.len());
                }
            }
            Word::Pwd => self.assignment(k, ke),
            Word::Sec => {
                if word_at(t, k, "secret") {
                    self.assignment(k, k + 6);
                    self.aws_secret(k, true);
                }
            }
            Word::Tok => {
                if word_at(t, k, "token") {
                    self.assignment(k, k + 5);
                    self.auth_header(k, k + 5);
                }
            }
            Word::Key => {
                if let Some(ws) = key_word_start(t, k) {
                    self.assignment(ws, ke);
                }
                // `AccountKey=` and 86 base64 characters and `==`.
                if self.on(AZURE)
                    && k >= 7
                    && word_at(t, k - 7, "account")
                    && t.get(ke) == Some(&b'=')
                {
                    let (s, e) = self.tok_run(k);
                    if e - ke > 88 {
                        self.add(AZURE, s, e);
                    }
                }
            }
            Word::Cre => {
                if word_at(t, k, "credential") {
                    let plural = matches!(t.get(k + 10), Some(b's' | b'S'));
                    self.assignment(k, k + 10 + usize::from(plural));
                }
            }
            Word::Aut => {
                if word_at(t, k, "auth") {
                    self.assignment(k, k + 4);
                }
            }
            Word::Bea => {
                if word_at(t, k, "bearer") {
                    self.auth_header(k, k + 6);
                }
            }
            Word::Bas => {
                if word_at(t, k, "basic") {
                    self.auth_header(k, k + 5);
                }
            }
            Word::Aws => self.aws_secret(k, false),
        }
    }

    /// `NAME=value` around the secret word `ws..we`: the name goes on for at most 24 more
    /// characters, then an optional quote, up to three blanks, `:` or `=`, and a value.
    fn assignment(&mut self, ws: usize, we: usize) {
        if !self.on(ASSIGNMENT) {
            return;
        }
        let t = self.t;
        let n = t.len();
        let mut ne = we;
        while ne < n && is(t[ne], NAME) {
            ne += 1;
            if ne - we > 24 {
                return;
            }
        }
        let mut j = ne;
        if t.get(j) == Some(&b'\\') && matches!(t.get(j + 1), Some(b'"' | b'\'')) {
            j += 2;
        } else if matches!(t.get(j), Some(b'"' | b'\'')) {
            j += 1;
        }
        let mut blanks = 0;
        while blanks < 3 && matches!(t.get(j), Some(b' ' | b'\t')) {
            j += 1;
            blanks += 1;
        }
        if !matches!(t.get(j), Some(b':' | b'=')) {
            return;
        }
        // The value starts within the separator's second character, three blanks and a
        // quote (`:= "x`).
        let sep = j;
        let near = (sep + 8).min(n);
        if !t[sep + 1..near].iter().any(|&b| is(b, VALUE)) {
            return;
        }
        // The name takes at most 40 characters before the word.
        let mut start = ws;
        while start > 0 && ws - start < 40 && is(t[start - 1], NAME) {
            start -= 1;
        }
        // The value: at most 256 characters.
        let mut end = near;
        let mut chars = 0;
        while end < n && is(t[end], VALUE) && chars <= 256 {
            if t[end] & 0xc0 != 0x80 {
                chars += 1;
            }
            end += 1;
        }
        while end < n && t[end] & 0xc0 == 0x80 {
            end += 1;
        }
        self.add(ASSIGNMENT, start, end);
    }

    /// `Bearer`/`Basic`/`Token` (`ks..ke`), one to four blanks, eight credential characters.
    fn auth_header(&mut self, ks: usize, ke: usize) {
        if !self.on(AUTH_HEADER) {
            return;
        }
        let t = self.t;
        let mut j = ke;
        while j - ke < 4 && matches!(t.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if j == ke {
            return;
        }
        let credential = t[j..]
            .iter()
            .take_while(|&&b| is(b, CRED) && b != b'=')
            .count();
        if credential < 8 {
            return;
        }
        let end = run_end(t, j, CRED);
        // The pattern is case-insensitive, its escape too (`\N`).
        let start =
            if ks >= 2 && t[ks - 2] == b'\\' && matches!(t[ks - 1] | 0x20, b'n' | b't' | b'r') {
                ks - 2
            } else {
                ks
            };
        self.add(AUTH_HEADER, start, end);
    }

    /// `aws…secret`/`aws…sk` (or `secret access key`, `secret`: `secret_word`) at `k`, and
    /// within the pattern's reach a run of 40 key characters.
    fn aws_secret(&mut self, k: usize, secret_word: bool) {
        if !self.on(AWS_SECRET) {
            return;
        }
        let t = self.t;
        let n = t.len();
        let named = if secret_word {
            // secret[_. -]?access[_. -]?key
            let mut j = k + 6;
            if matches!(t.get(j), Some(b'_' | b'.' | b' ' | b'-')) {
                j += 1;
            }
            word_at(t, j, "access") && {
                j += 6;
                if matches!(t.get(j), Some(b'_' | b'.' | b' ' | b'-')) {
                    j += 1;
                }
                word_at(t, j, "key")
            }
        } else {
            // aws[A-Za-z0-9_. -]{0,24}?(?:secret|sk)
            (k + 3..=(k + 27).min(n)).any(|j| word_at(t, j, "sk") || word_at(t, j, "secret"))
        };
        if !named {
            return;
        }
        // Name (24 + 6 + 16), separator (8 characters of up to 4 bytes), key (40).
        let mut end = (k + 130).min(n);
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        let mut run = 0;
        let key = t[k..end].iter().any(|&b| {
            run = if is(b, AWSKEY) { run + 1 } else { 0 };
            run >= 40
        });
        if key {
            self.add(AWS_SECRET, k, end);
        }
    }

    // ---- `@` and `~` -------------------------------------------------------------------------

    fn at_sign(&mut self, i: usize) {
        let t = self.t;
        if !self.on(EMAIL)
            || i == 0
            || !(t[i - 1].is_ascii_alphanumeric()
                || matches!(t[i - 1], b'.' | b'_' | b'%' | b'+' | b'-'))
            || !t.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            return;
        }
        // The domain's first label (up to 63 characters) and a dot.
        let label = t[i + 1..]
            .iter()
            .take(64)
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if t.get(i + 1 + label) == Some(&b'.') {
            let (s, e) = self.tok_run(i);
            self.add(EMAIL, s, e);
        }
    }

    /// An Entra ID client secret: `[A-Za-z0-9_~.]{3}[0-9]Q~` and 31 to 34 more.
    fn tilde(&mut self, i: usize) {
        let t = self.t;
        if !self.on(AZURE) || i < 5 || t[i - 1] != b'Q' || !t[i - 2].is_ascii_digit() {
            return;
        }
        let (s, e) = self.tok_run(i);
        if i - s >= 5 && e - i >= 32 {
            self.add(AZURE, s, e);
        }
    }

    // ---- digits ------------------------------------------------------------------------------

    /// An address could hold the byte at `i` (a digit before a dot, a colon before another):
    /// the run of `IPC` bytes holding it, if it has two colons or three dots and passes
    /// [`ip_gate`].
    fn ip_candidate(&mut self, i: usize) {
        if !self.on(IP) || (self.ip.0 <= i && i < self.ip.1) {
            return;
        }
        let t = self.t;
        let (s, e) = (run_start(t, i, IPC), run_end(t, i, IPC));
        self.ip = (s, e);
        let (mut colons, mut dots, mut digits) = (0, 0, 0);
        for &b in &t[s..e] {
            colons += usize::from(b == b':');
            dots += usize::from(b == b'.');
            digits += usize::from(b.is_ascii_digit());
        }
        if digits > 0 && (colons >= 2 || dots >= 3) && ip_gate(self.text, s, e) {
            self.add(IP, with_escape(t, s), e);
        }
    }

    /// Every group of digits: where a card, SSN or phone number could start (its run of `NUM`
    /// bytes is then checked whole), an IPv4 address, an IBAN.
    fn digits(&mut self) {
        let t = self.t;
        let n = t.len();
        let num = self.on(CARD) || self.on(SSN) || self.on(PHONE);
        let iban = self.on(IBAN);
        let ip = self.on(IP);
        if !(num || iban || ip) {
            return;
        }
        let at = |j: usize| t.get(j).copied().unwrap_or(0);
        // Where the last run of `NUM`, hex and `IBANC` bytes looked at end.
        let (mut num_end, mut hex_end, mut iban_end) = (0, 0, 0);
        let mut base = 0;
        while base < n {
            let end = (base + 64).min(n);
            let bits = digit_bits(&t[base..end]);
            let continued = base > 0 && t[base - 1].is_ascii_digit();
            let mut starts = bits & !((bits << 1) | u64::from(continued));
            while starts != 0 {
                let o = starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let gs = base + o;
                let mut ge = gs + (!(bits >> o)).trailing_zeros() as usize;
                if ge == end {
                    while ge < n && t[ge].is_ascii_digit() {
                        ge += 1;
                    }
                }
                let len = ge - gs;
                let before = if gs > 0 { t[gs - 1] } else { 0 };
                let after = at(ge);
                let then_digit = at(ge + 1).is_ascii_digit();
                let first = t[gs];
                // Most groups of digits start nothing, which the bytes around them and their
                // length say (`&`, `|`: no branch on each): a separator and a digit after three
                // digits, four from 2 to 6, a 0, a dot after up to three; a colon or hex letter
                // next to up to four; `+`, `(`, two capitals before; 13 to 19 from 2 to 6.
                let (b, a) = (BEFORE[usize::from(before)], AFTER[usize::from(after)]);
                let separated = (a & AFTER_SEPARATOR != 0)
                    & then_digit
                    & ((len == 3)
                        | ((len == 4) & (b'2'..=b'6').contains(&first))
                        | (first == b'0')
                        | ((len <= 3) & (after == b'.')));
                let colon = ((a | b) & V6 != 0) & (len <= 4);
                let other = (b & (BEFORE_PLUS | BEFORE_PAREN) != 0)
                    | ((b & BEFORE_CAPITAL != 0) & (len >= 2))
                    | ((13..=19).contains(&len) & (b'2'..=b'6').contains(&first));
                if !(separated | colon | other) {
                    continue;
                }
                let (mut number, mut capitals, mut v4, mut v6) = (false, false, false, false);
                let cached = self.ip.0 <= gs && gs < self.ip.1;
                if separated | other {
                    // How many digits follow the byte after the group (up to four).
                    let then = (1..=4).take_while(|&k| at(ge + k).is_ascii_digit()).count();
                    // Where a match of each pattern can start its digits (`\b` before them).
                    let card = (b'2'..=b'6').contains(&first)
                        && ((13..=19).contains(&len)
                            || (len == 4 && matches!(after, b' ' | b'-') && then == 4));
                    // SSN `123-45-6789`, North American `415-555-0134`.
                    let three = len == 3 && matches!(after, b'-' | b'.' | b' ') && then >= 2;
                    // `+44 …`, `(415) …`, `(030) …`, `030 1234567` (nine digits at least in
                    // groups of two or more: not the month of a date).
                    let phone = (before == b'+' && first != b'0')
                        || (before == b'('
                            && ((len == 3 && after == b')')
                                || (first == b'0' && at(gs + 1) != b'0')))
                        || (first == b'0'
                            && (2..=6).contains(&len)
                            && at(gs + 1) != b'0'
                            && matches!(after, b'-' | b'.' | b' ' | b'/')
                            && then >= 2
                            && trunk_digits(t, gs, ge) >= 9);
                    number = num && gs >= num_end && (card || three || phone);
                    // Two capitals and two digits start an IBAN.
                    capitals = iban
                        && len >= 2
                        && before.is_ascii_uppercase()
                        && gs >= 2
                        && t[gs - 2].is_ascii_uppercase();
                    // IPv4: one to three digits and a dot, three dots near.
                    v4 = ip
                        && !cached
                        && len <= 3
                        && after == b'.'
                        && then_digit
                        && count_near(t, gs, b'.') >= 3;
                }
                // IPv6: up to four digits next to a colon or a hex letter, in a group of an
                // address (see `ipv6_group`); not in the run last looked at.
                if colon && ip && !cached && gs >= hex_end {
                    // The run of hex digits the group is in (looked at once).
                    let (hs, he) = (run_start(t, gs, HEX), run_end(t, ge, HEX));
                    hex_end = he;
                    v6 = he - hs <= 4 && ipv6_group(t, hs, he);
                }
                if !(number || capitals || v4 || v6) {
                    continue;
                }
                if number {
                    let s = run_start(t, gs, NUM);
                    let e = run_end(t, ge, NUM);
                    num_end = e;
                    if t[s..e].iter().filter(|b| b.is_ascii_digit()).count() >= 8 {
                        let gates = number_gates(t, s, e);
                        let s = with_escape(t, s);
                        for (bit, p) in [(1, CARD), (2, SSN), (4, PHONE)] {
                            if gates & bit != 0 {
                                self.add(p, s, e);
                            }
                        }
                    }
                }
                if capitals
                    && gs >= iban_end
                    && IBAN_LENGTHS
                        .iter()
                        .any(|(c, _)| c.as_bytes() == &t[gs - 2..gs])
                {
                    let s = run_start(t, gs - 2, IBANC);
                    iban_end = run_end(t, gs, IBANC);
                    self.add(IBAN, with_escape(t, s), iban_end);
                }
                if v4 || v6 {
                    self.ip_candidate(gs);
                }
            }
            base = end;
        }
    }
}

/// What the byte before a group of digits may start: `+`, `(`, a capital (IBAN), a colon or
/// hex letter (IPv6).
const BEFORE_PLUS: u8 = 1;
const BEFORE_PAREN: u8 = 2;
const BEFORE_CAPITAL: u8 = 4;
/// A colon or a hex letter, before or after.
const V6: u8 = 8;
static BEFORE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'+' => BEFORE_PLUS,
            b'(' => BEFORE_PAREN,
            b':' | b'a'..=b'f' => V6,
            b'A'..=b'F' => V6 | BEFORE_CAPITAL,
            b'G'..=b'Z' => BEFORE_CAPITAL,
            _ => 0,
        };
        i += 1;
    }
    t
};

/// What the byte after a group of digits may go on with: a separator (with another digit after
/// it), a colon or hex letter (IPv6).
const AFTER_SEPARATOR: u8 = 1;
static AFTER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b' ' | b'-' | b'/' | b'.' => AFTER_SEPARATOR,
            b':' | b'a'..=b'f' | b'A'..=b'F' => V6,
            _ => 0,
        };
        i += 1;
    }
    t
};

/// The digits of a national number with a trunk 0 from the group `gs..ge` on: its groups of
/// two or more split by one `-`, `.`, space (or `/` after the first); counted up to nine, in
/// five groups at most (as many as the pattern takes).
fn trunk_digits(t: &[u8], gs: usize, ge: usize) -> usize {
    let mut digits = ge - gs;
    let mut end = ge;
    let mut first = true;
    let mut groups = 0;
    while digits < 9
        && groups < 5
        && end + 2 < t.len()
        && (matches!(t[end], b'-' | b'.' | b' ') || (first && t[end] == b'/'))
        && t[end + 1].is_ascii_digit()
        && t[end + 2].is_ascii_digit()
    {
        let start = end + 1;
        end = start;
        while end < t.len() && t[end].is_ascii_digit() {
            end += 1;
        }
        digits += end - start;
        first = false;
        groups += 1;
    }
    digits
}

/// How many of `byte` the 24 bytes from `start` hold (an IPv4 address has three dots in 15
/// bytes).
fn count_near(t: &[u8], start: usize, byte: u8) -> usize {
    match t.get(start..start + 24) {
        Some(w) => {
            let w: &[u8; 24] = w.try_into().expect("24 bytes");
            w.iter().map(|&b| usize::from(b == byte)).sum()
        }
        None => t
            .get(start..)
            .map_or(0, |w| w.iter().filter(|&&b| b == byte).count()),
    }
}

/// Whether the hex digits `hs..he` (one to four, the whole run) are a group of an IPv6
/// address: next to a colon that has another colon one group (or none) away. Every group of an
/// address of two colons at least is.
fn ipv6_group(t: &[u8], hs: usize, he: usize) -> bool {
    // A colon at `c` with another one group to its left or right.
    let paired = |c: usize| {
        let right = t[c + 1..]
            .iter()
            .take(5)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let left = t[..c]
            .iter()
            .rev()
            .take(5)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        (right <= 4 && t.get(c + 1 + right) == Some(&b':'))
            || (left <= 4 && c > left && t[c - 1 - left] == b':')
    };
    (hs > 0 && t[hs - 1] == b':' && paired(hs - 1)) || (t.get(he) == Some(&b':') && paired(he))
}

/// Bit `i`: `block[i]` is an ASCII digit (a block of 64 bytes at most), eight bytes at a time.
fn digit_bits(block: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut bits = 0;
    let mut words = block.chunks_exact(8);
    for (k, w) in (&mut words).enumerate() {
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let low = x & !HIGH;
        // The high bit of each byte: (b & 0x7f) >= b'0', (b & 0x7f) > b'9', b < 0x80.
        let ge_0 = low.wrapping_add(ONES * (0x80 - 0x30)) & HIGH;
        let gt_9 = low.wrapping_add(ONES * (0x80 - 0x3a)) & HIGH;
        let digits = ge_0 & !gt_9 & !x;
        // The eight high bits, gathered into the top byte (no two products share a bit).
        bits |= ((digits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    let at = block.len() - words.remainder().len();
    for (j, b) in words.remainder().iter().enumerate() {
        if b.is_ascii_digit() {
            bits |= 1 << (at + j);
        }
    }
    bits
}

/// `-----BEGIN` is followed by `[A-Z0-9 ]{0,32}PRIVATE KEY`.
fn pem_header(t: &[u8], mut j: usize) -> bool {
    let from = j;
    loop {
        if t[j..].starts_with(b"PRIVATE KEY") {
            return true;
        }
        if j - from >= 32 || !t.get(j).is_some_and(|&b| is(b, IBANC)) {
            return false;
        }
        j += 1;
    }
}

/// After `://`: `user:password@h` (`[^ \t\r\n/:@?#]{0,128}:[^ \t\r\n/@?#]{1,256}@` and a
/// host character); the lengths are in characters, so the bounds here are in bytes of four.
fn url_userinfo(t: &[u8], from: usize) -> bool {
    let n = t.len();
    let mut j = from;
    let limit = (from + 4 * 128).min(n);
    while j < limit
        && !matches!(
            t[j],
            b' ' | b'\t' | b'\r' | b'\n' | b'/' | b':' | b'@' | b'?' | b'#'
        )
    {
        j += 1;
    }
    if t.get(j) != Some(&b':') {
        return false;
    }
    j += 1;
    let password = j;
    let limit = (password + 4 * 256).min(n);
    while j < limit
        && !matches!(
            t[j],
            b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'@' | b'?' | b'#'
        )
    {
        j += 1;
    }
    j > password
        && t.get(j) == Some(&b'@')
        && t.get(j + 1)
            .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'[' | b']' | b'-'))
}

/// Where the secret word ending in the `key` at `k` starts (`api_key`, `apikey`,
/// `private-key`, `access_key`, `encryption_key`, `signing_key`, `master_key`).
fn key_word_start(t: &[u8], k: usize) -> Option<usize> {
    [
        "api",
        "private",
        "access",
        "encryption",
        "signing",
        "master",
    ]
    .into_iter()
    .find_map(|w| {
        let l = w.len();
        if k >= l && word_at(t, k - l, w) {
            Some(k - l)
        } else if k > l && matches!(t[k - 1], b'_' | b'-') && word_at(t, k - l - 1, w) {
            Some(k - l - 1)
        } else {
            None
        }
    })
}

/// Which of card (1), SSN (2) and phone (4) could match in the run `s..e` of `NUM` bytes:
/// the shapes of their patterns, in digit groups.
fn number_gates(t: &[u8], s: usize, e: usize) -> u8 {
    const ALL: u8 = 1 | 2 | 4;
    let mut groups = [(0usize, 0usize); 32];
    let mut n = 0;
    let mut i = s;
    while i < e {
        if t[i].is_ascii_digit() {
            let start = i;
            while i < e && t[i].is_ascii_digit() {
                i += 1;
            }
            if n == groups.len() {
                return ALL;
            }
            groups[n] = (start, i);
            n += 1;
        } else {
            i += 1;
        }
    }
    let g = &groups[..n];
    let len = |j: usize| g[j].1 - g[j].0;
    let first = |j: usize| t[g[j].0];
    // Groups `j` and `j + 1` are split by one of `seps`.
    let split = |j: usize, seps: &[u8]| g[j + 1].0 == g[j].1 + 1 && seps.contains(&t[g[j].1]);
    let mut gates = 0;
    let mut after = g.iter().map(|(a, b)| b - a).sum::<usize>();
    for j in 0..n {
        let l = len(j);
        // Card: 13–19 digits, or 4-4-4-4(-3) / 4-6-4(5); a brand starts with 2–6.
        if matches!(first(j), b'2'..=b'6') {
            if (13..=19).contains(&l) {
                gates |= 1;
            }
            if l == 4 && j + 2 < n && split(j, b" -") && split(j + 1, b" -") {
                let four = len(j + 1) == 4
                    && len(j + 2) == 4
                    && j + 3 < n
                    && split(j + 2, b" -")
                    && len(j + 3) == 4;
                let amex = len(j + 1) == 6 && matches!(len(j + 2), 4 | 5);
                if four || amex {
                    gates |= 1;
                }
            }
        }
        if l == 3 && j + 2 < n {
            // SSN: 3-2-4.
            if split(j, b"-") && len(j + 1) == 2 && split(j + 1, b"-") && len(j + 2) == 4 {
                gates |= 2;
            }
            // North American number: 3-3-4, area code and exchange from 2.
            if matches!(first(j), b'2'..=b'9')
                && split(j, b"-. ")
                && len(j + 1) == 3
                && matches!(first(j + 1), b'2'..=b'9')
                && split(j + 1, b"-. ")
                && len(j + 2) == 4
            {
                gates |= 4;
            }
        }
        // National number with a trunk 0: `0[1-9]` and up to four digits, a separator, and
        // nine digits at least in all.
        if first(j) == b'0'
            && (2..=6).contains(&l)
            && t[g[j].0 + 1] != b'0'
            && j + 1 < n
            && split(j, b"-. /")
            && after >= 9
        {
            gates |= 4;
        }
        after -= l;
    }
    for i in s..e {
        match t[i] {
            // E.164: `+[1-9]` and eight digits at least.
            b'+' if t.get(i + 1).is_some_and(|b| matches!(b, b'1'..=b'9')) => {
                let digits = t[i + 1..e]
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b' ' | b'(' | b')' | b'.' | b'-'))
                    .filter(|b| b.is_ascii_digit())
                    .count();
                if digits >= 8 {
                    gates |= 4;
                }
            }
            // `(415) 555-0134`, `(030) 1234567`.
            b'(' => {
                let b = &t[i + 1..e];
                let area = b.len() >= 4
                    && matches!(b[0], b'2'..=b'9')
                    && b[1].is_ascii_digit()
                    && b[2].is_ascii_digit()
                    && b[3] == b')';
                let trunk = b.len() >= 2 && b[0] == b'0' && matches!(b[1], b'1'..=b'9');
                if area || (trunk && b.iter().filter(|b| b.is_ascii_digit()).count() >= 9) {
                    gates |= 4;
                }
            }
            _ => {}
        }
    }
    gates
}

/// Whether the run `s..e` of `IPC` bytes could hold an address: four dotted groups of one to
/// three digits, or an IPv6 address. A valid IPv6 finding (no word character, `:` or `.`
/// before it, no word character or `:` after it) is the run up to its first `.`, so the
/// validator decides on that part.
fn ip_gate(text: &str, s: usize, e: usize) -> bool {
    let t = text.as_bytes();
    let mut chain = 0;
    let mut prev_end = usize::MAX;
    let mut i = s;
    while i < e {
        if t[i].is_ascii_digit() {
            let start = i;
            while i < e && t[i].is_ascii_digit() {
                i += 1;
            }
            chain = if i - start > 3 {
                0
            } else if chain > 0 && prev_end + 1 == start && t[prev_end] == b'.' {
                chain + 1
            } else {
                1
            };
            if chain >= 4 {
                return true;
            }
            prev_end = i;
        } else {
            i += 1;
        }
    }
    let v6 = t[s..e].iter().position(|&b| b == b'.').map_or(e, |p| s + p);
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // Not inside a word (a JSON escape before it reads as a blank), nor before one.
    let alone = (s == 0
        || !word(t[s - 1])
        || (s >= 2 && t[s - 2] == b'\\' && matches!(t[s - 1], b'n' | b't' | b'r')))
        && !t.get(v6).is_some_and(|&b| word(b));
    // A clock time (`10:30:00`) is not an address.
    let clock = t[s..v6]
        .split(|&b| b == b':')
        .all(|g| g.len() <= 2 && g.iter().all(u8::is_ascii_digit));
    alone && !clock && t[s..v6].iter().filter(|&&b| b == b':').count() >= 2 && {
        let at = Match {
            text,
            start: s,
            end: v6,
            whole_start: s,
            whole_end: v6,
        };
        validate(Detector::IpAddress, &at).is_some()
    }
}

impl TextDetectors {
    /// Compile the built-in detectors, leaving out those in `disabled`.
    pub fn new(disabled: &[Detector]) -> Self {
        let mut on = 0;
        let patterns = PATTERNS
            .iter()
            .enumerate()
            .map(|(i, (d, p, g))| {
                if disabled.contains(d) {
                    return None;
                }
                on |= 1 << i;
                let regex = Regex::new(p).expect("built-in patterns compile");
                Some(Pattern {
                    detector: *d,
                    groups: regex.captures_len() > 1,
                    regex,
                    group: *g,
                })
            })
            .collect();
        TextDetectors {
            patterns,
            on,
            anchors: Anchors::new(),
        }
    }

    /// Every validated finding in `text`, in order, without overlaps. Findings that overlap
    /// become one, spanning them all, named after the most specific detector among them (a
    /// typed token before a card or an address, before a phone number, before a generic
    /// `NAME=value`), so that nothing of either is left readable.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        if text.len() < 7 || self.on == 0 {
            return Vec::new();
        }
        let t = text.as_bytes();
        let mut c = Candidates::new(text, self.on);
        self.anchors.each(t, |a, s, e| c.anchor(a, s, e));
        for i in memchr::memchr2_iter(b'@', b'~', t) {
            if t[i] == b'@' {
                c.at_sign(i);
            } else {
                c.tilde(i);
            }
        }
        c.digits();
        if c.regions.is_empty() {
            return Vec::new();
        }
        self.confirm(text, c.regions)
    }

    /// Run each detector's regex over its regions (merged where they overlap, in order, so
    /// that the matches are those of a search over the whole text) and validate the matches.
    fn confirm(&self, text: &str, mut regions: Vec<(u8, usize, usize)>) -> Vec<Finding> {
        regions.sort_unstable();
        let mut found = Vec::new();
        let mut shadows = Vec::new();
        let mut i = 0;
        while i < regions.len() {
            let (p, start, mut end) = regions[i];
            i += 1;
            while i < regions.len() && regions[i].0 == p && regions[i].1 < end {
                end = end.max(regions[i].2);
                i += 1;
            }
            if let Some(p) = &self.patterns[usize::from(p)] {
                p.search(text, start, end, &mut found, &mut shadows);
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

impl Pattern {
    /// The validated matches starting in `start..end`, with the text around as context (the
    /// character after `end` too, for a `\b`); no match of the pattern crosses the region's
    /// edges.
    fn search(
        &self,
        text: &str,
        start: usize,
        end: usize,
        found: &mut Vec<Finding>,
        shadows: &mut Vec<(usize, usize)>,
    ) {
        let hay = &text[..end + text[end..].chars().next().map_or(0, char::len_utf8)];
        let mut pos = start;
        while pos < end {
            let (whole, m) = if self.groups {
                let Some(caps) = self.regex.captures_at(hay, pos) else {
                    break;
                };
                let whole = caps.get(0).expect("match");
                // Azure's alternatives each capture their own group: take the first present.
                let m = if self.group == 0 {
                    (1..caps.len()).find_map(|g| caps.get(g)).unwrap_or(whole)
                } else {
                    match caps.get(self.group) {
                        Some(m) => m,
                        None => {
                            pos = whole.end().max(pos + 1);
                            continue;
                        }
                    }
                };
                (whole.range(), m.range())
            } else {
                let Some(m) = self.regex.find_at(hay, pos) else {
                    break;
                };
                (m.range(), m.range())
            };
            if whole.start >= end {
                break;
            }
            pos = whole.end.max(pos + 1);
            let mut at = Match {
                text,
                start: m.start,
                end: m.end,
                whole_start: whole.start,
                whole_end: whole.end,
            };
            // A JSON escape matched in place of a word boundary is not part of the finding.
            if escape_at(text, at.whole_start) {
                at.whole_start += 2;
                at.start = at.start.max(at.whole_start);
            }
            if let Some((start, end)) = validate(self.detector, &at) {
                found.push(Finding {
                    detector: self.detector,
                    start,
                    end,
                });
            } else if self.detector == Detector::Iban {
                if let Some(span) = iban_shape(&at) {
                    shadows.push(span);
                }
            }
        }
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
    if key.is_ascii() {
        let mut out = key.to_ascii_lowercase();
        if out.bytes().any(|b| matches!(b, b'_' | b'-' | b'.' | b' ')) {
            out.retain(|c| !matches!(c, '_' | '-' | '.' | ' '));
        }
        return out;
    }
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a member with this (normalised) name holds a secret whatever its value.
pub fn secret_key(normalised: &str) -> bool {
    has_secret_fragment(normalised.as_bytes())
        && !NOT_SECRET_KEYS.contains(&normalised)
        && (SECRET_KEYS.contains(&normalised)
            || SECRET_SUFFIXES.iter().any(|s| normalised.ends_with(s)))
}

/// Whether a member with this (normalised) name suggests a credential.
pub fn hint_key(normalised: &str) -> bool {
    // Most names hold no fragment at all: one pass over them says so.
    if !has_hint_fragment(normalised.as_bytes()) {
        return false;
    }
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

/// Whether a name holds a fragment every one of [`SECRET_KEYS`] and [`SECRET_SUFFIXES`]
/// holds one of (most names hold none: one pass says so).
fn has_secret_fragment(s: &[u8]) -> bool {
    (0..s.len()).any(|i| {
        let r = &s[i..];
        match s[i] {
            b'p' => r.starts_with(b"pass") || r.starts_with(b"pwd") || r.starts_with(b"pin"),
            b's' => r.starts_with(b"secret") || r.starts_with(b"ssn") || r.starts_with(b"sig"),
            b't' => r.starts_with(b"token"),
            b'a' => r.starts_with(b"auth"),
            b'c' => {
                r.starts_with(b"cookie")
                    || r.starts_with(b"cred")
                    || r.starts_with(b"cvv")
                    || r.starts_with(b"cvc")
                    || r.starts_with(b"connection")
            }
            b'k' => r.starts_with(b"key"),
            b'j' => r.starts_with(b"jwt"),
            b'o' => r.starts_with(b"otp"),
            b'd' => r.starts_with(b"dsn"),
            _ => false,
        }
    })
}

/// Whether a name holds one of [`HINT_FRAGMENTS`].
fn has_hint_fragment(s: &[u8]) -> bool {
    (0..s.len()).any(|i| {
        let r = &s[i..];
        match s[i] {
            b'k' => r.starts_with(b"key"),
            b's' => r.starts_with(b"secret") || r.starts_with(b"sig") || r.starts_with(b"session"),
            b't' => r.starts_with(b"token"),
            b'a' => r.starts_with(b"auth"),
            b'c' => r.starts_with(b"cred") || r.starts_with(b"cert"),
            b'p' => r.starts_with(b"pass"),
            _ => false,
        }
    })
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

    #[test]
    fn every_secret_key_holds_a_fragment() {
        for k in SECRET_KEYS.iter().chain(SECRET_SUFFIXES) {
            assert!(has_secret_fragment(k.as_bytes()), "{k}");
            assert!(secret_key(k), "{k}");
        }
        for k in HINT_FRAGMENTS {
            assert!(has_hint_fragment(k.as_bytes()), "{k}");
        }
        assert!(!secret_key("path") && !secret_key("content") && !secret_key("progresstoken"));
        assert_eq!(normalise_key("X-Api_Key.v2 x"), "xapikeyv2x");
        assert_eq!(normalise_key("Ünïcode_Key"), "ünïcodekey");
    }

    #[test]
    fn pattern_positions() {
        let at = |i: u8| PATTERNS[usize::from(i)].0;
        assert_eq!(at(PEM), Detector::PrivateKey);
        assert_eq!(at(JWT), Detector::Jwt);
        assert_eq!(at(ANTHROPIC), Detector::AnthropicKey);
        assert_eq!(at(OPENAI), Detector::OpenaiKey);
        assert_eq!(at(STRIPE), Detector::StripeKey);
        assert_eq!(at(GITHUB), Detector::GithubToken);
        assert_eq!(at(SLACK), Detector::SlackToken);
        assert_eq!(at(AWS_ID), Detector::AwsAccessKeyId);
        assert_eq!(at(AWS_SECRET), Detector::AwsSecretKey);
        assert_eq!(at(GCP), Detector::GcpKey);
        assert_eq!(at(AZURE), Detector::AzureKey);
        assert_eq!(at(URL_PASSWORD), Detector::UrlPassword);
        assert_eq!(at(AUTH_HEADER), Detector::AuthHeader);
        assert_eq!(at(ASSIGNMENT), Detector::SecretAssignment);
        assert_eq!(at(CARD), Detector::Card);
        assert_eq!(at(IBAN), Detector::Iban);
        assert_eq!(at(EMAIL), Detector::Email);
        assert_eq!(at(SSN), Detector::UsSsn);
        assert_eq!(at(PHONE), Detector::Phone);
        assert_eq!(at(IP), Detector::IpAddress);
        assert_eq!(PATTERNS.len(), 20);
    }

    /// The scan as it was before the gates: every pattern over the whole text.
    fn reference_scan(text: &str) -> Vec<Finding> {
        reference_scan_without(text, &[])
    }

    fn reference_scan_without(text: &str, disabled: &[Detector]) -> Vec<Finding> {
        static PATS: std::sync::OnceLock<Vec<(Detector, Regex, usize)>> =
            std::sync::OnceLock::new();
        let pats = PATS.get_or_init(|| {
            PATTERNS
                .iter()
                .map(|(d, p, g)| (*d, Regex::new(p).unwrap(), *g))
                .collect()
        });
        let mut found = Vec::new();
        let mut shadows = Vec::new();
        if text.len() < 7 {
            return found;
        }
        for (detector, regex, group) in pats.iter().filter(|(d, _, _)| !disabled.contains(d)) {
            for caps in regex.captures_iter(text) {
                let m = if *group == 0 && caps.len() > 1 {
                    (1..caps.len())
                        .find_map(|g| caps.get(g))
                        .unwrap_or_else(|| caps.get(0).unwrap())
                } else {
                    match caps.get(*group) {
                        Some(m) => m,
                        None => continue,
                    }
                };
                let whole = caps.get(0).unwrap();
                let mut at = Match {
                    text,
                    start: m.start(),
                    end: m.end(),
                    whole_start: whole.start(),
                    whole_end: whole.end(),
                };
                if escape_at(text, at.whole_start) {
                    at.whole_start += 2;
                    at.start = at.start.max(at.whole_start);
                }
                if let Some((start, end)) = validate(*detector, &at) {
                    found.push(Finding {
                        detector: *detector,
                        start,
                        end,
                    });
                } else if *detector == Detector::Iban {
                    if let Some(span) = iban_shape(&at) {
                        shadows.push(span);
                    }
                }
            }
        }
        found.retain(|f| {
            !matches!(
                f.detector,
                Detector::Card | Detector::Phone | Detector::UsSsn
            ) || !shadows.iter().any(|&(s, e)| s <= f.start && f.end <= e)
        });
        resolve(found)
    }

    /// Pieces of text that come close to every pattern (and make it), for the differential
    /// test: joined at random with random glue, they put anchors, digit groups, separators,
    /// escapes and non-ASCII characters next to each other in every way.
    const PIECES: &[&str] = &[
        "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "378282246310005",
        "3782 822463 10005", "5555555555554444", "6011000990139424", "30569309025904",
        "1764000012345", "4012888888881881", "2223003122003222", "4111", "1111", "0000",
        "123-45-6789", "078-05-1120", "666-12-3456", "415-555-0134", "(415) 555-0134",
        "+1 415 555 0132", "+44 20 7946 0958", "+4915123456789", "030 12345678", "089/1234567",
        "(030) 1234567", "01 23 45 67 89", "06.12.34.56.78", "+49 (0)89 1234567", "1 (800) 555-0199",
        "10:30:00", "2026-11-25T10:30:00.123Z", "05.11.2026", "12:00", "+52.520008", "1.2.3",
        "10.0.0.1", "192.168.1.254", "127.0.0.1", "256.1.1.1", "0.0.0.0", "1.2.3.4.5",
        "2001:db8::1", "fe80::1:2:3:4", "::ffff:10.0.0.1", "::1", "std::fs", "a::b", "Db::Add",
        "2001:0db8:0000:0000:0000:ff00:0042:8329", "[2001:db8::2]:8080", "00:1A:2B:3C:4D:5E",
        "DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
        "DE89 3704 0044 0532 0130 01", "NL91ABNA0417164300", "FR14 2004 1010 0505 0001 3M02 606",
        "bob@example.com", "maria.lopez+mcp@mail.example.co.uk", "icon@2x.png", "git@github.com:x/y",
        "@", "a@b", "x@y.z", "user@host",
        "AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "AKIA", "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopq",
        "sk-proj-Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa9bCd1eFg3hIj5", "sk-learn", "sk-ant-api03-Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa9bCd1eFg3hIj5kLm7nOp9AA",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "rk_test_4eC39HqLyjWDarjtT1zdp7dcXY", "whsec_Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7y",
        "xoxb-123456789012-1234567890123-Ab3dEf5gHi7jKl9mNo1pQr3s", "xoxb-your-token",
        "https://hooks.slack.com/services/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",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJ", "eyJabcdefgh.eyJabcd.abcdefgh",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "ya29.a0AfH6SMBx3kT9qZ_example-Token_value1234567890",
        "AccountKey=", "accountkey=", "?sig=Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa9b%2F%3D", "&sig=abc",
        "Ab.8Q~Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa", "3Q~", "~/.ssh/id_rsa",
        "postgres://app:s3cr3tPW@db:5432/x", "redis://:pass@localhost", "https://user@example.com/",
        "mongodb+srv://admin:p%40ss@cluster0.example.net/db", "http://localhost:3000",
        "Authorization: Bearer abcDEF123456ghiJKL789", "Bearer", "bearer ", "BASIC dXNlcjpwYXNzd29yZA==",
        "Basic authentication", "token abcdef0123456789abcdef0123456789", "Token:", "TOKEN",
        "DB_PASSWORD=hunter2xyz", "password: ${DB_PASSWORD}", "\"password\": \"Tr0ub4dor&3\"",
        "api_key = \"q8Zr2LmX0pVb7NcW\"", "apiKey:", "PRIVATE_KEY=", "secret_access_key", "SecretAccessKey",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret key:",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "credentials", "Credential=", "auth_token := 'x9Y8z7W6'",
        "passwd", "PassWord", "pAsSwOrD=Zx81kQ0plmN", "pwd=", "secret", "SECRET_KEY=changeme", "max_tokens: 4096",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2C3d4E5f6G7h8I9j0K\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----", "-----BEGIN CERTIFICATE-----",
        "a1b::c", "abcd::1", "1::2", "::", "fe80::", "FE80::1", "Fe80::1", "2001:DB8::1",
        "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "12:34:56:78", "a:b:c", "std::vec::Vec",
        "0193a0f0-23f8-7000-8000-f804e8dd0b73", "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "+1-415-555-0134", "+1 (415) 555-0134", "(030) 123 4567", "030/1234567", "0049 30 1234567",
        "07700 900123", "1-800-555-0199", "+33 6 12 34 56 78", "+91 98765 43210",
        "4111 1111 1111 1111 111", "3782-822463-10005", "3056 930902 5904", "6011-0009-9013-9424",
        "078-05-1120.", "1 2 3 4 5 6 7 8 9", "2026-04-20T09:40:00Z", "\"ts\":1764084701482",
        "GB82WEST12345698765432", "IBAN GB82 WEST 1234 5698 7654 33", "AT61 1904 3002 3457 3201",
        "password=пароль-секрет-1234", "token: 秘密の値はとても長いです", "é4111111111111111é",
        "Bearer ÄÖÜabcdefgh12345678", "aws_secret_access_key=\u{e9}wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "SECRET_KEY=ü", "mailto:zoë@example.com", "ip 10.0.0.1é", "::ffff:10.0.0.1😀",
        "café", "Zürich", "東京", "🚀", "naïve", "ü", "Ω", "—",
        "\\n", "\\t", "\\r", "\\\"", "\n", "\t", "\"", "'", "=", ":", ": ", " = ", "=>", ":=", ",", ";",
        "&", "?", "#", "/", "+", "-", ".", "(", ")", "[", "]", "{", "}", "_", "~", "%", "`", "\\",
    ];

    /// A deterministic generator (splitmix64).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// A piece, or a random run of characters from a small alphabet, or glue.
        fn piece(&mut self) -> String {
            const ALPHABETS: &[&str] = &[
                "0123456789",
                "0123456789 -",
                "0123456789 -.()+/",
                "0123456789abcdefABCDEF:.",
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ",
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=",
                "ktpseaKTPSEAoywrdbcnu_:= \"'",
            ];
            match self.below(11) {
                0..=4 => PIECES[self.below(PIECES.len())].to_string(),
                5 | 10 => {
                    // A piece with a character or two changed, dropped or added.
                    let mut p: Vec<char> = PIECES[self.below(PIECES.len())].chars().collect();
                    for _ in 0..1 + self.below(2) {
                        let c = b"0123456789aAfFzZ:.-_ /@~=\\\"Q"[self.below(28)] as char;
                        let i = self.below(p.len() + 1);
                        match self.below(3) {
                            0 if i < p.len() => p[i] = c,
                            1 if i < p.len() => {
                                p.remove(i);
                            }
                            _ => p.insert(i, c),
                        }
                    }
                    p.into_iter().collect()
                }
                6 | 7 => {
                    let a = ALPHABETS[self.below(ALPHABETS.len())].as_bytes();
                    let n = 1 + self.below(48);
                    (0..n).map(|_| a[self.below(a.len())] as char).collect()
                }
                _ => [" ", " ", "\n", "\\n", "=", ": ", "\"", "/", "-", "."][self.below(10)]
                    .to_string(),
            }
        }
        fn text(&mut self) -> String {
            let mut s = String::new();
            for _ in 0..1 + self.below(12) {
                s.push_str(&self.piece());
            }
            s
        }
    }

    #[test]
    fn the_gated_scan_finds_what_every_pattern_over_the_whole_text_finds() {
        let detectors = TextDetectors::new(&[]);
        // `SCAN_DIFF_SEEDS=<n>` draws more (or other: `<from>..<to>`) texts.
        let seeds = match std::env::var("SCAN_DIFF_SEEDS").ok() {
            Some(v) => match v.split_once("..") {
                Some((a, b)) => a.parse().unwrap()..b.parse().unwrap(),
                None => 0..v.parse().unwrap(),
            },
            None if cfg!(debug_assertions) => 0..6_000,
            None => 0..200_000,
        };
        for seed in seeds {
            let text = Gen(seed).text();
            let want = reference_scan(&text);
            let got = detectors.scan(&text);
            assert_eq!(got, want, "seed {seed}: {text:?}");
        }
        for p in PIECES {
            for (a, b) in [("", ""), (" ", " "), ("x", "y"), ("\\n", "\\n"), ("1", "2")] {
                let text = format!("{a}{p}{b}");
                assert_eq!(detectors.scan(&text), reference_scan(&text), "{text:?}");
            }
        }
    }

    /// Anchors and numbers across the edges of the chunks the literal search folds (4096
    /// bytes) and of the 64-byte blocks of the digit pass.
    #[test]
    fn findings_across_chunk_edges() {
        let detectors = TextDetectors::new(&[]);
        let mut gen = Gen(7);
        // A debug build takes every fourth piece (the reference is slow there).
        let step = if cfg!(debug_assertions) { 4 } else { 1 };
        for piece in PIECES.iter().filter(|p| p.len() >= 3).step_by(step) {
            for edge in [64, 128, FOLD_CHUNK, 2 * FOLD_CHUNK] {
                for back in [0, 1, 2, 3, 5, 9, 12, piece.len() / 2, piece.len()] {
                    let Some(at) = edge.checked_sub(back) else {
                        continue;
                    };
                    let filler = if gen.below(2) == 0 {
                        "lorem ipsum "
                    } else {
                        "x=1; "
                    };
                    let mut text: String = filler.repeat(at / filler.len() + 1)[..at].into();
                    text.push_str(piece);
                    text.push_str(" and 10.0.0.1 then");
                    assert_eq!(
                        detectors.scan(&text),
                        reference_scan(&text),
                        "{piece:?} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn disabled_detectors_are_left_out() {
        for d in Detector::ALL {
            let detectors = TextDetectors::new(&[d]);
            for seed in 0..if cfg!(debug_assertions) { 300 } else { 3_000 } {
                let text = Gen(seed).text();
                assert_eq!(
                    detectors.scan(&text),
                    reference_scan_without(&text, &[d]),
                    "{d:?}, seed {seed}: {text:?}"
                );
            }
        }
    }
}
