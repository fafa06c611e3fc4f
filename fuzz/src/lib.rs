//! What the fuzz targets and the seed generator share: the project key a
//! fuzzed worker pins (the seeds' tasks are signed under it, so the targets
//! start from chains that verify), and the round-trip check of the codec.

use std::fmt::Debug;
use std::sync::OnceLock;

use peergrid_proto::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Secret seed of the project key the seeds are endorsed with. Public on
/// purpose: it signs fuzz seeds, nothing else.
pub const PROJECT_SEED: [u8; 32] = [1; 32];
/// Secret seed of the researcher key the seeds' modules are signed with.
pub const RESEARCHER_SEED: [u8; 32] = [2; 32];

/// The public project key a fuzzed worker pins: the key of [`PROJECT_SEED`]
/// (computed once; the targets verify under it on every input).
pub fn project_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        ed25519_dalek::SigningKey::from_bytes(&PROJECT_SEED)
            .verifying_key()
            .to_bytes()
    })
}

/// Decodes `bytes` as a `T` the way the receiver does, and checks that a
/// message that decodes survives encoding and decoding again unchanged (a
/// worker stores tasks and reports with `codec::encode` and reads them back
/// after a restart; the coordinator re-encodes nothing it did not build,
/// but a message that cannot round-trip would be a codec bug either way).
pub fn decode_round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let msg = codec::decode::<T>(bytes).ok()?;
    let again = match codec::encode(&msg) {
        Ok(again) => again,
        Err(e) => panic!("a decoded message does not encode again: {e}"),
    };
    match codec::decode::<T>(&again) {
        Ok(back) => assert_eq!(back, msg, "a re-encoded message decodes differently"),
        Err(e) => panic!("a re-encoded message does not decode: {e}"),
    }
    Some(msg)
}
