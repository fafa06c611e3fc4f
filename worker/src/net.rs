//! The worker's QUIC client: dials the coordinator named by a join string,
//! pins its certificate fingerprint, says a signed Hello, then sends one
//! request per stream.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use peergrid_proto::JoinString;
use peergrid_proto::codec;
use peergrid_proto::limits::MAX_FRAME;
use peergrid_proto::wire::{Attachment, Hello, HostFacts, Reply, Request, Welcome, hello_message};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

mod plain_udp;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot resolve coordinator address `{0}`")]
    Resolve(String),
    #[error("QUIC setup failed: {0}")]
    Setup(String),
    #[error("cannot connect to the coordinator: {0}")]
    Connect(#[from] quinn::ConnectionError),
    /// The coordinator presented another certificate than the one whose
    /// SHA-256 the join string names: a stale join string, a coordinator
    /// that changed its certificate, or someone in the middle.
    #[error(
        "the coordinator's certificate (sha256:{}) does not match the join string's fingerprint (sha256:{})",
        hex::encode(presented),
        hex::encode(expected)
    )]
    CertificateMismatch {
        expected: [u8; 32],
        presented: [u8; 32],
    },
    #[error("connection to the coordinator failed: {0}")]
    Connection(String),
    #[error("bad reply from the coordinator: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("the coordinator refused: {0}")]
    Refused(peergrid_proto::wire::WireError),
    #[error("unexpected reply from the coordinator")]
    Unexpected,
}

/// Accepts exactly the certificate whose SHA-256 the join string names,
/// and checks the handshake signatures made with it.
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The fingerprint of a certificate refused for not matching, so the
    /// caller can tell this refusal (permanent) from a network failure.
    refused: Arc<Mutex<Option<[u8; 32]>>>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            *peergrid_os::lock(&self.refused) = Some(got);
            Err(rustls::Error::General(
                "the coordinator's certificate does not match the join string's fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not used by peergrid".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC client config that pins `cert_sha256` and offers `alpn`.
pub fn client_config(cert_sha256: [u8; 32], alpn: &[u8]) -> Result<quinn::ClientConfig, NetError> {
    pinned_client_config(cert_sha256, alpn, Arc::default())
}

/// [`client_config`] that records in `refused` the fingerprint of a
/// certificate it refuses.
fn pinned_client_config(
    cert_sha256: [u8; 32],
    alpn: &[u8],
    refused: Arc<Mutex<Option<[u8; 32]>>>,
) -> Result<quinn::ClientConfig, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            sha256: cert_sha256,
            provider,
            refused,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // A coordinator that vanished (crash, lost network) is noticed within
    // the idle timeout; keep-alives hold a quiet but healthy link open.
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    transport.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .map_err(|_| NetError::Setup("idle timeout".into()))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A connection on which Hello has been said.
pub struct Session {
    pub connection: quinn::Connection,
    pub welcome: Welcome,
    /// Kept so the endpoint outlives the connection.
    _endpoint: quinn::Endpoint,
}

pub fn resolve(address: &str) -> Result<SocketAddr, NetError> {
    address
        .to_socket_addrs()
        .map_err(|_| NetError::Resolve(address.to_string()))?
        .next()
        .ok_or_else(|| NetError::Resolve(address.to_string()))
}

/// Opens a QUIC connection with the given ALPN (tests pass wrong ones).
/// `bind` is the local address to send from (port chosen by the system).
pub async fn connect_raw(
    join: &JoinString,
    alpn: &[u8],
    bind: Option<std::net::IpAddr>,
) -> Result<(quinn::Endpoint, quinn::Connection), NetError> {
    let addr = resolve(&join.address)?;
    let bind = match bind {
        Some(ip) => SocketAddr::new(ip, 0),
        None if addr.is_ipv6() => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        None => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
    };
    let mut endpoint = match quinn::Endpoint::client(bind) {
        Ok(endpoint) => endpoint,
        Err(e) if plain_udp::is_unsupported_option(&e) => {
            tracing::debug!(error = %e, "the network stack lacks ECN; QUIC on a plain UDP socket");
            plain_udp::client_endpoint(bind).map_err(|e| NetError::Setup(e.to_string()))?
        }
        Err(e) => return Err(NetError::Setup(e.to_string())),
    };
    let refused = Arc::default();
    endpoint.set_default_client_config(pinned_client_config(
        join.cert_sha256,
        alpn,
        Arc::clone(&refused),
    )?);
    let connecting = endpoint
        .connect(addr, "peergrid-coordinator")
        .map_err(|e| NetError::Setup(e.to_string()))?;
    match connecting.await {
        Ok(connection) => Ok((endpoint, connection)),
        Err(e) => Err(match *peergrid_os::lock(&refused) {
            Some(presented) => NetError::CertificateMismatch {
                expected: join.cert_sha256,
                presented,
            },
            None => NetError::Connect(e),
        }),
    }
}

/// Connects and authenticates as the holder of `key`, anonymously.
pub async fn connect(
    join: &JoinString,
    key: &SigningKey,
    facts: HostFacts,
    bind: Option<std::net::IpAddr>,
) -> Result<Session, NetError> {
    connect_attached(join, key, facts, None, bind).await
}

/// Connects and authenticates as the holder of `key`, attached to a
/// volunteer's account if `account` is given.
pub async fn connect_attached(
    join: &JoinString,
    key: &SigningKey,
    facts: HostFacts,
    account: Option<&Attachment>,
    bind: Option<std::net::IpAddr>,
) -> Result<Session, NetError> {
    let (endpoint, connection) = connect_raw(join, peergrid_proto::wire::ALPN, bind).await?;
    let welcome = greet(&connection, join, key, facts, account).await?;
    Ok(Session {
        connection,
        welcome,
        _endpoint: endpoint,
    })
}

/// Says Hello on an open connection as the holder of `key`.
pub async fn greet(
    connection: &quinn::Connection,
    join: &JoinString,
    key: &SigningKey,
    facts: HostFacts,
    account: Option<&Attachment>,
) -> Result<Welcome, NetError> {
    let timestamp_ms = peergrid_os::now_ms();
    let signature = key
        .sign(&hello_message(&join.cert_sha256, timestamp_ms))
        .to_bytes()
        .to_vec();
    // The coordinator refuses facts that are not short printable ASCII
    // (they are stored and shown): send what the system reports, cleaned.
    let facts = HostFacts {
        os: peergrid_proto::text::host_fact(&facts.os),
        arch: peergrid_proto::text::host_fact(&facts.arch),
        cpu_model: peergrid_proto::text::host_fact(&facts.cpu_model),
        ..facts
    };
    let hello = Request::Hello(Hello {
        host_key: key.verifying_key().to_bytes(),
        timestamp_ms,
        signature,
        facts,
        worker_version: peergrid_proto::text::host_fact(env!("CARGO_PKG_VERSION")),
        account: account.cloned(),
    });
    match request(connection, &hello).await? {
        Reply::Welcome(welcome) => Ok(welcome),
        Reply::Error(e) => Err(NetError::Refused(e)),
        _ => Err(NetError::Unexpected),
    }
}

/// Sends raw bytes as one request and returns the raw reply.
pub async fn request_bytes(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, NetError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| NetError::Connection(e.to_string()))?;
    send.write_all(bytes)
        .await
        .map_err(|e| NetError::Connection(e.to_string()))?;
    send.finish()
        .map_err(|e| NetError::Connection(e.to_string()))?;
    recv.read_to_end(MAX_FRAME)
        .await
        .map_err(|e| NetError::Connection(e.to_string()))
}

/// One request, one reply.
pub async fn request(conn: &quinn::Connection, req: &Request) -> Result<Reply, NetError> {
    let reply = request_bytes(conn, &codec::encode(req)?).await?;
    Ok(codec::decode(&reply)?)
}
