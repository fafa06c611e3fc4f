//! Many blobs in one upload (`POST /api/v1/blobs`): a body of frames, each
//! `hash (32 bytes) | length (u32, big-endian) | bytes`. The server checks
//! every blob against its hash as it arrives and stores it; a researcher
//! submitting a job of 100,000 inputs makes a few requests instead of
//! 100,000.
//!
//! [`BatchDecoder`] takes the body in whatever pieces the network delivers
//! and holds at most one incomplete frame, so what a stranger's body can
//! make it buffer is bounded by the largest blob it accepts.

use crate::Hash;

/// Bytes before a frame's blob: its hash and its length.
pub const FRAME_HEADER: usize = 32 + 4;

/// Appends one frame to `out`.
///
/// # Panics
/// If `bytes` is 4 GiB or more (no blob is near that: see `limits`).
pub fn encode_frame(out: &mut Vec<u8>, hash: &Hash, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a blob under 4 GiB");
    out.reserve(FRAME_HEADER + bytes.len());
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Why a batch was refused; `index` counts frames from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("blob {index} ({hash}) is {len} bytes; a blob is at most {max} bytes")]
    TooLarge {
        index: u64,
        hash: Hash,
        len: u64,
        max: usize,
    },
    #[error(
        "blob {index}'s bytes do not hash to its name {hash}; the upload was corrupted (blobs before it were stored)"
    )]
    WrongHash { index: u64, hash: Hash },
    #[error("the upload ends inside blob {index}: at least {missing} more bytes were expected")]
    Truncated { index: u64, missing: u64 },
}

/// Splits a batch body into checked blobs as its bytes arrive.
#[derive(Debug)]
pub struct BatchDecoder {
    /// Unconsumed bytes: at most one frame's worth, and the piece that
    /// completed it.
    buf: Vec<u8>,
    max_blob: usize,
    /// Frames decoded so far.
    index: u64,
    /// The error that stopped the batch: every later call returns it.
    failed: Option<BatchError>,
}

impl BatchDecoder {
    /// A decoder refusing blobs over `max_blob` bytes.
    pub fn new(max_blob: usize) -> BatchDecoder {
        BatchDecoder {
            buf: Vec::new(),
            max_blob,
            index: 0,
            failed: None,
        }
    }

    /// Frames decoded so far.
    pub fn blobs(&self) -> u64 {
        self.index
    }

    /// Takes the next piece of the body and appends the blobs it completed
    /// to `blobs`, each checked against its hash. On an error, `blobs` has
    /// those before the bad frame.
    pub fn push(
        &mut self,
        piece: &[u8],
        blobs: &mut Vec<(Hash, Vec<u8>)>,
    ) -> Result<(), BatchError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pushed = self.decode(piece, blobs);
        if let Err(e) = &pushed {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        pushed
    }

    fn decode(&mut self, piece: &[u8], blobs: &mut Vec<(Hash, Vec<u8>)>) -> Result<(), BatchError> {
        self.buf.extend_from_slice(piece);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if rest.len() < FRAME_HEADER {
                break;
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&rest[..32]);
            let hash = Hash(hash);
            let len = u32::from_be_bytes([rest[32], rest[33], rest[34], rest[35]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > self.max_blob {
                return Err(BatchError::TooLarge {
                    index: self.index,
                    hash,
                    len: len as u64,
                    max: self.max_blob,
                });
            }
            if rest.len() < FRAME_HEADER + len {
                break;
            }
            let bytes = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if Hash::of(bytes) != hash {
                return Err(BatchError::WrongHash {
                    index: self.index,
                    hash,
                });
            }
            blobs.push((hash, bytes.to_vec()));
            self.index += 1;
            at += FRAME_HEADER + len;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// Ends the body: refuses one that stops inside a frame.
    pub fn finish(self) -> Result<u64, BatchError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(self.index);
        }
        let expected = if self.buf.len() < FRAME_HEADER {
            FRAME_HEADER
        } else {
            let len = u32::from_be_bytes([self.buf[32], self.buf[33], self.buf[34], self.buf[35]]);
            FRAME_HEADER + len as usize
        };
        Err(BatchError::Truncated {
            index: self.index,
            missing: (expected - self.buf.len()) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn batch(blobs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in blobs {
            encode_frame(&mut out, &Hash::of(b), b);
        }
        out
    }

    /// Whatever pieces the body comes in, the same blobs come out.
    #[test]
    fn blobs_come_out_whole_however_the_body_is_cut() {
        let blobs: [&[u8]; 4] = [b"", b"one", &[7u8; 1000], b"last"];
        let body = batch(&blobs);
        for piece in [1, 2, 3, 35, 36, 37, 500, body.len()] {
            let mut d = BatchDecoder::new(4096);
            let mut out = Vec::new();
            for chunk in body.chunks(piece) {
                d.push(chunk, &mut out).unwrap();
            }
            assert_eq!(d.finish().unwrap(), 4);
            let got: Vec<&[u8]> = out.iter().map(|(_, b)| b.as_slice()).collect();
            assert_eq!(got, blobs, "pieces of {piece}");
            assert!(out.iter().all(|(h, b)| *h == Hash::of(b)));
        }
    }

    /// A blob that does not hash to its name stops the batch there; the
    /// blobs before it came out.
    #[test]
    fn a_corrupted_blob_is_refused_by_its_index() {
        let mut body = batch(&[b"good", b"bad"]);
        let last = body.len() - 1;
        body[last] ^= 1;
        let mut d = BatchDecoder::new(4096);
        let mut out = Vec::new();
        let err = d.push(&body, &mut out).unwrap_err();
        assert_eq!(
            err,
            BatchError::WrongHash {
                index: 1,
                hash: Hash::of(b"bad")
            }
        );
        assert_eq!(out, [(Hash::of(b"good"), b"good".to_vec())]);
        // Whatever follows, the batch stays refused.
        assert_eq!(d.push(&batch(&[b"more"]), &mut out), Err(err.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!(d.finish(), Err(err));
    }

    /// A frame announcing more than the limit is refused from its header,
    /// before any of its bytes are held.
    #[test]
    fn an_oversized_blob_is_refused_from_its_header() {
        let mut body = Vec::new();
        body.extend_from_slice(&Hash::of(b"x").0);
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut d = BatchDecoder::new(4096);
        let err = d.push(&body, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, BatchError::TooLarge { index: 0, len, max: 4096, .. } if len == u64::from(u32::MAX))
        );
        assert!(err.to_string().contains("at most 4096 bytes"), "{err}");
    }

    /// A body that stops inside a frame, header or bytes, is refused.
    #[test]
    fn a_truncated_body_is_refused() {
        let body = batch(&[b"whole", b"cut short"]);
        let second = FRAME_HEADER + 5;
        // In its bytes: the rest of them; in its header: the rest of it.
        for (cut, missing) in [(body.len() - 1, 1), (second + 10, FRAME_HEADER as u64 - 10)] {
            let mut d = BatchDecoder::new(4096);
            let mut out = Vec::new();
            d.push(&body[..cut], &mut out).unwrap();
            assert_eq!(out.len(), 1);
            let err = d.finish().unwrap_err();
            assert_eq!(
                err,
                BatchError::Truncated { index: 1, missing },
                "cut at {cut}"
            );
        }
        assert_eq!(BatchDecoder::new(1).finish().unwrap(), 0);
    }
}
