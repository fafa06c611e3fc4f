//! QUIC over a plain UDP socket: no ECN, no GSO or GRO, no packet info.
//! quinn's own socket turns ECN reporting on at creation and fails where
//! the network stack lacks it (Wine's Winsock: `WSAEOPNOTSUPP` for
//! `IP_RECVECN`); the worker then falls back to this. ECN only tunes
//! congestion control, and a worker's traffic is a few small messages.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// A tokio UDP socket that quinn drives one datagram at a time.
pub(crate) struct PlainUdp(tokio::net::UdpSocket);

impl fmt::Debug for PlainUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PlainUdp")
            .field(&self.0.local_addr())
            .finish()
    }
}

/// Whether quinn's socket setup failed for want of a socket option (ECN
/// reporting): Winsock's errors for an unknown or unsupported option.
pub(crate) fn is_unsupported_option(e: &io::Error) -> bool {
    const WSAENOPROTOOPT: i32 = 10042;
    const WSAEOPNOTSUPP: i32 = 10045;
    cfg!(windows) && matches!(e.raw_os_error(), Some(WSAENOPROTOOPT | WSAEOPNOTSUPP))
}

/// A client endpoint on a plain socket bound to `bind`.
pub(crate) fn client_endpoint(bind: SocketAddr) -> io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        Arc::new(PlainUdp(socket)),
        Arc::new(quinn::TokioRuntime),
    )
}

impl AsyncUdpSocket for PlainUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // One datagram per transmit: max_transmit_segments is 1.
        self.0
            .try_send_to(transmit.contents, transmit.destination)
            .map(|_| ())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            std::task::ready!(self.0.poll_recv_ready(cx))?;
            match self.0.try_recv_from(buf) {
                Ok((len, addr)) => {
                    *slot = RecvMeta {
                        addr,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: None,
                    };
                    return Poll::Ready(Ok(1));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // An ICMP "port unreachable" for an earlier datagram shows
                // up on Windows as a reset on the next receive: not this
                // datagram's fault; read on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        // No "don't fragment" bit is set on a plain socket.
        true
    }
}

/// Says when the socket can send again.
#[derive(Debug)]
struct Writable(Arc<PlainUdp>);

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.0.0.poll_send_ready(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QUIC server on loopback with a fresh self-signed certificate and
    /// `alpn`; returns it with the certificate's SHA-256 fingerprint.
    fn server(alpn: &[u8]) -> (quinn::Endpoint, [u8; 32]) {
        use sha2::Digest;
        let ck =
            rcgen::generate_simple_self_signed(vec!["peergrid-coordinator".to_string()]).unwrap();
        let cert = ck.cert.der().to_vec();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone().into()], key.into())
            .unwrap();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
        ));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        (endpoint, sha2::Sha256::digest(&cert).into())
    }

    /// A client on the plain socket completes a QUIC handshake with a
    /// quinn server on loopback (pinning its certificate as the worker
    /// does) and gets a stream's 20,000 bytes echoed back.
    #[tokio::test]
    async fn quic_over_a_plain_socket_reaches_a_quinn_server() {
        let alpn = b"peergrid-test";
        let (server, fingerprint) = server(alpn);
        let server_addr = server.local_addr().unwrap();
        let serving = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv.read_to_end(1 << 16).await.unwrap();
            send.write_all(&got).await.unwrap();
            send.finish().unwrap();
            // Until the client has read the echo and closed.
            conn.closed().await;
        });
        let mut client = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(
            super::super::pinned_client_config(fingerprint, alpn, Arc::default()).unwrap(),
        );
        let conn = client
            .connect(server_addr, "peergrid-coordinator")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let message = vec![7u8; 20_000];
        send.write_all(&message).await.unwrap();
        send.finish().unwrap();
        let echo = recv.read_to_end(1 << 16).await.unwrap();
        assert_eq!(echo, message);
        conn.close(0u32.into(), b"done");
        serving.await.unwrap();
    }
}
