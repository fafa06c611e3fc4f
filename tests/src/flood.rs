//! A crowd at the workers' door: thousands of QUIC connections from many
//! loopback addresses, for the load test and the connection benchmark.
//!
//! Two kinds of stranger: *hosts* complete the handshake, say a signed
//! Hello (a key of their own each) and then sit idle; *strangers* complete the
//! handshake, never say Hello, and connect again whenever the coordinator
//! closes them. Addresses are in 127.201.0.0/16 and up, apart from the
//! ones `loopback_network` hands out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use peergrid_proto::JoinString;
use peergrid_proto::wire::HostFacts;
use peergrid_worker::net;
use tokio::sync::Semaphore;

/// Connections per address: within the coordinator's per-address cap (64).
pub const PER_ADDRESS: usize = 50;

/// The close code of a connection that gave its seat to a newcomer.
const EVICTED: u32 = 4;

/// Tries a host connection gets.
const TRIES: usize = 5;

/// Handshakes the crowd has in progress at once.
const CONCURRENT_HANDSHAKES: usize = 256;

/// The crowd's counters, shared with its tasks.
#[derive(Default)]
pub struct Counts {
    /// Authenticated connections open now.
    pub hosts_open: AtomicUsize,
    /// Authenticated connections the coordinator closed.
    pub hosts_closed: AtomicUsize,
    /// Of those, the ones closed to seat a newcomer (close code 4).
    pub hosts_evicted: AtomicUsize,
    /// Host connections that failed every try.
    pub failed: AtomicUsize,
    /// Tries that failed (refused, busy, cut off, timed out), strangers'
    /// included.
    pub retries: AtomicUsize,
    /// Strangers' handshakes completed, reconnections included.
    pub stranger_handshakes: AtomicUsize,
    /// The first few failures, for a test's message.
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl Counts {
    fn retried(&self, why: String) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let mut errors = peergrid_os::lock(&self.errors);
        if errors.len() < 5 {
            errors.push(why);
        }
    }
}

pub struct Flood {
    pub counts: Arc<Counts>,
    /// Time to open every host connection (handshake and Hello).
    pub hosts_opened_in: Duration,
    stop: Arc<AtomicBool>,
    endpoints: Vec<quinn::Endpoint>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The `i`-th address of the crowd.
pub fn crowd_address(i: usize) -> IpAddr {
    IpAddr::from([127, 201 + (i / 250) as u8, (i % 250) as u8 + 1, 9])
}

fn client_config(join: &JoinString) -> Result<quinn::ClientConfig> {
    let mut config = net::client_config(join.cert_sha256, peergrid_proto::wire::ALPN)?;
    let mut transport = quinn::TransportConfig::default();
    // Quiet: one keep-alive per connection every 20 s holds it open (the
    // coordinator's idle timeout is 60 s) without flooding the machine.
    transport.keep_alive_interval(Some(Duration::from_secs(20)));
    transport.max_idle_timeout(Some(Duration::from_secs(90).try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

impl Flood {
    /// Opens `hosts` authenticated idle connections (waiting until each
    /// is open or failed) and starts `strangers` churning unauthenticated
    /// ones, `PER_ADDRESS` per address.
    pub async fn start(join: &JoinString, hosts: usize, strangers: usize) -> Result<Flood> {
        let server = net::resolve(&join.address)?;
        let config = client_config(join)?;
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
        let mut endpoints = Vec::new();
        let mut tasks = Vec::new();
        let host_addresses = hosts.div_ceil(PER_ADDRESS);
        let stranger_addresses = strangers.div_ceil(PER_ADDRESS);
        for a in 0..host_addresses + stranger_addresses {
            let mut endpoint = quinn::Endpoint::client(SocketAddr::new(crowd_address(a), 0))
                .with_context(|| format!("binding {}", crowd_address(a)))?;
            endpoint.set_default_client_config(config.clone());
            endpoints.push(endpoint);
        }
        let started = Instant::now();
        let mut opening = Vec::new();
        for i in 0..hosts {
            let a = i / PER_ADDRESS;
            let endpoint = endpoints[a].clone();
            // One key per connection: the coordinator seats one connection
            // per host (a second one of a host replaces its first).
            let key = SigningKey::from_bytes(blake3::hash(&(i as u64).to_le_bytes()).as_bytes());
            let (join, counts, gate) = (join.clone(), counts.clone(), gate.clone());
            opening.push(tokio::spawn(async move {
                // A few tries, as any client would: under a burst of
                // handshakes the coordinator's socket drops datagrams, and
                // a Hello retransmitted too late is cut off.
                for _ in 0..TRIES {
                    let permit = gate.clone().acquire_owned().await;
                    let opened = async {
                        let conn = endpoint.connect(server, "peergrid-coordinator")?.await?;
                        let facts = HostFacts {
                            cores: 1,
                            ..HostFacts::default()
                        };
                        net::greet(&conn, &join, &key, facts, None).await?;
                        anyhow::Ok(conn)
                    };
                    let conn = tokio::time::timeout(Duration::from_secs(30), opened).await;
                    drop(permit);
                    match conn {
                        Ok(Ok(conn)) => {
                            counts.hosts_open.fetch_add(1, Ordering::Relaxed);
                            let why = conn.closed().await;
                            counts.hosts_open.fetch_sub(1, Ordering::Relaxed);
                            counts.hosts_closed.fetch_add(1, Ordering::Relaxed);
                            if matches!(&why, quinn::ConnectionError::ApplicationClosed(c)
                                if c.error_code == EVICTED.into())
                            {
                                counts.hosts_evicted.fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                        Ok(Err(e)) => counts.retried(format!("{e:#}")),
                        Err(_) => counts.retried("no Welcome within 30 s".into()),
                    }
                }
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }));
        }
        // Wait until every host connection is open or has failed.
        while counts.hosts_open.load(Ordering::Relaxed)
            + counts.failed.load(Ordering::Relaxed)
            + counts.hosts_closed.load(Ordering::Relaxed)
            < hosts
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hosts_opened_in = started.elapsed();
        tasks.extend(opening);
        for i in 0..strangers {
            let endpoint = endpoints[host_addresses + i / PER_ADDRESS].clone();
            let (counts, stop, gate) = (counts.clone(), stop.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let permit = gate.clone().acquire_owned().await;
                    let conn = async {
                        anyhow::Ok(endpoint.connect(server, "peergrid-coordinator")?.await?)
                    };
                    let conn = tokio::time::timeout(Duration::from_secs(30), conn).await;
                    drop(permit);
                    match conn {
                        Ok(Ok(conn)) => {
                            counts.stranger_handshakes.fetch_add(1, Ordering::Relaxed);
                            conn.closed().await;
                        }
                        failed => {
                            counts.retried(match failed {
                                Ok(Err(e)) => format!("{e:#}"),
                                _ => "no handshake within 30 s".into(),
                            });
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }));
        }
        Ok(Flood {
            counts,
            hosts_opened_in,
            stop,
            endpoints,
            tasks,
        })
    }

    pub fn hosts_open(&self) -> usize {
        self.counts.hosts_open.load(Ordering::Relaxed)
    }

    /// Closes every connection.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for e in &self.endpoints {
            e.close(0u32.into(), b"done");
        }
        for t in self.tasks {
            t.abort();
        }
        for e in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(5), e.wait_idle()).await;
        }
    }
}
