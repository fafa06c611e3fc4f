//! The one place that knows how messages become bytes.
//!
//! Every QUIC request and reply is one postcard document on its own
//! stream; the stream's end delimits it, so there is no length prefix to
//! forge. Swapping the format means changing only this module (and the
//! ALPN in `wire.rs`: `peergrid/1` was bincode 2, which is unmaintained,
//! RUSTSEC-2025-0141; `peergrid/2` and later are postcard, a documented, stable
//! format that wasmtime already brings into the tree).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::MAX_FRAME;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message of {0} bytes is larger than the {MAX_FRAME}-byte frame limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("malformed message: {0} unexpected trailing bytes")]
    Trailing(usize),
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `msg` for the wire.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_allocvec(msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes a whole frame. Bytes from a stranger end here: any shape other
/// than exactly one well-formed `T` is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    // Postcard reads lengths as it goes and never allocates ahead of the
    // bytes it has (serde caps preallocation), so a forged length costs
    // nothing; the frame limit above bounds the whole.
    let (msg, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Exchange, Request};
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let req = Request::Exchange(Exchange {
            reports: vec![],
            want: 3,
            returned: vec![],
            held: Some(vec![7]),
        });
        let mut bytes = encode(&req).unwrap();
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }

    proptest! {
        // Arbitrary bytes from a stranger decode to a message or an error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
        }
    }
}
