//! `SearchResultsWriter`: writes a `SearchResults` payload file by file, byte for byte what encoding the message writes, without building it first.
//!
//! The index answers a search straight from its memory: building a [`SearchResults`] first
//! took three allocations per file (name, peer list, host) and as many frees, a tenth of an
//! uncached search's time. The layout is the one `rmp_serde` gives the derived structs (maps
//! keyed by field name, integers in their shortest form, `have` left out when absent); the
//! tests pin it against [`Message::encode_payload`](super::Message::encode_payload).

use bytes::Bytes;

use super::{MAX_CONTROL_PAYLOAD, ProtocolError, SearchResults};
use crate::content::{ContentId, Digest};

/// One peer of a file in a search reply, borrowed from wherever the index keeps it.
#[derive(Debug, Clone, Copy)]
pub struct PeerHitRef<'a> {
    /// [`super::PeerHit::peer_id`].
    pub peer_id: u64,
    /// [`super::PeerHit::host`].
    pub host: &'a str,
    /// [`super::PeerHit::port`].
    pub port: u16,
    /// [`super::PeerHit::key`].
    pub key: Option<&'a Digest>,
    /// [`super::PeerHit::shared_at`].
    pub shared_at: i64,
    /// [`super::PeerHit::last_seen`].
    pub last_seen: i64,
    /// [`super::PeerHit::have`].
    pub have: Option<&'a [u8]>,
    /// [`super::PeerHit::path`].
    pub path: Option<&'a str>,
    /// [`super::PeerHit::reach`].
    pub reach: Option<&'a str>,
}

/// Writes a `SearchResults` payload: [`SearchResultsWriter::new`] with the number of files,
/// then each file ([`SearchResultsWriter::file`]) followed by exactly as many
/// [`SearchResultsWriter::peer`] calls as it said, then [`SearchResultsWriter::finish`].
pub struct SearchResultsWriter {
    buf: Vec<u8>,
}

/// Takes a write's result: writing into a `Vec` never fails (rmp's errors are the writer's).
fn wrote<T, E>(_: Result<T, E>) {}

impl SearchResultsWriter {
    /// Starts a reply of `files` files, with room for `room` bytes; `estimated`: whether the
    /// total given to [`SearchResultsWriter::finish`] will be an estimate.
    pub fn new(files: u32, room: usize, estimated: bool) -> Self {
        let mut buf = Vec::with_capacity(room.min(MAX_CONTROL_PAYLOAD));
        wrote(rmp::encode::write_map_len(
            &mut buf,
            3 + u32::from(estimated),
        ));
        wrote(rmp::encode::write_str(&mut buf, "files"));
        wrote(rmp::encode::write_array_len(&mut buf, files));
        SearchResultsWriter { buf }
    }

    /// Starts a file that has `peers` peers.
    pub fn file(&mut self, name: &str, size: u64, content_id: &ContentId, peers: u32) {
        if self.buf.len() > MAX_CONTROL_PAYLOAD {
            return;
        }
        let b = &mut self.buf;
        wrote(rmp::encode::write_map_len(b, 4));
        wrote(rmp::encode::write_str(b, "name"));
        wrote(rmp::encode::write_str(b, name));
        wrote(rmp::encode::write_str(b, "size"));
        wrote(rmp::encode::write_uint(b, size));
        wrote(rmp::encode::write_str(b, "content_id"));
        wrote(rmp::encode::write_bin(b, content_id.as_bytes()));
        wrote(rmp::encode::write_str(b, "peers"));
        wrote(rmp::encode::write_array_len(b, peers));
    }

    /// One peer of the file last started.
    pub fn peer(&mut self, p: &PeerHitRef<'_>) {
        if self.buf.len() > MAX_CONTROL_PAYLOAD {
            return; // Refused at the end: no need to write (and hold) more.
        }
        let b = &mut self.buf;
        wrote(rmp::encode::write_map_len(
            b,
            6 + u32::from(p.have.is_some())
                + u32::from(p.path.is_some())
                + u32::from(p.reach.is_some()),
        ));
        wrote(rmp::encode::write_str(b, "peer_id"));
        wrote(rmp::encode::write_uint(b, p.peer_id));
        wrote(rmp::encode::write_str(b, "host"));
        wrote(rmp::encode::write_str(b, p.host));
        wrote(rmp::encode::write_str(b, "port"));
        wrote(rmp::encode::write_uint(b, u64::from(p.port)));
        wrote(rmp::encode::write_str(b, "key"));
        match p.key {
            Some(k) => wrote(rmp::encode::write_bin(b, &k.0)),
            None => wrote(rmp::encode::write_nil(b)),
        }
        wrote(rmp::encode::write_str(b, "shared_at"));
        wrote(rmp::encode::write_sint(b, p.shared_at));
        wrote(rmp::encode::write_str(b, "last_seen"));
        wrote(rmp::encode::write_sint(b, p.last_seen));
        if let Some(have) = p.have {
            wrote(rmp::encode::write_str(b, "have"));
            wrote(rmp::encode::write_bin(b, have));
        }
        if let Some(path) = p.path {
            wrote(rmp::encode::write_str(b, "path"));
            wrote(rmp::encode::write_str(b, path));
        }
        if let Some(reach) = p.reach {
            wrote(rmp::encode::write_str(b, "reach"));
            wrote(rmp::encode::write_str(b, reach));
        }
    }

    /// Writes a reply already built as a message, through the writer (what the tests and the
    /// fuzz target compare with the message's own encoding).
    pub fn write_built(r: &SearchResults) -> Result<Bytes, ProtocolError> {
        let mut w = SearchResultsWriter::new(r.files.len() as u32, 0, r.estimated);
        for f in &r.files {
            w.file(&f.name, f.size, &f.content_id, f.peers.len() as u32);
            for p in &f.peers {
                w.peer(&PeerHitRef {
                    peer_id: p.peer_id,
                    host: &p.host,
                    port: p.port,
                    key: p.key.as_ref(),
                    shared_at: p.shared_at,
                    last_seen: p.last_seen,
                    have: p.have.as_deref(),
                    path: p.path.as_deref(),
                    reach: p.reach.as_deref(),
                });
            }
        }
        w.finish(r.truncated, r.total, r.estimated)
    }

    /// Ends the reply; a payload over the frame limit is [`ProtocolError::FrameTooLarge`]
    /// (once past it, nothing more was written: `received` says where writing stopped).
    /// `estimated` must be what [`SearchResultsWriter::new`] was told.
    pub fn finish(
        mut self,
        truncated: bool,
        total: u64,
        estimated: bool,
    ) -> Result<Bytes, ProtocolError> {
        wrote(rmp::encode::write_str(&mut self.buf, "truncated"));
        wrote(rmp::encode::write_bool(&mut self.buf, truncated));
        wrote(rmp::encode::write_str(&mut self.buf, "total"));
        wrote(rmp::encode::write_uint(&mut self.buf, total));
        if estimated {
            wrote(rmp::encode::write_str(&mut self.buf, "estimated"));
            wrote(rmp::encode::write_bool(&mut self.buf, true));
        }
        if self.buf.len() > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::FrameTooLarge {
                max: MAX_CONTROL_PAYLOAD,
                received: self.buf.len(),
            });
        }
        Ok(Bytes::from(self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileHit, Message, PeerHit};

    fn written(r: &SearchResults) -> Bytes {
        SearchResultsWriter::write_built(r).unwrap()
    }

    fn serde(r: &SearchResults) -> Bytes {
        Message::SearchResults(r.clone()).encode_payload().unwrap()
    }

    /// Integers at each boundary of MessagePack's widths.
    const EDGES: [u64; 11] = [
        0,
        1,
        127,
        128,
        255,
        256,
        65_535,
        65_536,
        u32::MAX as u64,
        1 << 40,
        u64::MAX,
    ];

    fn peer(k: u64) -> PeerHit {
        PeerHit {
            peer_id: k,
            // With and without a key.
            key: (!k.is_multiple_of(3)).then_some(Digest([k as u8; 32])),
            host: "h".repeat(k as usize % 40),
            port: (k * 977 % 65_536) as u16,
            // Every width, both signs.
            shared_at: match EDGES[k as usize % EDGES.len()] as i64 {
                e if k % 2 == 1 => e.wrapping_neg(),
                e => e,
            },
            last_seen: 1_764_000_000_000 + k as i64,
            have: k.is_multiple_of(3).then(|| vec![0xA5; k as usize % 70]),
            path: (!k.is_multiple_of(4)).then(|| format!("d{k}/").repeat(k as usize % 9) + "n"),
            reach: (k.is_multiple_of(5)).then(|| "relay".into()),
        }
    }

    #[test]
    fn writes_what_encoding_the_message_writes() {
        // Integers at every width boundary, names up to str8/str16/str32 lengths, peers with
        // and without `have`, empty lists, both `truncated` values.
        let names = [0usize, 1, 31, 32, 255, 256, 65_535, 65_536];
        for files in [0usize, 1, 2, 17] {
            for truncated in [false, true] {
                let r = SearchResults {
                    files: (0..files)
                        .map(|i| FileHit {
                            name: "é".repeat(names[i % names.len()] / 2) + &"n".repeat(i % 2),
                            size: EDGES[i % EDGES.len()],
                            content_id: ContentId::from(blake3::hash(&i.to_le_bytes())),
                            peers: (0..(i as u64 * 7 % 20))
                                .map(|k| peer(k + i as u64))
                                .collect(),
                        })
                        .collect(),
                    truncated,
                    total: EDGES[files % EDGES.len()],
                    estimated: files % 2 == 1,
                };
                assert_eq!(
                    written(&r),
                    serde(&r),
                    "{files} files, truncated {truncated}"
                );
            }
        }
    }

    #[test]
    fn a_reply_over_the_frame_limit_is_refused_and_stops_growing() {
        let id = ContentId::from(blake3::hash(b""));
        let mut w = SearchResultsWriter::new(2, 0, false);
        w.file(&"x".repeat(MAX_CONTROL_PAYLOAD), 1, &id, 0);
        w.file("more", 1, &id, 100_000);
        let host = "h".repeat(200);
        for k in 0..100_000 {
            w.peer(&PeerHitRef {
                peer_id: k,
                host: &host,
                port: 1,
                key: None,
                shared_at: 0,
                last_seen: 0,
                have: None,
                path: None,
                reach: None,
            });
        }
        match w.finish(false, 0, false) {
            Err(ProtocolError::FrameTooLarge { max, received }) => {
                assert_eq!(max, MAX_CONTROL_PAYLOAD);
                assert!(
                    received < MAX_CONTROL_PAYLOAD + 100,
                    "{received} bytes held"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pins_one_reply_byte_for_byte() {
        let r = SearchResults {
            files: vec![FileHit {
                name: "a".into(),
                size: 300,
                content_id: ContentId::from_bytes([7; 32]),
                peers: vec![PeerHit {
                    peer_id: 2,
                    host: "::1".into(),
                    port: 50_000,
                    key: Some(Digest([9; 32])),
                    shared_at: 5,
                    last_seen: -1,
                    have: None,
                    path: Some("d/a".into()),
                    reach: None,
                }],
            }],
            truncated: true,
            total: 1,
            estimated: false,
        };
        let mut want =
            b"\x83\xa5files\x91\x84\xa4name\xa1a\xa4size\xcd\x01\x2c\xaacontent_id\xc4\x20"
                .to_vec();
        want.extend([7; 32]);
        want.extend(b"\xa5peers\x91\x87\xa7peer_id\x02\xa4host\xa3::1\xa4port\xcd\xc3\x50");
        want.extend(b"\xa3key\xc4\x20");
        want.extend([9; 32]);
        want.extend(b"\xa9shared_at\x05\xa9last_seen\xff\xa4path\xa3d/a");
        want.extend(b"\xa9truncated\xc3\xa5total\x01");
        assert_eq!(written(&r).as_ref(), &want[..]);
    }
}
