//! The workers' door: a QUIC endpoint speaking the peergrid protocol (ALPN `wire::ALPN`).
//!
//! One connection is one host. Its first stream must carry a signed
//! [`Hello`]; every later stream carries one request and its reply. Bytes
//! from a worker are never trusted: oversized or malformed requests get an
//! error reply and the connection (and every other) keeps being served.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use peergrid_os::{lock, now_ms};
use peergrid_proto::limits::{
    MAX_ACCOUNT, MAX_FRAME, MAX_HELLO, MAX_HOST_FACT, MAX_HOST_NAME, MAX_TEAM,
};
use peergrid_proto::text::{is_host_fact_char, volunteer_name};
use peergrid_proto::wire::{
    ErrorCode, Hello, Reply, Request, Welcome, attachment_message, hello_message,
};
use tokio::sync::{Notify, Semaphore};

use crate::grid::{Banned, Grid};
use crate::seats::{Admission, EVICTION_SCAN, SeatId, Seats};
use crate::storage::StorageLow;
use crate::store::{Account, HostId};

mod frame;
use frame::{error, read_frame, refuse, respond};

/// A greeting older or newer than this is refused (clock skew allowance).
const HELLO_SKEW_MS: u64 = 10 * 60 * 1000;

/// The bounds of the workers' door. Every one is a resource a stranger
/// could otherwise hold: connections, handshake time, buffered bytes,
/// identities.
#[derive(Clone, Copy, Debug)]
pub struct DoorLimits {
    /// Authenticated worker connections served at once. When all are
    /// taken, a newcomer takes the seat of the connection quiet longest
    /// whose host holds no work (`seats.rs`): a crowd of idle connections
    /// cannot shut real workers out.
    pub max_connections: usize,
    /// Connections in their handshake or before their Hello, at once (a
    /// separate, smaller room: they have proved nothing yet). When all
    /// are taken, the oldest is closed for the newcomer.
    pub max_unauthenticated: usize,
    /// Connections from one IP address at once: one machine cannot fill
    /// the door (10,000 idle connections from one process locked real
    /// workers out before this existed).
    pub max_connections_per_ip: usize,
    /// New host identities one IP address may register per hour (a burst
    /// of as many is allowed at once).
    pub new_hosts_per_ip_per_hour: u32,
    /// Time from the handshake to a complete Hello.
    pub hello_timeout: Duration,
    /// Time to receive one whole request once its stream opened.
    pub request_timeout: Duration,
    /// A connection whose host holds no work and that sent no request for
    /// this long is closed: idle connections cannot pile up.
    pub idle_timeout: Duration,
    /// Request bytes being read or handled at once, over all connections.
    pub bytes_in_flight: usize,
}

impl Default for DoorLimits {
    fn default() -> Self {
        DoorLimits {
            max_connections: 10_000,
            max_unauthenticated: 1024,
            max_connections_per_ip: 64,
            new_hosts_per_ip_per_hour: 60,
            hello_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            bytes_in_flight: 512 << 20,
        }
    }
}

pub struct QuicServer {
    pub endpoint: quinn::Endpoint,
    grid: Arc<Grid>,
    cert_sha256: [u8; 32],
    limits: DoorLimits,
    /// Open connections per remote IP.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// New identities per remote IP: a token bucket each (tokens, when
    /// last filled).
    registrations: Mutex<HashMap<IpAddr, (f64, u64)>>,
    /// Permits are bytes of requests being read or handled.
    bytes: Arc<Semaphore>,
    /// Connections that have not said Hello yet; each key wakes its
    /// connection's task when it loses its seat.
    strangers: Mutex<Seats<Arc<Notify>>>,
    /// Authenticated connections, at most one per host.
    hosts: Mutex<HostRoom>,
    /// A backstop over both rooms and every connection between them (one
    /// being refused, or moving from one room to the other).
    connections: Arc<Semaphore>,
}

/// The room of authenticated connections: one seat per host, so one key
/// cannot hold many seats that its work in flight protects.
struct HostRoom {
    seats: Seats<(HostId, Arc<Notify>)>,
    by_host: HashMap<HostId, SeatId>,
}

impl HostRoom {
    fn leave(&mut self, seat: SeatId) {
        if let Some((host, _)) = self.seats.leave(seat)
            && self.by_host.get(&host) == Some(&seat)
        {
            self.by_host.remove(&host);
        }
    }
}

/// Which room a seat is in.
#[derive(Clone, Copy)]
enum Room {
    Strangers,
    Hosts,
}

/// One connection's seat in a room, freed when dropped; `evicted` wakes
/// when a newcomer took it.
struct Seat {
    server: Arc<QuicServer>,
    room: Room,
    id: SeatId,
    evicted: Arc<Notify>,
}

impl Seat {
    fn touch(&self, now_ms: u64) {
        if let Room::Hosts = self.room {
            lock(&self.server.hosts).seats.touch(self.id, now_ms);
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        match self.room {
            Room::Strangers => drop(lock(&self.server.strangers).leave(self.id)),
            Room::Hosts => lock(&self.server.hosts).leave(self.id),
        }
    }
}

/// Holds one connection's place in the per-IP count until dropped.
struct IpSlot<'a> {
    server: &'a QuicServer,
    ip: IpAddr,
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.server.per_ip);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl QuicServer {
    pub fn bind(
        addr: SocketAddr,
        config: quinn::ServerConfig,
        grid: Arc<Grid>,
        cert_sha256: [u8; 32],
        limits: DoorLimits,
    ) -> Result<QuicServer> {
        let endpoint = quinn::Endpoint::server(config, addr)
            .with_context(|| format!("binding the QUIC endpoint on {addr}"))?;
        Ok(QuicServer {
            endpoint,
            grid,
            cert_sha256,
            limits,
            per_ip: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            bytes: Arc::new(Semaphore::new(limits.bytes_in_flight)),
            strangers: Mutex::new(Seats::new(limits.max_unauthenticated)),
            hosts: Mutex::new(HostRoom {
                seats: Seats::new(limits.max_connections),
                by_host: HashMap::new(),
            }),
            connections: Arc::new(Semaphore::new(
                limits.max_connections + 2 * limits.max_unauthenticated,
            )),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Takes a place for a connection from `ip`, or `None` when that
    /// address already has its share.
    fn ip_slot(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        let mut map = lock(&self.per_ip);
        let n = map.entry(ip).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot { server: self, ip })
    }

    /// A seat for a connection that has not said Hello; the oldest such
    /// connection gives way when all are taken.
    fn stranger_seat(self: &Arc<Self>) -> Seat {
        let evicted = Arc::new(Notify::new());
        let admission = lock(&self.strangers).admit(evicted.clone(), now_ms(), |_| true);
        let id = match admission {
            Admission::Seated(id) => id,
            Admission::Replaced {
                seat,
                evicted: (_, wake),
            } => {
                wake.notify_one();
                seat
            }
            // Unreachable with a predicate that accepts every seat.
            Admission::Full => SeatId::MAX,
        };
        Seat {
            server: self.clone(),
            room: Room::Strangers,
            id,
            evicted,
        }
    }

    /// A seat for `host`'s authenticated connection, or `None` when every
    /// seat is taken by a host that holds work (or was quiet less long
    /// than the ones searched).
    fn host_seat(self: &Arc<Self>, host: HostId) -> Option<Seat> {
        let evicted = Arc::new(Notify::new());
        // The host's own older connection (a reconnect, or a second one)
        // gives way first.
        let candidates: Vec<HostId> = {
            let mut room = lock(&self.hosts);
            if let Some(old) = room.by_host.remove(&host)
                && let Some((_, wake)) = room.seats.leave(old)
            {
                wake.notify_one();
            }
            if room.seats.len() < self.limits.max_connections {
                Vec::new()
            } else {
                room.seats
                    .quietest(EVICTION_SCAN)
                    .map(|(h, _)| *h)
                    .collect()
            }
        };
        // Which of the quietest hold no work, asked of the scheduler with
        // the room's lock released.
        let idle = self.grid.without_work(&candidates);
        let mut room = lock(&self.hosts);
        let admission = room
            .seats
            .admit((host, evicted.clone()), now_ms(), |(h, _)| idle.contains(h));
        let id = match admission {
            Admission::Seated(id) => id,
            Admission::Replaced {
                seat,
                evicted: (old_seat, (old, wake)),
            } => {
                tracing::debug!(
                    host,
                    evicted = old,
                    "every seat taken: the quietest idle host gives way"
                );
                if room.by_host.get(&old) == Some(&old_seat) {
                    room.by_host.remove(&old);
                }
                wake.notify_one();
                seat
            }
            Admission::Full => return None,
        };
        room.by_host.insert(host, id);
        drop(room);
        Some(Seat {
            server: self.clone(),
            room: Room::Hosts,
            id,
            evicted,
        })
    }

    /// Spends one of `ip`'s new-identity tokens; false when it has none.
    fn may_register(&self, ip: IpAddr, now_ms: u64) -> bool {
        let per_hour = self.limits.new_hosts_per_ip_per_hour as f64;
        let mut map = lock(&self.registrations);
        if map.len() > 100_000 {
            // Forget addresses whose bucket has refilled: they lose nothing.
            map.retain(|_, (tokens, at)| {
                *tokens + now_ms.saturating_sub(*at) as f64 * per_hour / 3.6e6 < per_hour
            });
        }
        let (tokens, at) = map.entry(ip).or_insert((per_hour, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) as f64 * per_hour / 3.6e6).min(per_hour);
        *at = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn run(self: Arc<Self>) {
        // The rooms bound the connections (and so the per-connection
        // stream buffers) a crowd of strangers can hold open at once.
        while let Some(incoming) = self.endpoint.accept().await {
            let remote = incoming.remote_address();
            let ip = door_key(remote.ip());
            if lock(&self.per_ip).get(&ip).copied().unwrap_or(0)
                >= self.limits.max_connections_per_ip
            {
                tracing::debug!(%remote, "refusing a connection: its address has its share open");
                incoming.refuse();
                continue;
            }
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "refusing a connection: the door's backstop is full");
                incoming.refuse();
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _open = crate::metrics::OpenConnection::enter();
                let Some(_slot) = server.ip_slot(ip) else {
                    incoming.refuse();
                    return;
                };
                let seat = server.stranger_seat();
                let connecting = tokio::select! {
                    c = async { incoming.await } => c,
                    // Dropping the handshake closes it.
                    _ = seat.evicted.notified() => return,
                };
                match connecting {
                    Ok(conn) => {
                        if let Err(e) = server.serve_connection(conn, seat).await {
                            tracing::debug!(%remote, "connection ended: {e:#}");
                        }
                    }
                    // A wrong ALPN or a failed handshake ends here.
                    Err(e) => tracing::info!(%remote, "QUIC handshake refused: {e}"),
                }
            });
        }
    }

    async fn serve_connection(
        self: &Arc<Self>,
        conn: quinn::Connection,
        stranger: Seat,
    ) -> Result<()> {
        let remote = conn.remote_address().ip().to_canonical();
        // The Hello must arrive, whole and small, within a deadline: a
        // stranger who has not proved a key holds almost nothing. Until it
        // has a host's seat (or is refused), the connection keeps its
        // stranger's seat and may lose it to a newer stranger; the whole
        // greeting, refusals included, has a deadline too.
        let hello_timeout = self.limits.hello_timeout;
        let greeting = async {
            let first = tokio::time::timeout(hello_timeout, async {
                let (send, mut recv) = conn.accept_bi().await?;
                let req = read_frame(&mut recv, MAX_HELLO, None).await;
                anyhow::Ok((send, req))
            })
            .await;
            let (mut send, req) = match first {
                Ok(r) => r?,
                Err(_) => {
                    conn.close(2u32.into(), b"no Hello in time");
                    anyhow::bail!("no Hello within {hello_timeout:?}");
                }
            };
            let reply = match req.map(|(r, _)| r) {
                Ok(Request::Hello(hello)) => match self.authenticate(&hello, remote).await {
                    Ok(host) => match self.host_seat(host) {
                        Some(seat) => {
                            respond(
                                &mut send,
                                &Reply::Welcome(Welcome {
                                    host_id: host,
                                    mirrors: self.grid.mirror_urls(),
                                }),
                            )
                            .await?;
                            return Ok(Some((host, seat)));
                        }
                        None => error(
                            ErrorCode::Busy,
                            "every connection the coordinator serves belongs to a host holding work; try again later",
                        ),
                    },
                    Err(e) => {
                        let code = if e.is::<StoreFailure>() {
                            ErrorCode::Internal
                        } else if e.is::<Banned>() {
                            ErrorCode::Banned
                        } else if e.is::<TooManyIdentities>() || e.is::<StorageLow>() {
                            ErrorCode::Busy
                        } else {
                            ErrorCode::Unauthenticated
                        };
                        error(code, format!("{e:#}"))
                    }
                },
                Ok(_) => error(
                    ErrorCode::Unauthenticated,
                    "the first request on a connection must be Hello",
                ),
                Err(reply) => reply,
            };
            refuse(&conn, &mut send, &reply).await?;
            Ok(None)
        };
        let greeted = tokio::select! {
            g = tokio::time::timeout(2 * hello_timeout + Duration::from_secs(5), greeting) => g,
            _ = stranger.evicted.notified() => {
                conn.close(4u32.into(), b"the door is full");
                anyhow::bail!("closed before its Hello was answered: newer strangers needed the seat");
            }
        };
        drop(stranger);
        let (host, seat) = match greeted {
            Ok(Ok(Some(greeted))) => greeted,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                conn.close(2u32.into(), b"greeting took too long");
                anyhow::bail!("the greeting did not finish in time");
            }
        };
        let seat = Arc::new(seat);
        tracing::debug!(host, remote = %conn.remote_address(), "worker connected");
        // When the connection last asked for work, reported, or fetched a
        // module: requests that do none of these do not keep it open.
        let useful = Arc::new(AtomicU64::new(now_ms()));
        let idle = self.limits.idle_timeout;
        loop {
            let quiet =
                Duration::from_millis(now_ms().saturating_sub(useful.load(Ordering::Relaxed)));
            let wait = idle.saturating_sub(quiet).max(Duration::from_millis(100));
            let next = tokio::select! {
                next = tokio::time::timeout(wait, conn.accept_bi()) => next,
                _ = seat.evicted.notified() => {
                    conn.close(4u32.into(), b"the door is full and this connection was idle");
                    return Ok(());
                }
            };
            let (mut send, mut recv) = match next {
                Ok(stream) => stream?,
                Err(_) => {
                    let quiet = now_ms().saturating_sub(useful.load(Ordering::Relaxed));
                    if quiet < idle.as_millis() as u64 {
                        continue;
                    }
                    // Quiet for a while: keep the connection only while its
                    // host holds work it will report on.
                    if self.grid.holds_work(host) {
                        useful.store(now_ms(), Ordering::Relaxed);
                        continue;
                    }
                    conn.close(3u32.into(), b"idle");
                    return Ok(());
                }
            };
            let grid = self.grid.clone();
            let budget = self.bytes.clone();
            let timeout = self.limits.request_timeout;
            let useful = useful.clone();
            let seat = seat.clone();
            tokio::spawn(async move {
                let read =
                    tokio::time::timeout(timeout, read_frame(&mut recv, MAX_FRAME, Some(budget)));
                let reply = match read.await {
                    Ok(Ok((req, _bytes_held))) => {
                        if is_useful(&req) {
                            let now = now_ms();
                            useful.store(now, Ordering::Relaxed);
                            seat.touch(now);
                        }
                        handle(&grid, host, req).await
                    }
                    Ok(Err(reply)) => reply,
                    Err(_) => error(
                        ErrorCode::Malformed,
                        format!("the request did not arrive within {timeout:?}"),
                    ),
                };
                if let Err(e) = respond(&mut send, &reply).await {
                    tracing::debug!(host, "reply not delivered: {e}");
                }
            });
        }
    }

    async fn authenticate(&self, hello: &Hello, addr: IpAddr) -> Result<HostId> {
        let now = now_ms();
        anyhow::ensure!(
            hello.timestamp_ms.abs_diff(now) <= HELLO_SKEW_MS,
            "the greeting's clock is more than 10 minutes off the coordinator's; fix the host's clock"
        );
        let account = match &hello.account {
            None => Account::default(),
            Some(a) => {
                let name = volunteer_name("account name", &a.name, MAX_ACCOUNT)
                    .map_err(anyhow::Error::msg)?;
                let team =
                    volunteer_name("team name", &a.team, MAX_TEAM).map_err(anyhow::Error::msg)?;
                let key =
                    VerifyingKey::from_bytes(&a.account_key).context("invalid account key")?;
                let sig = Signature::from_slice(&a.signature)
                    .context("invalid account signature encoding")?;
                key.verify_strict(&attachment_message(&hello.host_key, &a.name, &a.team), &sig)
                    .context("the account's signature on this host does not verify: only the holder of an account's key can attach hosts to it")?;
                Account {
                    id: hex::encode(a.account_key),
                    name,
                    team,
                }
            }
        };
        for (what, text) in [
            ("os", &hello.facts.os),
            ("arch", &hello.facts.arch),
            ("cpu_model", &hello.facts.cpu_model),
            ("worker_version", &hello.worker_version),
        ] {
            anyhow::ensure!(
                text.len() <= MAX_HOST_FACT && text.chars().all(is_host_fact_char),
                "the greeting's `{what}` must be at most {MAX_HOST_FACT} printable ASCII characters"
            );
        }
        // Shown on every host list: refused rather than cleaned, so the
        // volunteer learns the name did not pass (the worker checks it
        // before it starts).
        let name = volunteer_name("host name", &hello.facts.name, MAX_HOST_NAME)
            .map_err(anyhow::Error::msg)?;
        let key = VerifyingKey::from_bytes(&hello.host_key).context("invalid host key")?;
        let sig = Signature::from_slice(&hello.signature).context("invalid signature encoding")?;
        key.verify_strict(&hello_message(&self.cert_sha256, hello.timestamp_ms), &sig)
            .context("the greeting's signature does not verify")?;
        let store = self.grid.store.clone();
        let key_hex = hex::encode(hello.host_key);
        let known = tokio::task::spawn_blocking(move || store.host_by_key(&key_hex))
            .await?
            .map_err(|e| anyhow::anyhow!(StoreFailure(e.to_string())))?;
        if known.is_none() {
            self.grid.storage.may_grow()?;
            if !self.may_register(door_key(addr), now) {
                return Err(TooManyIdentities(addr).into());
            }
        }
        let new_host = known.is_none().then(|| {
            (
                hex::encode(hello.host_key),
                hello.facts.cores,
                hello.facts.os.clone(),
                hello.facts.arch.clone(),
            )
        });
        let account_id = account.id.clone();
        let store = self.grid.store.clone();
        let mut hello = hello.clone();
        // SQLite integers are i64; a stranger's u64 must fit.
        hello.facts.memory_bytes = hello.facts.memory_bytes.min(i64::MAX as u64);
        hello.facts.cores = hello.facts.cores.min(crate::trust::MAX_CORES);
        hello.facts.slots = hello.facts.slots.min(crate::trust::MAX_CORES);
        hello.facts.name = name;
        let host = tokio::task::spawn_blocking(move || {
            store.upsert_host_in(
                &hello.host_key,
                &hello.facts,
                &hello.worker_version,
                &account,
                now,
            )
        })
        .await?
        .map_err(|e| anyhow::anyhow!(StoreFailure(e.to_string())))?;
        self.grid.join(host, addr).await?;
        match new_host {
            Some((key, cores, os, arch)) => tracing::info!(
                host,
                key,
                account = account_id,
                %addr,
                cores,
                os,
                arch,
                "new host joined"
            ),
            None => tracing::debug!(host, %addr, "host reconnected"),
        }
        Ok(host)
    }
}

/// Whether a request shows a connection in use: it asks for work, reports,
/// gives work back or fetches a module. A connection sending only empty
/// exchanges is idle all the same.
fn is_useful(req: &Request) -> bool {
    match req {
        Request::Exchange(ex) => ex.want > 0 || !ex.reports.is_empty() || !ex.returned.is_empty(),
        Request::GetBlob(_) => true,
        Request::Hello(_) => false,
    }
}

/// What the per-address limits count by: an IPv4 address, or an IPv6 /64
/// (one host's or one site's share of addresses costs nothing to vary).
fn door_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Too many new identities from one address.
#[derive(Debug, thiserror::Error)]
#[error("too many new hosts from {0} in the last hour; try again later")]
struct TooManyIdentities(IpAddr);

/// A store error during Hello: the worker is not at fault and may retry.
#[derive(Debug, thiserror::Error)]
#[error("registering the host failed: {0}")]
struct StoreFailure(String);

async fn handle(grid: &Grid, host: HostId, req: Request) -> Reply {
    match req {
        Request::Hello(_) => error(ErrorCode::Malformed, "this connection already said Hello"),
        Request::Exchange(ex) => match grid.exchange(host, ex).await {
            Ok(r) => Reply::Exchange(r),
            Err(e) if e.is::<Banned>() => error(ErrorCode::Banned, format!("{e:#}")),
            Err(e) => error(ErrorCode::Internal, format!("{e:#}")),
        },
        Request::GetBlob(hash) => {
            let store = grid.store.clone();
            match tokio::task::spawn_blocking(move || store.get_blob(&hash)).await {
                Ok(Ok(Some(bytes))) => {
                    crate::metrics::BLOBS_SERVED.fetch_add(1, Ordering::Relaxed);
                    let n = bytes.len() as u64;
                    crate::metrics::BLOB_BYTES_SERVED.fetch_add(n, Ordering::Relaxed);
                    Reply::Blob(bytes)
                }
                Ok(Ok(None)) => error(ErrorCode::NotFound, format!("no blob {hash}")),
                Ok(Err(e)) => error(ErrorCode::Internal, e.to_string()),
                Err(e) => error(ErrorCode::Internal, e.to_string()),
            }
        }
    }
}
