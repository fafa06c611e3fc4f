//! The coordinator's self-signed certificate and the QUIC server config.
//!
//! Volunteers pin the certificate's SHA-256 fingerprint from the join
//! string, so no certificate authority is involved.

use std::sync::Arc;

use anyhow::{Context, Result};
use peergrid_proto::wire::ALPN;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Concurrent request streams one worker connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// Handshakes in progress at once.
const MAX_INCOMING: usize = 4096;

/// A fresh self-signed certificate and its PKCS#8 key, both DER.
pub fn generate_certificate() -> Result<(Vec<u8>, Vec<u8>)> {
    let ck = rcgen::generate_simple_self_signed(vec![
        "peergrid-coordinator".to_string(),
        "localhost".to_string(),
    ])
    .context("generating the TLS certificate")?;
    Ok((ck.cert.der().to_vec(), ck.signing_key.serialize_der()))
}

pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// Server-side QUIC configuration: TLS 1.3 with our certificate and ALPN.
pub fn server_config(cert_der: &[u8], key_der: &[u8]) -> Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("configuring TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec())),
        )
        .context("loading the coordinator's certificate")?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("building the QUIC TLS config")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // A worker needs one stream at a time (an exchange, or a module fetch
    // beside it); a few more cost little, many would multiply what one
    // stranger's connection can make the coordinator buffer. The
    // connection-wide receive window bounds the bytes a peer may have in
    // flight before the coordinator reads them.
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into())
        .max_concurrent_uni_streams(0u32.into())
        .receive_window((8u32 << 20).into())
        .stream_receive_window((4u32 << 20).into())
        .max_idle_timeout(Some(
            std::time::Duration::from_secs(60)
                .try_into()
                .context("idle timeout")?,
        ));
    config.transport_config(Arc::new(transport));
    // Handshakes that have not finished count against this, so a flood of
    // half-open handshakes cannot take unbounded memory either.
    config.max_incoming(MAX_INCOMING);
    Ok(config)
}
