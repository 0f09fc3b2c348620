//! Framing: a length prefix, a one-byte message tag and a payload, checked before anything is allocated.
//!
//! ```text
//! +-------------------+---------+----------------------------+
//! | length: u32 (BE)  | tag: u8 | payload: length - 1 bytes  |
//! +-------------------+---------+----------------------------+
//! ```

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;
use crate::content::PIECE_SIZE;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Largest payload of a control message (everything except piece data).
pub const MAX_CONTROL_PAYLOAD: usize = 1024 * 1024;
/// Bytes before the data in a `Piece` payload: the piece index (u32 BE).
pub const PIECE_HEADER_LEN: usize = 4;
/// Largest `length` field accepted: the tag plus the largest payload the protocol defines.
pub const MAX_FRAME_LEN: usize =
    1 + max(MAX_CONTROL_PAYLOAD, PIECE_HEADER_LEN + PIECE_SIZE as usize);
/// Largest frame (prefix included) a server buffers in a connection's own small buffer;
/// a larger one first takes its size from the server's shared
/// [`MemoryBudget`](super::MemoryBudget).
pub const SMALL_FRAME_LEN: usize = 16 * 1024;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// One frame as read off the wire: its tag and its payload, not yet decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Which message ([`super::tag`]).
    pub tag: u8,
    /// The bytes after the tag.
    pub payload: Bytes,
}

impl Frame {
    /// Checks whether `buf` starts with a whole frame; if so removes and returns it.
    ///
    /// `Ok(None)` means "incomplete, read more" (the caller makes room: nothing is allocated
    /// here). A length of zero or above [`MAX_FRAME_LEN`] is an error, detected from the
    /// prefix alone.
    pub fn parse(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        Self::parse_max(buf, MAX_FRAME_LEN)
    }

    /// [`Frame::parse`] with a lower limit than [`MAX_FRAME_LEN`] on the `length` field.
    pub fn parse_max(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
        let Some(len) = Self::pending_len(buf, max_len)? else {
            return Ok(None);
        };
        if buf.len() < LENGTH_PREFIX_LEN + len {
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_LEN);
        let mut body = buf.split_to(len);
        let tag = body[0];
        body.advance(1);
        Ok(Some(Frame {
            tag,
            payload: body.freeze(),
        }))
    }

    /// The `length` field of the frame `buf` starts with, once its prefix is in, checked
    /// against `max_len` (at most [`MAX_FRAME_LEN`]).
    pub fn pending_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, ProtocolError> {
        if buf.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        let max = max_len.min(MAX_FRAME_LEN);
        if len > max {
            return Err(ProtocolError::FrameTooLarge { max, received: len });
        }
        Ok(Some(len))
    }

    /// The frame's header (length prefix and tag) for a payload of `payload_len` bytes.
    pub fn header(tag: u8, payload_len: usize) -> Result<[u8; 5], ProtocolError> {
        let len = payload_len + 1;
        if len > MAX_FRAME_LEN {
            return Err(ProtocolError::FrameTooLarge {
                max: MAX_FRAME_LEN,
                received: len,
            });
        }
        let l = (len as u32).to_be_bytes();
        Ok([l[0], l[1], l[2], l[3], tag])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_not_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(Frame::parse(&mut buf).unwrap(), None);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 7, 1][..]);
        assert_eq!(Frame::parse(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[2, 99]);
        let f = Frame::parse(&mut buf).unwrap().unwrap();
        assert_eq!(f.tag, 7);
        assert_eq!(&f.payload[..], &[1, 2]);
        assert_eq!(&buf[..], &[99]);
    }

    #[test]
    fn oversized_and_empty_frames_are_rejected_from_the_prefix() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        match Frame::parse(&mut buf) {
            Err(ProtocolError::FrameTooLarge { max, received }) => {
                assert_eq!(max, MAX_FRAME_LEN);
                assert_eq!(received, u32::MAX as usize);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.capacity() < 1024, "no allocation for a hostile length");
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            Frame::parse(&mut buf),
            Err(ProtocolError::EmptyFrame)
        ));
    }
}
