//! `POST /api/v1/blobs`, a batch of blobs in one body, in process.

#![allow(clippy::unwrap_used)]

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use peergrid_proto::Hash;
use peergrid_proto::batch::encode_frame;
use tower::ServiceExt;

use super::MAX_BLOB_BATCH;
use crate::dashboard::tests::fixture;
use crate::store::Store;

/// Sends `body` as a batch, with the token unless `token` is false;
/// returns the status and the body as text.
async fn post(app: &axum::Router, body: Body, token: bool) -> (StatusCode, String) {
    let mut request =
        Request::post("/api/v1/blobs").header(header::CONTENT_TYPE, "application/octet-stream");
    if token {
        request = request.header(header::AUTHORIZATION, "Bearer token");
    }
    let resp = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let text = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&text).into_owned())
}

fn frames(blobs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in blobs {
        encode_frame(&mut out, &Hash::of(b), b);
    }
    out
}

/// Every blob of a batch is stored, and the answer counts them.
#[tokio::test]
async fn a_batch_of_blobs_is_stored_whole() {
    let f = fixture();
    let blobs: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| format!("input {i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let (status, text) = post(&f.app, Body::from(frames(&refs)), true).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bytes: usize = blobs.iter().map(Vec::len).sum();
    assert_eq!(answer, serde_json::json!({ "blobs": 5000, "bytes": bytes }));
    let hashes: Vec<Hash> = blobs.iter().map(|b| Hash::of(b)).collect();
    assert!(f.store.missing_blobs(&hashes).unwrap().is_empty());
    assert_eq!(
        f.store.get_blob(&hashes[4999]).unwrap().unwrap(),
        blobs[4999]
    );
}

/// A blob whose bytes do not hash to its name stops the batch with a 400
/// naming it; the blob before it is stored, it and the one after are not.
#[tokio::test]
async fn a_corrupted_blob_stops_the_batch_and_nothing_wrong_is_stored() {
    let f = fixture();
    let mut body = Vec::new();
    encode_frame(&mut body, &Hash::of(b"first"), b"first");
    encode_frame(&mut body, &Hash::of(b"second"), b"secone");
    encode_frame(&mut body, &Hash::of(b"third"), b"third");
    let (status, text) = post(&f.app, Body::from(body), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("blob 1") && text.contains("do not hash"),
        "{text}"
    );
    assert_eq!(
        f.store
            .missing_blobs(&[
                Hash::of(b"first"),
                Hash::of(b"second"),
                Hash::of(b"third"),
                Hash::of(b"secone")
            ])
            .unwrap(),
        [Hash::of(b"second"), Hash::of(b"third"), Hash::of(b"secone")]
    );
}

/// A frame announcing a blob over the largest module is refused from its
/// header (its bytes are never awaited); a body that stops inside a frame
/// is refused, and so is an empty body; and without the token nothing is
/// read.
#[tokio::test]
async fn bad_batches_get_clear_errors() {
    let f = fixture();
    let mut huge = Vec::new();
    huge.extend_from_slice(&Hash::of(b"x").0);
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    let (status, text) = post(&f.app, Body::from(huge), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("a blob is at most"), "{text}");

    let mut cut = frames(&[b"whole", b"cut short"]);
    cut.truncate(cut.len() - 3);
    let (status, text) = post(&f.app, Body::from(cut), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("ends inside blob 1"), "{text}");
    assert!(
        f.store
            .missing_blobs(&[Hash::of(b"whole")])
            .unwrap()
            .is_empty()
    );

    let (status, text) = post(&f.app, Body::empty(), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("the batch is empty"), "{text}");

    let (status, text) = post(&f.app, Body::from(frames(&[b"no token"])), false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert_eq!(
        f.store
            .missing_blobs(&[Hash::of(b"no token")])
            .unwrap()
            .len(),
        1
    );
}

/// A body over the batch limit is cut off with a 413 as soon as it passes
/// the limit, streamed: the server never holds it.
#[tokio::test]
async fn a_batch_over_the_limit_is_refused_with_413() {
    let f = fixture();
    let blob = vec![7u8; 1 << 20];
    let frame = frames(&[&blob]);
    let count = MAX_BLOB_BATCH / frame.len() + 2;
    let pieces = (0..count).map(move |_| Ok::<_, std::io::Error>(frame.clone()));
    let body = Body::from_stream(tokio_stream::iter(pieces));
    let (status, text) = post(&f.app, body, true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("at most"), "{text}");
}
