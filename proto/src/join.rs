//! The one-line join string a volunteer pastes:
//! `peergrid://HOST:PORT#sha256:<certificate fingerprint>&project=<project key>`.
//!
//! The fingerprint pins the coordinator's self-signed certificate, so a
//! volunteer needs no certificate authority and cannot be redirected to a
//! look-alike server. The project key pins who may endorse the researchers
//! whose modules the worker runs (see [`crate::signing`]).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinString {
    /// `host:port` of the coordinator's QUIC endpoint, as given by the operator.
    pub address: String,
    /// SHA-256 of the coordinator certificate's DER encoding.
    pub cert_sha256: [u8; 32],
    /// The project's Ed25519 public key.
    pub project_key: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("a join string starts with `peergrid://`; got `{0}`")]
    Scheme(String),
    #[error(
        "the join string has no `#sha256:<fingerprint>` part; copy the whole line `peergrid-coordinator init` printed"
    )]
    MissingFingerprint,
    #[error("the join string's fingerprint is not 64 hex digits")]
    BadFingerprint,
    #[error(
        "the join string has no `&project=<key>` part; copy the whole line `peergrid-coordinator init` printed"
    )]
    MissingProjectKey,
    #[error("the join string's project key is not 64 hex digits")]
    BadProjectKey,
    #[error("the join string has no `host:port` address")]
    MissingAddress,
    #[error(
        "the join string contains whitespace or control characters (a line break?); paste it as one line, exactly as `peergrid-coordinator init` printed it"
    )]
    Whitespace,
}

impl FromStr for JoinString {
    type Err = JoinError;

    /// Whitespace around the string (a pasted line break) is ignored;
    /// inside it, whitespace and control characters are refused: the
    /// string ends up in unit files and command lines, where a line break
    /// would add lines of the attacker's choosing.
    fn from_str(s: &str) -> Result<Self, JoinError> {
        let s = s.trim();
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(JoinError::Whitespace);
        }
        let rest = s
            .strip_prefix("peergrid://")
            .ok_or_else(|| JoinError::Scheme(s.chars().take(40).collect()))?;
        let (address, fragment) = rest.split_once('#').ok_or(JoinError::MissingFingerprint)?;
        let address = address.trim_end_matches('/');
        if address.is_empty() || !address.contains(':') {
            return Err(JoinError::MissingAddress);
        }
        let (fingerprint, project) = fragment
            .split_once("&project=")
            .ok_or(JoinError::MissingProjectKey)?;
        let hex_fp = fingerprint
            .strip_prefix("sha256:")
            .ok_or(JoinError::MissingFingerprint)?;
        let mut cert_sha256 = [0u8; 32];
        hex::decode_to_slice(hex_fp, &mut cert_sha256).map_err(|_| JoinError::BadFingerprint)?;
        let mut project_key = [0u8; 32];
        hex::decode_to_slice(project, &mut project_key).map_err(|_| JoinError::BadProjectKey)?;
        Ok(JoinString {
            address: address.to_string(),
            cert_sha256,
            project_key,
        })
    }
}

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peergrid://{}#sha256:{}&project={}",
            self.address,
            hex::encode(self.cert_sha256),
            hex::encode(self.project_key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let j = JoinString {
            address: "127.0.0.1:7400".into(),
            cert_sha256: [7; 32],
            project_key: [9; 32],
        };
        assert_eq!(j.to_string().parse::<JoinString>(), Ok(j));
    }

    #[test]
    fn clear_errors() {
        assert!(matches!(
            "http://x:1#sha256:00".parse::<JoinString>(),
            Err(JoinError::Scheme(_))
        ));
        assert_eq!(
            "peergrid://x:1".parse::<JoinString>(),
            Err(JoinError::MissingFingerprint)
        );
        assert_eq!(
            "peergrid://x:1#sha256:1234&project=00".parse::<JoinString>(),
            Err(JoinError::BadFingerprint)
        );
        assert_eq!(
            format!("peergrid://x:1#sha256:{}", "0".repeat(64)).parse::<JoinString>(),
            Err(JoinError::MissingProjectKey)
        );
        assert_eq!(
            format!("peergrid://#sha256:{}&project=", "0".repeat(64)).parse::<JoinString>(),
            Err(JoinError::MissingAddress)
        );
    }

    #[test]
    fn whitespace_and_control_characters_inside_are_refused() {
        let fragment = format!("#sha256:{}&project={}", "ab".repeat(32), "cd".repeat(32));
        let good = format!("peergrid://h:1{fragment}");
        assert!(format!("  {good}\n").parse::<JoinString>().is_ok());
        for evil in [
            format!("peergrid://h:1\n[Service]\nExecStartPre=/bin/sh -c id\n{fragment}"),
            format!("peergrid://h:1\r{fragment}"),
            format!("peergrid://h :1{fragment}"),
            format!("peergrid://h:1\u{1b}[2J{fragment}"),
            format!("peergrid://h:1\u{85}{fragment}"),
        ] {
            assert_eq!(
                evil.parse::<JoinString>(),
                Err(JoinError::Whitespace),
                "{evil:?}"
            );
        }
    }
}
