//! Share links: one file (content id, name, size) and optionally where to find it and an invite, as a `peershare:?…` URI.

use std::fmt;
use std::str::FromStr;

use super::{Invite, InviteError, echo, is_host_port};
use crate::content::ContentId;
use crate::identity::split_address;
use crate::text::Escaped;

/// What every share link starts with.
pub const LINK_PREFIX: &str = "peershare:?";

/// Longest link parsed, in bytes: far more than any real one, and a bound on the work a
/// pasted or received link can cause.
pub const MAX_LINK_LEN: usize = 8 * 1024;

/// Longest file name in a link, in bytes (a common file system limit).
pub const MAX_NAME_BYTES: usize = 255;

/// A link to one file: `peershare:?cid=<64 hex>&name=<name>&size=<bytes>[&index=<addr>]
/// [&invite=<token>]`, values percent-encoded (everything but `A-Za-z0-9-._~`; `+` is a plus,
/// not a space). A parser takes the keys in any order, refuses a known key given twice and
/// ignores unknown ones, so later versions can add keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// The file's content id.
    pub content_id: ContentId,
    /// The file's name, which becomes a file name: one path component, no control or invisible
    /// characters, at most [`MAX_NAME_BYTES`] bytes.
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The index to find sources through: `HOST:PORT` or `HOST:PORT#FINGERPRINT`.
    pub index: Option<String>,
    /// An invite to the (private) index that has the file.
    pub invite: Option<Invite>,
}

/// Why a string is not a share link. Messages are one line; input is echoed at most 80
/// characters long, escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Longer than [`MAX_LINK_LEN`].
    #[error("the link is {0} bytes long, more than the {MAX_LINK_LEN} a link may have")]
    TooLong(usize),
    /// It does not start with [`LINK_PREFIX`].
    #[error("not a peershare link (it starts with {LINK_PREFIX}): \"{}\"", Escaped(.0))]
    NotLink(String),
    /// A required key is absent.
    #[error("the link has no {0}= (was it copied whole?)")]
    Missing(&'static str),
    /// A known key is given twice.
    #[error("the link gives {0}= twice")]
    Duplicate(&'static str),
    /// A value's percent-encoding is broken or does not decode to UTF-8.
    #[error("the link's {key}= is not percent-encoded UTF-8: \"{}\"", Escaped(.value))]
    Encoding {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// `cid` is not 64 hex digits.
    #[error("the link's cid= is not a content id (64 hex characters): \"{}\"", Escaped(.0))]
    ContentId(String),
    /// `size` is not a decimal number of bytes.
    #[error("the link's size= is not a number of bytes: \"{}\"", Escaped(.0))]
    Size(String),
    /// `name` cannot be a file name.
    #[error("the link's name= cannot be a file name ({why}): \"{}\"", Escaped(.name))]
    Name {
        /// What is wrong with it.
        why: &'static str,
        /// The name.
        name: String,
    },
    /// `index` is not `HOST:PORT` or `HOST:PORT#FINGERPRINT`.
    #[error("the link's index= is not HOST:PORT or HOST:PORT#KEY: \"{}\"", Escaped(.0))]
    Index(String),
    /// `invite` is not an invite token.
    #[error("the link's invite= is not usable: {0}")]
    Invite(InviteError),
    /// `index` names a key and the invite another one.
    #[error("the link's index= and invite= name different index keys")]
    KeyMismatch,
}

/// Percent-encodes `s`: every byte but the unreserved characters of RFC 3986.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        }
    }
    out
}

const HEX: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F',
];

/// Decodes `%XX` escapes (either case); everything else stands for itself. `None` if an escape
/// is cut short or not hex, or the bytes are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = char::from(bytes.next()?).to_digit(16)?;
        let lo = char::from(bytes.next()?).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
    }
    String::from_utf8(out).ok()
}

/// Checks that a name from a link can be a file name as it is.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty")
    } else if name.len() > MAX_NAME_BYTES {
        Err("longer than 255 bytes")
    } else if name == "." || name == ".." {
        Err("a directory")
    } else if name.contains('/') {
        Err("contains '/'")
    } else if name.contains('\0') {
        Err("contains a NUL")
    } else if name.chars().any(crate::text::is_hidden) {
        // Control characters, and also invisible ones such as U+202E, which would let
        // "\u{202e}gnp.exe" pose as "exe.png".
        Err("contains control or invisible characters")
    } else {
        Ok(())
    }
}

impl fmt::Display for ShareLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LINK_PREFIX}cid={}&name={}&size={}",
            self.content_id,
            encode(&self.name),
            self.size
        )?;
        if let Some(index) = &self.index {
            write!(f, "&index={}", encode(index))?;
        }
        if let Some(invite) = &self.invite {
            write!(f, "&invite={}", encode(&invite.to_string()))?;
        }
        Ok(())
    }
}

impl FromStr for ShareLink {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<ShareLink, LinkError> {
        if s.len() > MAX_LINK_LEN {
            return Err(LinkError::TooLong(s.len()));
        }
        let query = s
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| LinkError::NotLink(echo(s)))?;
        const KEYS: [&str; 5] = ["cid", "name", "size", "index", "invite"];
        let mut values: [Option<String>; 5] = Default::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(i) = KEYS.iter().position(|k| *k == key) else {
                continue;
            };
            if values[i].is_some() {
                return Err(LinkError::Duplicate(KEYS[i]));
            }
            values[i] = Some(decode(value).ok_or_else(|| LinkError::Encoding {
                key: KEYS[i],
                // An invite holds a secret: never repeated in an error.
                value: match KEYS[i] {
                    "invite" => "(not shown: it holds a secret)".into(),
                    _ => echo(value),
                },
            })?);
        }
        let [cid, name, size, index, invite] = values;
        let cid = cid.ok_or(LinkError::Missing("cid"))?;
        let name = name.ok_or(LinkError::Missing("name"))?;
        let size = size.ok_or(LinkError::Missing("size"))?;
        let content_id = cid.parse().map_err(|_| LinkError::ContentId(echo(&cid)))?;
        check_name(&name).map_err(|why| LinkError::Name {
            why,
            name: echo(&name),
        })?;
        // Digits only: `u64::from_str` would also take a leading '+'.
        let size = Some(&size)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| LinkError::Size(echo(&size)))?;
        let index_key = match &index {
            None => None,
            Some(a) => match split_address(a) {
                Ok((addr, key)) if is_host_port(addr) => key,
                _ => return Err(LinkError::Index(echo(a))),
            },
        };
        let invite: Option<Invite> = invite
            .map(|t| t.parse())
            .transpose()
            .map_err(LinkError::Invite)?;
        if let (Some(key), Some(invite)) = (index_key, &invite)
            && key != invite.key
        {
            return Err(LinkError::KeyMismatch);
        }
        Ok(ShareLink {
            content_id,
            name,
            size,
            index,
            invite,
        })
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
