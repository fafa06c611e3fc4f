//! `batch::BatchDecoder`, which reads the body of `POST /api/v1/blobs` as
//! the network delivers it: the first byte sets the size of the pieces the
//! rest is cut into. Every blob that comes out hashes to its name, the
//! blobs re-encode to the start of the body, and cutting the body
//! differently changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_proto::batch::{BatchDecoder, encode_frame};

/// Small, so that frames of a few bytes can be over it.
const MAX_BLOB: usize = 4096;

fn decode(body: &[u8], piece: usize) -> (Vec<(peergrid_proto::Hash, Vec<u8>)>, Option<String>) {
    let mut decoder = BatchDecoder::new(MAX_BLOB);
    let mut blobs = Vec::new();
    for chunk in body.chunks(piece.max(1)) {
        if let Err(e) = decoder.push(chunk, &mut blobs) {
            return (blobs, Some(e.to_string()));
        }
    }
    let end = decoder.finish().err().map(|e| e.to_string());
    (blobs, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let (blobs, error) = decode(body, usize::from(piece));
    let mut again = Vec::new();
    for (hash, bytes) in &blobs {
        assert_eq!(peergrid_proto::Hash::of(bytes), *hash);
        assert!(bytes.len() <= MAX_BLOB);
        encode_frame(&mut again, hash, bytes);
    }
    assert!(body.starts_with(&again));
    assert_eq!(error.is_none(), again.len() == body.len());
    assert_eq!(decode(body, body.len().max(1)), (blobs, error));
});
