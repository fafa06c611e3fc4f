//! Private networks for fault tests: Linux network namespaces joined by
//! veth pairs, shaped with `tc` and partitioned with `ip link`.
//!
//! A [`Star`] is one namespace for the coordinator and one per worker,
//! each worker on a /24 of its own, linked to the coordinator's namespace
//! by a veth pair. Addresses come from 198.18.0.0/15 (RFC 2544, set aside
//! for benchmarking) and exist only inside the namespaces: nothing in them
//! is routed to or from the machine's own network.
//!
//! Names are `pgnf-PID-N-ROLE`, unique per test process and per star, so
//! reruns and parallel tests never collide. Dropping a [`Star`] kills what
//! runs in its namespaces and deletes them (and with them the veths and
//! qdiscs), also when a test panics; [`Star::new`] first sweeps namespaces
//! left by test processes that no longer run (a `kill -9` skips `Drop`).
//!
//! Needs root and iproute2 (`ip`, `tc`). Impairments use `tc netem` where
//! the kernel has it; a kernel built without `sch_netem` gets the same
//! loss, delay and rate from `tbf`, iptables and a delay line in user
//! space instead (see [`Impairment`]).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Every namespace this module makes starts with this.
const PREFIX: &str = "pgnf-";

/// Fails unless the test runs as root, saying how to run it.
pub fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status to check for root")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    if uid != "0" {
        bail!(
            "network fault tests make network namespaces and need root (effective uid {uid}): \
             run them as root, e.g. `sudo -E cargo nextest run --release -p peergrid-tests -E 'binary(netfaults)'` \
             (CI runs as root)"
        );
    }
    for tool in ["ip", "tc"] {
        if which(tool).is_none() {
            bail!(
                "`{tool}` is missing: install iproute2 (`apt-get install iproute2`, or run scripts/setup as root)"
            );
        }
    }
    Ok(())
}

/// The path of `program` on `PATH`.
fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.exists())
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The network namespaces that exist now (`ip netns list`).
fn namespaces() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Kills every process in namespace `ns` and deletes it.
fn destroy(ns: &str) {
    if let Ok(out) = run("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Deletes namespaces of this module whose test process is gone.
fn sweep() -> Result<()> {
    for ns in namespaces()? {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            destroy(&ns);
        }
    }
    Ok(())
}

/// What a link does to the packets it carries, in each direction.
///
/// With `sch_netem` this is one `netem loss L% delay D rate R` qdisc on
/// each end of the link. A kernel without it (such as this project's
/// build machines') gets `tbf` for the rate on each end, and for loss and
/// delay a delay line at the hub fed by iptables' NFQUEUE target.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss_percent: u32,
    /// One-way delay: the round trip is twice this.
    pub delay_ms: u32,
    pub rate_kbit: u32,
}

/// One namespace for the coordinator and one per worker (see the module doc).
pub struct Star {
    /// `pgnf-PID-N`: the prefix of this star's namespaces.
    name: String,
    /// The coordinator's namespace.
    pub hub: String,
    /// The workers' namespaces, in order.
    pub spokes: Vec<String>,
    /// Every namespace made so far, deleted on drop.
    made: Vec<String>,
    /// The hub's delay line, on a kernel without netem.
    delay_line: Option<DelayLine>,
}

impl Star {
    /// The coordinator's address, on its loopback device in [`Star::hub`]
    /// and reached by every worker through its own link.
    pub const HUB_ADDR: &'static str = "198.18.0.1";

    /// Makes the coordinator's namespace and `spokes` worker namespaces,
    /// each worker `i` at `198.18.{i+1}.2/24` behind `198.18.{i+1}.1` in
    /// the hub (device `s{i}` there, `eth0` in the worker's namespace).
    pub fn new(spokes: usize) -> Result<Star> {
        anyhow::ensure!(spokes < 250, "at most 249 spokes");
        require_root()?;
        sweep()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut star = Star {
            hub: format!("{name}-hub"),
            spokes: Vec::new(),
            made: Vec::new(),
            delay_line: None,
            name,
        };
        let hub = star.hub.clone();
        star.add_namespace(&hub)?;
        run(
            "ip",
            &[
                "-n",
                &hub,
                "addr",
                "add",
                &format!("{}/32", Self::HUB_ADDR),
                "dev",
                "lo",
            ],
        )?;
        for i in 0..spokes {
            let ns = format!("{}-w{i}", star.name);
            star.add_namespace(&ns)?;
            let dev = Self::hub_dev(i);
            let net = i + 1;
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &dev, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &hub,
                    "addr",
                    "add",
                    &format!("198.18.{net}.1/24"),
                    "dev",
                    &dev,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("198.18.{net}.2/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &hub, "link", "set", &dev, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("198.18.{net}.1"),
                ],
            )?;
            star.spokes.push(ns);
        }
        Ok(star)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        run("ip", &["netns", "add", ns])?;
        self.made.push(ns.to_string());
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The hub's end of worker `i`'s link.
    fn hub_dev(i: usize) -> String {
        format!("s{i}")
    }

    /// Worker `i`'s address.
    pub fn spoke_addr(i: usize) -> String {
        format!("198.18.{}.2", i + 1)
    }

    /// `program` to be run inside namespace `ns` (`ip netns exec`): the
    /// process is `program` itself, so killing the child kills it.
    pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Shapes every link, both directions, with `imp`. Returns how: `netem`,
    /// or `tbf+iptables+nfqueue` on a kernel without netem.
    pub fn impair(&mut self, imp: &Impairment) -> Result<&'static str> {
        if has_netem(&self.hub)? {
            for (i, ns) in self.spokes.iter().enumerate() {
                shape_netem(&self.hub, &Self::hub_dev(i), imp)?;
                shape_netem(ns, "eth0", imp)?;
            }
            return Ok("netem");
        }
        // Rate on each end's egress; loss and delay at the hub, once per
        // direction (its egress towards a worker, its ingress from one).
        for (i, ns) in self.spokes.iter().enumerate() {
            shape_rate(&self.hub, &Self::hub_dev(i), imp)?;
            shape_rate(ns, "eth0", imp)?;
        }
        const QUEUE: u16 = 0;
        self.delay_line = Some(DelayLine::start(&self.hub, QUEUE, imp)?);
        queue_links(&self.hub, QUEUE)?;
        Ok("tbf+iptables+nfqueue")
    }

    /// Runs `f` on a thread inside namespace `ns` and returns what it
    /// returns. Sockets `f` opens stay in `ns` after it returns.
    pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // setns moves this thread only, and it ends here.
                    let file =
                        std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .with_context(|| format!("entering {path}"))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in {path} panicked"))?
        })
    }

    /// Cuts (`up = false`) or restores every worker's link, at the hub's end.
    pub fn set_links(&self, up: bool) -> Result<()> {
        for i in 0..self.spokes.len() {
            let dev = Self::hub_dev(i);
            run(
                "ip",
                &[
                    "-n",
                    &self.hub,
                    "link",
                    "set",
                    &dev,
                    if up { "up" } else { "down" },
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        self.delay_line = None;
        for ns in &self.made {
            destroy(ns);
        }
    }
}

/// Whether `tc` knows the netem qdisc on this kernel: tried on the
/// loopback device of `ns` (which carries none of the test's traffic
/// between namespaces), then removed.
fn has_netem(ns: &str) -> Result<bool> {
    let out = Command::new("tc")
        .args([
            "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ])
        .output()
        .context("running tc")?;
    if out.status.success() {
        run("tc", &["-n", ns, "qdisc", "del", "dev", "lo", "root"])?;
        return Ok(true);
    }
    let said = String::from_utf8_lossy(&out.stderr);
    if said.contains("unknown") {
        return Ok(false);
    }
    bail!("`tc qdisc add … netem` failed: {}", said.trim())
}

/// `netem loss L% delay D rate R` on the egress of `dev` in `ns`.
fn shape_netem(ns: &str, dev: &str, imp: &Impairment) -> Result<()> {
    run(
        "tc",
        &[
            "-n",
            ns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "netem",
            "loss",
            &format!("{}%", imp.loss_percent),
            "delay",
            &format!("{}ms", imp.delay_ms),
            "rate",
            &format!("{}kbit", imp.rate_kbit),
        ],
    )?;
    Ok(())
}

/// A token bucket at `rate_kbit` on the egress of `dev` in `ns`, holding
/// up to a second of traffic (netem's rate also queues rather than drops).
fn shape_rate(ns: &str, dev: &str, imp: &Impairment) -> Result<()> {
    run(
        "tc",
        &[
            "-n",
            ns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{}kbit", imp.rate_kbit),
            "burst",
            "16kbit",
            "latency",
            "1s",
        ],
    )?;
    Ok(())
}

/// iptables rules in `ns` that hand every packet the namespace sends or
/// receives through the devices named `s*` to nfqueue `queue` (the delay
/// line, which also drops the lost ones).
fn queue_links(ns: &str, queue: u16) -> Result<()> {
    if which("iptables").is_none() {
        bail!(
            "this kernel has no netem qdisc and `iptables` is missing to emulate its loss and delay: \
             install it (`apt-get install iptables`, or run scripts/setup as root)"
        );
    }
    let queue = queue.to_string();
    for (chain, dir) in [("OUTPUT", "-o"), ("INPUT", "-i")] {
        let rule = [
            "-A",
            chain,
            dir,
            "s+",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ];
        let out = Star::command(ns, "iptables")
            .args(rule)
            .output()
            .context("running iptables")?;
        if !out.status.success() {
            bail!(
                "iptables refused `{}` in {ns}: {}",
                rule.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// netem's loss and delay in user space: a thread in the hub's namespace
/// takes the packets iptables queues (nfqueue, metadata only), drops
/// `loss_percent` of them at random and accepts the others `delay_ms`
/// after they arrived, in order. Packets wait in the kernel meanwhile, and
/// a dropped packet vanishes silently, as on a wire (the sender's
/// `sendmsg` has already returned).
struct DelayLine {
    /// Set on drop; the thread checks it at least every 20 ms.
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

// nfnetlink_queue's message types and attributes (linux/netfilter/nfnetlink_queue.h).
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const AF_INET: u16 = 2;

impl DelayLine {
    /// Binds `queue` in `ns` and starts the thread.
    fn start(ns: &str, queue: u16, imp: &Impairment) -> Result<DelayLine> {
        let delay = Duration::from_millis(imp.delay_ms.into());
        let loss = imp.loss_percent;
        // The socket belongs to the namespace it was opened in.
        let sock = Star::in_namespace(ns, || nfqueue_socket(queue))??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("delay line {ns}"))
            .spawn(move || {
                if let Err(e) = delay_packets(&sock, queue, delay, loss, &flag) {
                    // Packets now wait forever in the queue: the test
                    // sees a dead network and says why in its output.
                    eprintln!("the delay line in {ns} stopped: {e:#}");
                }
            })
            .context("starting the delay line thread")?;
        Ok(DelayLine {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A netlink message: header, nfgenmsg (family, version 0, `res_id`) and
/// attributes, each padded to 4 bytes.
fn nfnl_message(msg: u16, flags: u16, family: u8, res_id: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&res_id.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m
}

/// The netlink messages in one datagram, as (type, payload after the
/// 16-byte header).
fn netlink_messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push((u16::from_ne_bytes([buf[4], buf[5]]), &buf[16..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// Opens a netfilter netlink socket in the calling thread's network
/// namespace and binds it to `queue`, copying packet metadata only.
fn nfqueue_socket(queue: u16) -> Result<rustix::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketType, netlink};
    let sock = rustix::net::socket(
        AddressFamily::NETLINK,
        SocketType::RAW,
        Some(netlink::NETFILTER),
    )
    .context("opening a netfilter netlink socket")?;
    rustix::net::bind(&sock, &netlink::SocketAddrNetlink::new(0, 0))
        .context("binding the netlink socket")?;
    // Room for bursts of queued-packet notices.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 8 << 20);
    let cmd = [NFQNL_CFG_CMD_BIND, 0, (AF_INET >> 8) as u8, AF_INET as u8];
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    for attr in [(NFQA_CFG_CMD, &cmd[..]), (NFQA_CFG_PARAMS, &params[..])] {
        let m = nfnl_message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            0,
            queue,
            &[attr],
        );
        rustix::net::send(&sock, &m, rustix::net::SendFlags::empty())
            .context("configuring nfqueue")?;
        let mut buf = [0u8; 4096];
        let (n, _) = rustix::net::recv(&sock, &mut buf[..], rustix::net::RecvFlags::empty())
            .context("reading nfqueue's answer")?;
        for (kind, payload) in netlink_messages(&buf[..n]) {
            if kind == NLMSG_ERROR && payload.len() >= 4 {
                let errno = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if errno != 0 {
                    bail!(
                        "the kernel refused nfqueue {queue}'s configuration: errno {}",
                        -errno
                    );
                }
            }
        }
    }
    Ok(sock)
}

/// Drops `loss_percent` of the packets queued on `sock` and accepts the
/// others `delay` after they arrived, until `stop`.
fn delay_packets(
    sock: &rustix::fd::OwnedFd,
    queue: u16,
    delay: Duration,
    loss_percent: u32,
    stop: &AtomicBool,
) -> Result<()> {
    use rustix::io::Errno;
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut rng = XorShift::from_clock();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(&(due, id)) = held.front() {
            if due > now {
                break;
            }
            held.pop_front();
            let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
            verdict.extend_from_slice(&id.to_be_bytes());
            let m = nfnl_message(
                NFQNL_MSG_VERDICT,
                NLM_F_REQUEST,
                0,
                queue,
                &[(NFQA_VERDICT_HDR, &verdict)],
            );
            rustix::net::send(sock, &m, rustix::net::SendFlags::empty())
                .context("sending a verdict")?;
        }
        let wait = held
            .front()
            .map_or(Duration::from_millis(20), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        set_socket_timeout(sock, Timeout::Recv, Some(wait))
            .context("setting the receive timeout")?;
        let n = match rustix::net::recv(sock, &mut buf[..], rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(Errno::AGAIN | Errno::INTR) => continue,
            // The receive buffer overflowed: some notices are lost and
            // their packets stay queued; the transport resends them.
            Err(Errno::NOBUFS) => continue,
            Err(e) => return Err(e).context("reading queued packets"),
        };
        let arrived = Instant::now();
        for (kind, payload) in netlink_messages(&buf[..n]) {
            if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET || payload.len() < 4 {
                continue;
            }
            let mut attrs = &payload[4..];
            while attrs.len() >= 4 {
                let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                if len < 4 || len > attrs.len() {
                    break;
                }
                if kind == NFQA_PACKET_HDR && len >= 8 {
                    let id = u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]);
                    if rng.next_percent() < loss_percent {
                        send_verdict(sock, queue, id, NF_DROP)?;
                    } else {
                        held.push_back((arrived + delay, id));
                    }
                }
                attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
            }
        }
    }
    Ok(())
}

/// Tells the kernel what to do with queued packet `id`.
fn send_verdict(sock: &rustix::fd::OwnedFd, queue: u16, id: u32, verdict: u32) -> Result<()> {
    let mut hdr = verdict.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    let m = nfnl_message(
        NFQNL_MSG_VERDICT,
        NLM_F_REQUEST,
        0,
        queue,
        &[(NFQA_VERDICT_HDR, &hdr)],
    );
    rustix::net::send(sock, &m, rustix::net::SendFlags::empty()).context("sending a verdict")?;
    Ok(())
}

/// Marsaglia's xorshift64: which packets are lost needs no better randomness.
struct XorShift(u64);

impl XorShift {
    fn from_clock() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        XorShift(nanos | 1)
    }

    /// A number in 0..100.
    fn next_percent(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_message_has_the_layout_nfnetlink_expects() {
        let m = nfnl_message(
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            0,
            7,
            &[(NFQA_VERDICT_HDR, &[0, 0, 0, 1, 0, 0, 0, 42])],
        );
        // nlmsghdr (16) + nfgenmsg (4) + one attribute (4 + 8).
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (3 << 8) | 1);
        assert_eq!(&m[18..20], &7u16.to_be_bytes());
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 12);
        assert_eq!(u16::from_ne_bytes([m[22], m[23]]), NFQA_VERDICT_HDR);
        let parsed = netlink_messages(&m);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, (3 << 8) | 1);
        assert_eq!(parsed[0].1.len(), 16);
    }

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let m = nfnl_message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST,
            0,
            0,
            &[(NFQA_CFG_PARAMS, &[0; 5])],
        );
        assert_eq!(m.len(), 16 + 4 + 12);
    }

    #[test]
    fn truncated_or_lying_netlink_lengths_end_the_parse() {
        let m = nfnl_message(NFQNL_MSG_PACKET, 0, 0, 0, &[]);
        for cut in 0..m.len() {
            assert!(netlink_messages(&m[..cut]).is_empty(), "cut at {cut}");
        }
        let mut lying = m.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(netlink_messages(&lying).is_empty());
        lying[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(netlink_messages(&lying).is_empty());
    }
}
