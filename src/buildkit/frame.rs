//! gRPC's message framing (the "Length-Prefixed-Message" of the gRPC over
//! HTTP/2 protocol): a 1-byte compressed flag, a 4-byte big-endian length,
//! then the message.
//!
//! Only unary requests cistern reads are parsed here: exactly one message,
//! uncompressed (a compressed request cistern must judge is refused rather
//! than decompressed). Streams cistern does not read are never framed.

use thiserror::Error;

/// The prefix before each message.
pub const PREFIX: usize = 5;

/// Why a request body is not one readable gRPC message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("the request is shorter than its gRPC message header")]
    Short,
    #[error("the request's gRPC message length does not match its body")]
    Length,
    #[error("the request is compressed; cistern reads uncompressed requests only")]
    Compressed,
    #[error("the request carries more than one gRPC message")]
    Trailing,
}

/// The one message of a unary request body.
pub fn single(body: &[u8]) -> Result<&[u8], FrameError> {
    if body.len() < PREFIX {
        return Err(FrameError::Short);
    }
    match body[0] {
        0 => {}
        1 => return Err(FrameError::Compressed),
        _ => return Err(FrameError::Length),
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = &body[PREFIX..];
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(FrameError::Length),
        std::cmp::Ordering::Greater => Err(FrameError::Trailing),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

/// `message` framed, uncompressed.
pub fn encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_round_trips() {
        let framed = encode(b"abc");
        assert_eq!(framed, [0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(single(&framed), Ok(&b"abc"[..]));
        assert_eq!(single(&encode(b"")), Ok(&b""[..]));
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(single(b""), Err(FrameError::Short));
        assert_eq!(single(&[0, 0, 0]), Err(FrameError::Short));
        assert_eq!(single(&[1, 0, 0, 0, 0]), Err(FrameError::Compressed));
        assert_eq!(single(&[2, 0, 0, 0, 0]), Err(FrameError::Length));
        assert_eq!(single(&[0, 0, 0, 0, 2, 1]), Err(FrameError::Length));
        assert_eq!(single(&[0, 0, 0, 0, 0, 1]), Err(FrameError::Trailing));
        assert_eq!(single(&[0, 255, 255, 255, 255]), Err(FrameError::Length));
    }
}
