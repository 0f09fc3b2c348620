//! Properties that must hold for any bytes a peer can send: the bodies of the fuzz targets in `fuzz/` and of the corpus replay test.
//!
//! Each function takes arbitrary bytes and panics when a property is broken (that is how a
//! fuzzer notices); any input that does not break one returns normally, whether it decoded or
//! not. They are public so that `fuzz/` (a crate of its own, built with cargo-fuzz) and
//! `tests/fuzz_corpus.rs` (run by `cargo test` on stable) check exactly the same things.

use bytes::{Bytes, BytesMut};

use super::{
    FileHit, Frame, LENGTH_PREFIX_LEN, MAX_CONTROL_PAYLOAD, MAX_FRAME_LEN, Message, PeerHit,
    ProtocolError, SearchResults, SearchResultsWriter, tag,
};
use crate::content::{ContentId, Digest};

/// What parsing a byte stream into frames gave: the frames, then how it stopped.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    frames: Vec<Frame>,
    /// `None`: the input ended (between or inside a frame); `Some`: the error's text.
    error: Option<String>,
    /// Bytes left in the buffer when the input ended or the error came.
    left: usize,
}

fn parse_all(buf: &mut BytesMut, into: &mut Parsed) -> bool {
    loop {
        match Frame::parse(buf) {
            Ok(Some(f)) => into.frames.push(f),
            Ok(None) => return true,
            Err(e) => {
                into.error = Some(e.to_string());
                return false;
            }
        }
    }
}

/// Feeds `data` to [`Frame::parse`] in chunks of `chunk` bytes (0: all at once), as reads
/// off a socket would, and also checks that the buffer never reserves more than one frame.
fn parse_stream(data: &[u8], chunk: usize) -> Parsed {
    let mut buf = BytesMut::new();
    let mut out = Parsed {
        frames: Vec::new(),
        error: None,
        left: 0,
    };
    let step = if chunk == 0 { data.len().max(1) } else { chunk };
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        let going = parse_all(&mut buf, &mut out);
        // A hostile length prefix must not make the buffer grow past one largest frame (plus
        // what was already received and the allocator's rounding).
        let bound = 2 * (LENGTH_PREFIX_LEN + MAX_FRAME_LEN).max(buf.len());
        if buf.capacity() > bound {
            panic!(
                "buffer of {} bytes reserved for {} buffered",
                buf.capacity(),
                buf.len()
            );
        }
        if !going {
            break;
        }
    }
    // After an error the connection closes: what was still buffered then depends on the
    // chunks, and does not matter.
    out.left = if out.error.is_some() { 0 } else { buf.len() };
    out
}

/// Frame parsing over a byte stream: the same frames and the same error whatever the chunks
/// the stream arrives in; every frame within the limits and re-encoded to exactly the bytes it
/// came from; every frame that decodes keeps [`message`]'s properties.
pub fn frames(data: &[u8]) {
    let chunk = data.first().map_or(1, |b| usize::from(*b % 64) + 1);
    let whole = parse_stream(data, 0);
    let chunked = parse_stream(data, chunk);
    if whole != chunked {
        panic!(
            "chunks of {chunk} bytes parse differently: {} frames, {:?}, {} left vs {} frames, {:?}, {} left",
            whole.frames.len(),
            whole.error,
            whole.left,
            chunked.frames.len(),
            chunked.error,
            chunked.left
        );
    }
    let mut consumed = Vec::with_capacity(data.len());
    for f in &whole.frames {
        if f.payload.len() + 1 > MAX_FRAME_LEN {
            panic!("frame of {} bytes parsed", f.payload.len() + 1);
        }
        match Frame::header(f.tag, f.payload.len()) {
            Ok(h) => consumed.extend_from_slice(&h),
            Err(e) => panic!("a parsed frame cannot be written again: {e}"),
        }
        consumed.extend_from_slice(&f.payload);
        check_decoded(f.tag, &f.payload);
    }
    if !data.starts_with(&consumed) {
        panic!("the frames parsed are not the bytes they came from");
    }
    if whole.error.is_none() && consumed.len() + whole.left != data.len() {
        panic!(
            "{} bytes parsed and {} left of {}",
            consumed.len(),
            whole.left,
            data.len()
        );
    }
}

/// Message decoding, both protocols: `data[0]` is the tag, the rest the payload. Whatever
/// decodes encodes again within the limits, decodes to the same message, and encodes to the
/// same bytes a second time (one canonical encoding).
pub fn message(data: &[u8]) {
    let Some((&t, payload)) = data.split_first() else {
        return;
    };
    check_decoded(t, payload);
}

fn check_decoded(t: u8, payload: &[u8]) {
    let frame = Frame {
        tag: t,
        payload: Bytes::copy_from_slice(payload),
    };
    let Ok(m) = Message::decode(frame) else {
        return;
    };
    if m.tag() != t {
        panic!("tag {t:#04x} decoded as {}", m.name());
    }
    let first = match m.encode_payload() {
        Ok(p) => p,
        // The decoder is lenient (a missing `ephemeral` is `false`), so a payload at the limit
        // may come out a few bytes larger; anything else is a bug.
        Err(ProtocolError::FrameTooLarge { .. }) if payload.len() + 64 > MAX_CONTROL_PAYLOAD => {
            return;
        }
        Err(e) => panic!("{} decoded but does not encode: {e}", m.name()),
    };
    if t != tag::PIECE && first.len() > MAX_CONTROL_PAYLOAD {
        panic!("{} encodes to {} bytes", m.name(), first.len());
    }
    let again = match Message::decode(Frame {
        tag: t,
        payload: first.clone(),
    }) {
        Ok(a) => a,
        Err(e) => panic!("{} encodes to bytes it cannot decode: {e}", m.name()),
    };
    if again != m {
        panic!("{} changed in a round trip: {m:?} vs {again:?}", m.name());
    }
    match again.encode_payload() {
        Ok(second) if second == first => {}
        Ok(_) => panic!("{} has two encodings", m.name()),
        Err(e) => panic!("{} encodes once but not twice: {e}", m.name()),
    }
}

/// Reads values out of fuzzer bytes; past the end every read gives zeros.
struct Draw<'a>(&'a [u8]);

/// Integers at every MessagePack width boundary, both signs, so few bytes reach them all.
const EDGES: [i128; 20] = [
    0,
    1,
    127,
    128,
    255,
    256,
    65_535,
    65_536,
    4_294_967_295,
    4_294_967_296,
    u64::MAX as i128,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32_768,
    -32_769,
    -2_147_483_649,
    i64::MIN as i128,
];

impl Draw<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a.to_vec()
    }

    /// An integer: a width boundary (selector below 2 × 20) or 8 raw bytes, clamped to the type.
    fn int(&mut self, min: i128, max: i128) -> i128 {
        let sel = usize::from(self.byte());
        let v = match EDGES.get(sel / 2) {
            Some(&e) if sel % 2 == 0 => e,
            Some(&e) => e + 1,
            None => {
                let mut raw = [0u8; 8];
                for b in &mut raw {
                    *b = self.byte();
                }
                // Odd selectors shift into the upper half of u64.
                i128::from(i64::from_le_bytes(raw)) + if sel % 2 == 1 { 1i128 << 63 } else { 0 }
            }
        };
        v.clamp(min, max)
    }

    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 48);
        String::from_utf8_lossy(&self.bytes(n)).into_owned()
    }
}

/// The search reply's encoder and decoder: a reply drawn from `data` is written by
/// [`SearchResultsWriter`] byte for byte as encoding the message writes it, and decodes back
/// to the same reply.
pub fn search_reply(data: &[u8]) {
    let mut d = Draw(data);
    let n_files = usize::from(d.byte() % 9);
    let mut files = Vec::with_capacity(n_files);
    for _ in 0..n_files {
        let name = d.text();
        let size = d.int(0, u64::MAX as i128) as u64;
        let mut id = [0u8; 32];
        let seed = d.bytes(32);
        id[..seed.len()].copy_from_slice(&seed);
        let n_peers = usize::from(d.byte() % 5);
        let mut peers = Vec::with_capacity(n_peers);
        for _ in 0..n_peers {
            let peer_id = d.int(0, u64::MAX as i128) as u64;
            let host = d.text();
            let port = d.int(0, u16::MAX as i128) as u16;
            let shared_at = d.int(i64::MIN as i128, i64::MAX as i128) as i64;
            let last_seen = d.int(i64::MIN as i128, i64::MAX as i128) as i64;
            let have = match d.byte() {
                b if b % 3 == 0 => None,
                b => Some(d.bytes(usize::from(b % 40))),
            };
            let key = (d.byte() % 2 == 0).then(|| Digest([d.byte(); 32]));
            let path = (d.byte() % 2 == 0).then(|| d.text());
            peers.push(PeerHit {
                peer_id,
                host,
                port,
                key,
                shared_at,
                last_seen,
                have,
                path,
                reach: (d.byte() % 2 == 0).then(|| d.text()),
            });
        }
        files.push(FileHit {
            name,
            size,
            content_id: ContentId::from_bytes(id),
            peers,
        });
    }
    let reply = SearchResults {
        files,
        truncated: d.byte() & 1 == 1,
        total: d.int(0, u64::MAX as i128) as u64,
        estimated: d.byte() & 1 == 1,
    };
    let written = match SearchResultsWriter::write_built(&reply) {
        Ok(b) => b,
        Err(e) => panic!("a small reply was refused: {e}"),
    };
    let message = Message::SearchResults(reply);
    match message.encode_payload() {
        Ok(encoded) if encoded == written => {}
        Ok(_) => panic!("the writer and the encoder disagree on {message:?}"),
        Err(e) => panic!("the reply does not encode: {e}"),
    }
    match Message::decode(Frame {
        tag: tag::SEARCH_RESULTS,
        payload: written,
    }) {
        Ok(back) if back == message => {}
        Ok(back) => panic!("the reply came back changed: {back:?}"),
        Err(e) => panic!("the written reply does not decode: {e}"),
    }
}
