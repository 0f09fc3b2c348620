//! The opening exchange of every connection: `Hello`, `Welcome`, and the features agreed.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    Connection, ErrorCode, Hello, Membership, Message, PROTOCOL_VERSION, ProtocolError, Welcome,
    feature,
};
use crate::content::Digest;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Client side of the opening exchange: `Hello` asking for every feature this build knows
    /// (with our group membership, if any), then the server's `Welcome`, whose `features` are
    /// the ones agreed.
    pub async fn client_handshake(
        &mut self,
        membership: Option<Membership>,
    ) -> Result<Welcome, ProtocolError> {
        let hello = Message::Hello(Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            agent: agent(),
            features: feature::ALL.iter().map(|f| f.to_string()).collect(),
            membership,
        });
        match self.request(&hello).await? {
            Message::Welcome(w) if w.version == PROTOCOL_VERSION => Ok(w),
            Message::Welcome(w) => Err(ProtocolError::Version {
                ours_min: PROTOCOL_VERSION,
                ours_max: PROTOCOL_VERSION,
                theirs_min: w.version,
                theirs_max: w.version,
            }),
            other => Err(ProtocolError::Unexpected {
                expected: "Welcome",
                received: other.name(),
            }),
        }
    }

    /// Server side of the opening exchange: waits for `Hello`, answers `Welcome` with `nonce`
    /// and the features of the `Hello` that are in `supported`; returns the `Hello` and the
    /// `Welcome`, which carries `membership` when given. `Ok(None)` if the client closed before
    /// saying anything.
    pub async fn server_handshake(
        &mut self,
        nonce: Digest,
        supported: &[&str],
        membership: Option<Membership>,
    ) -> Result<Option<(Hello, Welcome)>, ProtocolError> {
        let extra = WelcomeExtra {
            membership,
            revoked: None,
        };
        self.server_handshake_admitting(nonce, supported, extra, |_| Ok(()))
            .await
    }

    /// [`Connection::server_handshake`], answering `Welcome` only if `admit` accepts the
    /// `Hello`; otherwise `Error {FORBIDDEN, why}` is the only reply, and the error returned
    /// closes the connection.
    pub async fn server_handshake_admitting(
        &mut self,
        nonce: Digest,
        supported: &[&str],
        extra: WelcomeExtra,
        admit: impl FnOnce(&Hello) -> Result<(), String>,
    ) -> Result<Option<(Hello, Welcome)>, ProtocolError> {
        // The handshake limit counts from the connection's acceptance: the TLS handshake
        // before it took its part.
        let limit = self
            .admission()
            .map(|a| (a.handshake_timeout(), a.handshake_time_left()));
        let first = match limit {
            None => self.read_message().await,
            Some((limit, left)) => match tokio::time::timeout(left, self.read_message()).await {
                Ok(r) => r,
                Err(_) => Err(ProtocolError::Handshake {
                    millis: limit.as_millis() as u64,
                }),
            },
        };
        let hello = match first? {
            None => return Ok(None),
            Some(Message::Hello(h)) => h,
            Some(other) => {
                self.send_error(ErrorCode::BadRequest, "the first message must be Hello")
                    .await;
                return Err(ProtocolError::Unexpected {
                    expected: "Hello",
                    received: other.name(),
                });
            }
        };
        if hello.version_min > PROTOCOL_VERSION || hello.version_max < PROTOCOL_VERSION {
            self.send_error(
                ErrorCode::UnsupportedVersion,
                format!("this server speaks protocol version {PROTOCOL_VERSION}"),
            )
            .await;
            return Err(ProtocolError::Version {
                ours_min: PROTOCOL_VERSION,
                ours_max: PROTOCOL_VERSION,
                theirs_min: hello.version_min,
                theirs_max: hello.version_max,
            });
        }
        if let Err(why) = admit(&hello) {
            self.send_error(ErrorCode::Forbidden, why.clone()).await;
            return Err(ProtocolError::Refused(why));
        }
        if let Some(a) = self.admission() {
            a.greeted();
        }
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            agent: agent(),
            nonce,
            features: agreed(&hello.features, supported),
            membership: extra.membership,
            revoked: extra.revoked,
        };
        self.send(&Message::Welcome(welcome.clone())).await?;
        Ok(Some((hello, welcome)))
    }
}

/// What a private group adds to a `Welcome` (§4.2).
#[derive(Debug, Clone, Default)]
pub struct WelcomeExtra {
    /// [`Welcome::membership`].
    pub membership: Option<Membership>,
    /// [`Welcome::revoked`].
    pub revoked: Option<Vec<Digest>>,
}

/// The features of a `Hello` that the server supports, each once, in the server's order.
/// (`asked` was decoded by [`bounded_features`]: at most [`MAX_FEATURES`] short names.)
fn agreed(asked: &[String], supported: &[&str]) -> Vec<String> {
    supported
        .iter()
        .filter(|f| asked.iter().any(|a| a == *f))
        .map(|f| f.to_string())
        .collect()
}

/// Decodes a `features` list from the network keeping only what can matter: of the first
/// [`MAX_FEATURES`] names, those of at most [`MAX_FEATURE_LEN`] bytes. The rest are skipped
/// without being copied, so a frame full of names costs no more memory than its own bytes.
pub(super) fn bounded_features<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    use serde::de::{IgnoredAny, SeqAccess, Visitor};

    /// One name: kept if short, else dropped (read without a copy).
    struct Name(Option<String>);
    impl<'de> serde::Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Name;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a feature name")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Name, E> {
                    Ok(Name((v.len() <= MAX_FEATURE_LEN).then(|| v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of feature names")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut kept = Vec::new();
            let mut read = 0;
            while read < MAX_FEATURES {
                match seq.next_element::<Name>()? {
                    Some(Name(name)) => kept.extend(name),
                    None => return Ok(kept),
                }
                read += 1;
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(kept)
        }
    }
    d.deserialize_seq(List)
}

/// Features of a `Hello` a server looks at; later ones are ignored.
pub const MAX_FEATURES: usize = 32;
/// Longest feature name a server looks at.
pub const MAX_FEATURE_LEN: usize = 64;

/// This build's agent string, e.g. `peershare/0.1.0`.
pub fn agent() -> String {
    format!("peershare/{}", env!("CARGO_PKG_VERSION"))
}
