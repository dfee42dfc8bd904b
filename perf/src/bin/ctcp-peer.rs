//! `ctcp-peer`: both ends of an IPsec-over-TCP tunnel, for testing what a middlebox on the path
//! does to it (`reference/ipsec-over-tcp-fails-through-asa.txt`).
//!
//! `ctcp-peer headend --listen ADDR:PORT` and `ctcp-peer client --connect ADDR:PORT` speak TCP
//! themselves over a raw IPv4 socket, as cTCP stacks do: a three-way handshake, then one whole
//! datagram a segment, acknowledgements that go past holes, and nothing ever sent again but the
//! handshake. The datagrams are IKE- and ESP-shaped (cTCP, RFC 8229, or RFC 8229 framing
//! without its prefix, `--mode`), their bodies a check block and a test pattern, so the receiver
//! counts what arrived, what arrived twice and what arrived changed. Each side writes a JSON
//! report when it exits.
//!
//! The wire formats are in the library (`tollgate_perf::ipsec_over_tcp`, shared with
//! `pcap-gen`), as pure functions with their tests; this file is the command line, the raw
//! socket, the nftables rule that keeps the kernel's TCP quiet, and the event loop.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Args, Parser, Subcommand};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recvfrom, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn,
};
use serde::Serialize;

use tollgate_perf::ipsec_over_tcp::{
    self as wire, Datagram, Kind, Mode, Outgoing, TcpHeader, ACK, FIN, PSH, RST, SYN,
};

const DEFAULT_PORT: u16 = 10_000;
/// The client sends its SYN again this many times, [`SYN_INTERVAL`] apart.
const SYN_RETRIES: u32 = 5;
const SYN_INTERVAL: Duration = Duration::from_secs(1);
/// A pure ACK goes out after this many data segments with nothing sent in between...
const ACK_EVERY_SEGMENTS: u32 = 10;
/// ...or this long after data arrived that nothing acknowledged.
const ACK_DELAY: Duration = Duration::from_millis(50);
/// The event loop wakes at least this often (signals, deadlines).
const MAX_WAIT: Duration = Duration::from_millis(100);

const LONG_ABOUT: &str = "\
Emulates both ends of an IPsec-over-TCP tunnel, to test what a middlebox on the path does to it.

Modes (--mode):
  ctcp     Cisco's IPsec over TCP (the VPN Client's cTCP, TCP port 10000): IKEv1 aggressive-mode
           messages inside a UDP 500->500 packet, raw ESP (SPI, sequence number, payload), each
           datagram followed by a 16-byte trailer (this emulator's own: the datagram's length,
           2 bytes big-endian, then 14 zero bytes).
  rfc8229  RFC 8229: the client's stream begins with IKETCP; every message carries a 2-byte
           length counting itself; IKEv2 messages after a 4-byte zero non-ESP marker; raw ESP.
  framed   RFC 8229 framing without the IKETCP prefix.

It speaks TCP itself over a raw IPv4 socket, the way cTCP does: a three-way handshake (MSS 1460
the only option), then exactly one whole datagram per segment, ACKs past any hole, the peer's
window, ACK numbers and duplicate ACKs ignored, and nothing retransmitted but the handshake
(the client sends its SYN up to 6 times, 1 s apart; the headend answers each with the same
SYN-ACK). A pure ACK goes out after 10 data segments received with nothing sent in between, or
50 ms after unacknowledged data.
Each side sends --ike IKE datagrams, then --count ESP datagrams, at --rate per second: the
client from the end of the handshake, the headend from the client's first datagram (a VPN
headend answers its client; it never speaks first, so a middlebox sees the client's payload
before the headend's). Every
datagram body starts with a check block (the segment's TCP sequence number, the datagram's
index and kind, an FNV-1a hash of the rest, which is a pattern seeded by the index), so the
receiver counts datagrams received, duplicated and modified (changed bytes, or carried at
another sequence number than the one they were sent at). The client lingers --linger-ms after
its last datagram, then sends a FIN and exits; the headend exits after its last datagram once the
FIN came, or the client was silent for --idle-timeout-ms. A RST from the peer stops either side
at once, and --timeout ends any run.
On exit each side writes a JSON report (--report, or stdout) and a one-line summary on stderr.

What it does not emulate: no cryptography (IKE bodies and ESP payloads are a test pattern,
nothing is encrypted or authenticated), no IKE state machine (a fixed number of IKE-shaped
messages each way; neither side waits for or answers the other's), no NAT-T or keepalives, no
IPv6, one connection per run. It is not a TCP: it never retransmits data, by design.

Needs root (CAP_NET_RAW and CAP_NET_ADMIN) and nftables' nft: the kernel's TCP knows nothing
of the emulated connection and would reset it, so the tool installs the nftables table
'ip ctcp_peer_<pid>' in its network namespace, dropping those resets, and deletes it when it
exits (normally, on an error, on SIGINT or SIGTERM; after a SIGKILL, delete it with
'nft delete table ip ctcp_peer_<pid>').

Exit status: 0 once a connection was established (the report says what got through); 1 on an
error, or if no connection came about (no SYN-ACK after the retries, no client before
--timeout); 130 or 143 after SIGINT or SIGTERM (the report is written all the same).";

const AFTER_HELP: &str = "\
Example (the lab's namespaces, through tollgate):
  scripts/lab exec server ctcp-peer headend --listen 198.18.0.2:10000 --report /tmp/headend.json &
  scripts/lab exec client ctcp-peer client --connect 198.18.0.2:10000 --report /tmp/client.json";

#[derive(Parser, Debug)]
#[command(
    name = "ctcp-peer",
    about = "Emulates both ends of an IPsec-over-TCP tunnel (Cisco cTCP, RFC 8229) over raw sockets",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_HELP,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    role: RoleArgs,
}

#[derive(Subcommand, Debug)]
enum RoleArgs {
    /// The VPN headend (TCP server): answer one client's handshake, then send and receive
    /// datagrams until the client finishes.
    Headend {
        /// Address and port to answer on, ADDR[:PORT] (port 10000 if absent). The address must
        /// be one of this host's.
        #[arg(long, value_parser = parse_endpoint)]
        listen: SocketAddrV4,
        /// After sending everything, exit once the client has been silent this long (ms).
        #[arg(long, default_value_t = 3000)]
        idle_timeout_ms: u64,
        #[command(flatten)]
        traffic: Traffic,
    },
    /// The VPN client (TCP initiator): connect, send and receive datagrams, linger, send a FIN.
    Client {
        /// The headend, ADDR[:PORT] (port 10000 if absent).
        #[arg(long, value_parser = parse_endpoint)]
        connect: SocketAddrV4,
        /// Local address (default: the one the route to --connect uses).
        #[arg(long)]
        local: Option<Ipv4Addr>,
        /// Local TCP port (default: random, 32768-60999).
        #[arg(long)]
        sport: Option<u16>,
        /// After sending everything, keep receiving and acknowledging this long (ms), then send
        /// a FIN and exit.
        #[arg(long, default_value_t = 1000)]
        linger_ms: u64,
        #[command(flatten)]
        traffic: Traffic,
    },
}

#[derive(Args, Debug, Clone)]
struct Traffic {
    /// How datagrams are carried (ctcp-peer --help describes each).
    #[arg(long, value_enum, default_value_t = Mode::Ctcp)]
    mode: Mode,
    /// IKE datagrams to send first.
    #[arg(long, default_value_t = 3)]
    ike: u32,
    /// ESP datagrams to send after the IKE ones.
    #[arg(long, default_value_t = 2000)]
    count: u32,
    /// Datagrams per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Size of each IKE message, its 28-byte header included (at least 48).
    #[arg(long, default_value_t = 300)]
    ike_size: usize,
    /// ESP payload size after the SPI and sequence number (at least 20).
    #[arg(long, default_value_t = 200)]
    esp_size: usize,
    /// Hard limit on the whole run, seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Write the JSON report here (default: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn parse_endpoint(s: &str) -> Result<SocketAddrV4, String> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(a);
    }
    s.parse::<Ipv4Addr>()
        .map(|ip| SocketAddrV4::new(ip, DEFAULT_PORT))
        .map_err(|_| format!("{s:?} is not an IPv4 ADDR[:PORT], e.g. 198.18.0.2:10000"))
}

impl Traffic {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be a positive number of datagrams per second, got {}",
            self.rate
        );
        ensure!(
            self.timeout.is_finite() && self.timeout > 0.0,
            "--timeout must be a positive number of seconds, got {}",
            self.timeout
        );
        let min_ike = wire::IKE_HEADER_LEN + wire::CHECK_BLOCK_LEN;
        ensure!(
            self.ike_size >= min_ike,
            "--ike-size {} is too small: an IKE message here is its 28-byte header and a \
             {}-byte check block at least ({min_ike})",
            self.ike_size,
            wire::CHECK_BLOCK_LEN
        );
        ensure!(
            self.esp_size >= wire::CHECK_BLOCK_LEN,
            "--esp-size {} is too small: the payload holds a {}-byte check block",
            self.esp_size,
            wire::CHECK_BLOCK_LEN
        );
        let prefix = if self.mode == Mode::Rfc8229 {
            wire::STREAM_PREFIX.len()
        } else {
            0
        };
        let mss = usize::from(wire::MSS);
        for (kind, size, flag) in [
            (Kind::Ike, self.ike_size, "--ike-size"),
            (
                Kind::Esp,
                wire::ESP_HEADER_LEN + self.esp_size,
                "--esp-size",
            ),
        ] {
            let len = prefix + wire::encapsulated_len(self.mode, kind, size);
            ensure!(
                len <= mss,
                "{flag} is too large: a datagram must fit one segment, and in {:?} mode this one \
                 takes {len} bytes, over the MSS of {mss}",
                name(&self.mode)
            );
        }
        Ok(())
    }
}

// --- Randomness --------------------------------------------------------------------------------

/// splitmix64, seeded from the OS: ISNs, SPIs and ports need only be unpredictable enough not
/// to collide between runs.
struct Rng(u64);

impl Rng {
    fn from_os() -> anyhow::Result<Rng> {
        let mut seed = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .context("reading /dev/urandom")?;
        Ok(Rng(u64::from_ne_bytes(seed)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn nonzero_u64(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    /// An ESP SPI: at least 256 (RFC 4303 section 2.1), and never what a cTCP IKE datagram
    /// begins with.
    fn spi(&mut self) -> u32 {
        loop {
            let v = self.next_u32();
            if v >= 256 && v != wire::CTCP_IKE_MARK {
                return v;
            }
        }
    }
}

// --- The kernel's resets -----------------------------------------------------------------------

/// The nftables table that drops the RSTs the kernel's TCP would send for the emulated
/// connection. Deleted on drop; the release profile aborts on panic, so nothing here panics.
struct RstFilter {
    table: String,
    installed: bool,
}

fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut child = match Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "nft not found: ctcp-peer needs nftables' nft to stop the kernel's TCP from \
             resetting the emulated connection (apt-get install nftables)"
        ),
        Err(e) => return Err(e).context("could not run nft"),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .context("writing rules to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    ensure!(
        out.status.success(),
        "nft {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl RstFilter {
    /// Installs `table ip ctcp_peer_<pid>` with one output rule: `matches` and RST, drop.
    fn install(matches: &str) -> anyhow::Result<RstFilter> {
        let table = format!("ctcp_peer_{}", std::process::id());
        // Create-if-missing, delete, create: replaces a leftover of a killed run with this pid.
        let script = format!(
            "table ip {table}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\t{matches} tcp flags & rst == rst counter drop\n\
             \t}}\n\
             }}\n"
        );
        nft(&["-f", "-"], Some(&script)).with_context(|| {
            format!(
                "could not install the nftables table ip {table} that keeps the kernel's TCP \
                 from resetting the connection"
            )
        })?;
        Ok(RstFilter {
            table,
            installed: true,
        })
    }

    fn remove(&mut self) {
        if std::mem::take(&mut self.installed) {
            if let Err(e) = nft(&["delete", "table", "ip", &self.table], None) {
                eprintln!(
                    "ctcp-peer: warning: could not delete nftables table ip {}: {e:#}; \
                     delete it with 'nft delete table ip {}'",
                    self.table, self.table
                );
            }
        }
    }
}

impl Drop for RstFilter {
    fn drop(&mut self) {
        self.remove();
    }
}

// --- The raw socket ----------------------------------------------------------------------------

struct RawTcp {
    fd: OwnedFd,
}

/// What became of a segment handed to the kernel.
enum Sent {
    Out,
    /// Dropped before it left: netfilter in this namespace (the lab's loss rules answer EPERM)
    /// or a full queue. Counted, and otherwise treated as lost on the way.
    DroppedLocally,
}

impl RawTcp {
    fn open(local: Ipv4Addr) -> anyhow::Result<RawTcp> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        )
        .context("could not open a raw TCP socket: ctcp-peer needs root or CAP_NET_RAW")?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(local, 0)),
        )
        .with_context(|| format!("could not bind the raw socket to {local}: is it an address of this host (or of this network namespace)?"))?;
        Ok(RawTcp { fd })
    }

    fn send(&self, dst: Ipv4Addr, segment: &[u8]) -> anyhow::Result<Sent> {
        let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
        loop {
            match sendto(self.fd.as_raw_fd(), segment, &to, MsgFlags::empty()) {
                Ok(_) => return Ok(Sent::Out),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPERM | Errno::ENOBUFS | Errno::EAGAIN) => {
                    return Ok(Sent::DroppedLocally)
                }
                Err(e) => return Err(e).with_context(|| format!("sending a segment to {dst}")),
            }
        }
    }

    /// Waits up to `timeout` for a packet to read.
    fn wait(&self, timeout: Duration) -> anyhow::Result<()> {
        let ms = timeout.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16;
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(e).context("poll on the raw socket"),
        }
    }

    /// One received IPv4 packet, or `None` when there is none waiting.
    fn recv(&self, buf: &mut [u8]) -> anyhow::Result<Option<usize>> {
        loop {
            match recvfrom::<SockaddrIn>(self.fd.as_raw_fd(), buf) {
                Ok((n, _)) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e).context("receiving from the raw socket"),
            }
        }
    }
}

// --- The report --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Client,
    Headend,
}

/// Why a side stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum StopReason {
    /// The client sent everything, lingered and sent its FIN.
    Done,
    /// The headend sent everything and the client's FIN had come.
    Fin,
    /// The peer reset the connection.
    Reset,
    /// The headend sent everything and the client was silent for --idle-timeout-ms.
    IdleTimeout,
    /// --timeout.
    Timeout,
    /// SIGINT or SIGTERM.
    Signal,
    /// The client's SYNs went unanswered.
    NoSynAck,
}

#[derive(Debug, Serialize)]
struct Report {
    role: Role,
    mode: Mode,
    local: String,
    remote: Option<String>,
    /// Client: first SYN to SYN-ACK. Headend: first SYN to the segment that completed it.
    handshake_ms: Option<f64>,
    /// Seconds from the start of the run to the handshake's completion.
    established_s: Option<f64>,
    syns_sent: u32,
    syns_received: u32,
    /// The MSS and option kinds of the peer's SYN or SYN-ACK (a proxy in the path shows its own).
    peer_mss: Option<u16>,
    peer_syn_options: Vec<u8>,
    datagrams_sent: u32,
    ike_sent: u32,
    esp_sent: u32,
    /// Every segment sent: handshake, data, pure ACKs, FIN.
    segments_sent: u64,
    pure_acks_sent: u64,
    /// Segments the kernel refused to send (local netfilter drop: EPERM; full queue),
    /// included in segments_sent...
    local_send_drops: u64,
    /// ...and of those, the ones carrying a datagram: sent, never on the wire.
    datagram_send_drops: u64,
    /// Unique datagrams received (by the sender's index).
    datagrams_received: u64,
    ike_received: u64,
    esp_received: u64,
    duplicates: u64,
    /// Datagrams that arrived changed: a failed check block, an inconsistent encapsulation,
    /// another TCP sequence number than the one they were sent at, or an ESP/IKE header that
    /// disagrees with the peer's earlier ones; plus payloads with no whole datagram and data
    /// segments with a bad TCP checksum.
    modified: u64,
    malformed_segments: u64,
    bad_checksum_segments: u64,
    /// Every segment from the peer: handshake, ACKs, data, FIN, RST.
    segments_received: u64,
    data_segments_received: u64,
    highest_index_received: Option<u32>,
    /// The client's stream began with IKETCP (headend, framed modes).
    prefix_received: bool,
    fin_received: bool,
    reset_received: bool,
    /// Seconds from the start of the run.
    first_received_s: Option<f64>,
    last_received_s: Option<f64>,
    elapsed_s: f64,
    stop_reason: StopReason,
    ike: u32,
    count: u32,
    rate: f64,
    ike_size: usize,
    esp_size: usize,
}

// --- The emulated endpoint ---------------------------------------------------------------------

/// This side's datagrams and their pacing.
struct Sender {
    total_ike: u32,
    total: u32,
    /// The next datagram's index.
    next: u32,
    rate: f64,
    esp_spi: u32,
    ike_initiator_spi: u64,
    ike_responder_spi: u64,
    ike_size: usize,
    esp_size: usize,
    /// rfc8229 client: `IKETCP` still to go, in front of the first datagram.
    prefix_pending: bool,
}

impl Sender {
    fn done(&self) -> bool {
        self.next >= self.total
    }

    /// When datagram `n` is due, counted from `start`.
    fn due(&self, start: Instant, n: u32) -> Instant {
        start + Duration::from_secs_f64(f64::from(n) / self.rate)
    }

    /// The TCP payload for the next datagram, sent at `tcp_seq`.
    fn payload(&mut self, role: Role, mode: Mode, tcp_seq: u32) -> (Kind, Vec<u8>) {
        let index = self.next;
        let prefix = std::mem::take(&mut self.prefix_pending);
        if index < self.total_ike {
            let body = wire::write_body(
                self.ike_size - wire::IKE_HEADER_LEN,
                tcp_seq,
                index,
                Kind::Ike,
            );
            let header = self.ike_header(role, mode, index);
            let message = wire::ike_message(&header, &body);
            (
                Kind::Ike,
                wire::encapsulate(mode, Outgoing::Ike(&message), prefix),
            )
        } else {
            let body = wire::write_body(self.esp_size, tcp_seq, index, Kind::Esp);
            let esp_seq = index - self.total_ike + 1;
            let packet = wire::esp_packet(self.esp_spi, esp_seq, &body);
            (
                Kind::Esp,
                wire::encapsulate(mode, Outgoing::Esp(&packet), prefix),
            )
        }
    }

    /// The header of IKE message `n` (0-based): IKEv1 aggressive mode in ctcp mode (as Cisco's
    /// VPN Client), IKEv2 IKE_SA_INIT then IKE_AUTH otherwise.
    fn ike_header(&self, role: Role, mode: Mode, n: u32) -> wire::IkeHeader {
        let responder_spi = if role == Role::Client && n == 0 {
            0
        } else {
            self.ike_responder_spi
        };
        let (version, exchange, next_payload, flags, message_id) = match mode {
            // Next payload 1: SA.
            Mode::Ctcp => (0x10, 4, 1, 0x00, 0),
            // Next payload 33: SA (IKE_SA_INIT); 46: Encrypted and Authenticated (IKE_AUTH).
            Mode::Rfc8229 | Mode::Framed => {
                let (exchange, next_payload) = if n == 0 { (34, 33) } else { (35, 46) };
                let flags = if role == Role::Client { 0x08 } else { 0x20 };
                (0x20, exchange, next_payload, flags, n)
            }
        };
        wire::IkeHeader {
            initiator_spi: self.ike_initiator_spi,
            responder_spi,
            next_payload,
            version,
            exchange,
            flags,
            message_id,
            length: 0, // set by ike_message
        }
    }
}

/// What arrived from the peer.
#[derive(Default)]
struct Receiver {
    seen: HashSet<u32>,
    datagrams: u64,
    ike: u64,
    esp: u64,
    duplicates: u64,
    modified: u64,
    malformed_segments: u64,
    bad_checksum_segments: u64,
    segments: u64,
    data_segments: u64,
    highest_index: Option<u32>,
    prefix: bool,
    fin: bool,
    reset: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The peer's ESP SPI and (index - ESP sequence number), from its first ESP datagram.
    peer_esp: Option<(u32, u32)>,
    /// The peer's IKE initiator SPI, from its first IKE datagram.
    peer_ike_spi: Option<u64>,
}

impl Receiver {
    /// Takes in one data segment's payload, sent at `seq`.
    fn deliver(&mut self, mode: Mode, seq: u32, payload: &[u8], now: Instant) {
        let parsed = wire::parse_payload(mode, payload);
        self.prefix |= parsed.prefix;
        if parsed.malformed {
            self.malformed_segments += 1;
            self.modified += 1;
        }
        for found in &parsed.datagrams {
            let Some(check) = wire::check_body(found.datagram.body()) else {
                self.modified += 1;
                continue;
            };
            let sent_at = seq.wrapping_add(found.origin as u32);
            let header_ok = match found.datagram {
                Datagram::Esp { spi, seq, .. } => {
                    let expected = (spi, check.index.wrapping_sub(seq));
                    *self.peer_esp.get_or_insert(expected) == expected
                }
                Datagram::Ike { header, .. } => {
                    *self.peer_ike_spi.get_or_insert(header.initiator_spi) == header.initiator_spi
                }
            };
            let intact = found.consistent
                && check.intact
                && check.kind == Some(found.datagram.kind())
                && check.tcp_seq == sent_at
                && header_ok;
            if !intact {
                self.modified += 1;
            }
            if !self.seen.insert(check.index) {
                self.duplicates += 1;
                continue;
            }
            self.datagrams += 1;
            match found.datagram.kind() {
                Kind::Ike => self.ike += 1,
                Kind::Esp => self.esp += 1,
            }
            self.highest_index = Some(
                self.highest_index
                    .map_or(check.index, |h| h.max(check.index)),
            );
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }
}

struct Endpoint {
    role: Role,
    mode: Mode,
    socket: RawTcp,
    local: SocketAddrV4,
    /// The peer: the client's --connect; the headend's first SYN.
    remote: Option<SocketAddrV4>,
    iss: u32,
    snd_nxt: u32,
    /// The peer's ISN, once its SYN or SYN-ACK came.
    irs: Option<u32>,
    /// The highest sequence end received so far.
    rcv_ack: u32,
    last_ack_sent: u32,
    data_since_send: u32,
    unacked_since: Option<Instant>,
    started: Instant,
    handshake_began: Option<Instant>,
    established: Option<Instant>,
    next_syn: Instant,
    syns_sent: u32,
    syns_received: u32,
    peer_mss: Option<u16>,
    peer_syn_options: Vec<u8>,
    sender: Sender,
    receiver: Receiver,
    segments_sent: u64,
    pure_acks_sent: u64,
    local_send_drops: u64,
    datagram_send_drops: u64,
    ike_sent: u32,
    esp_sent: u32,
    fin_sent: bool,
    /// Client: when the linger ends. Headend: unused.
    linger_until: Option<Instant>,
    linger: Duration,
    idle_timeout: Duration,
    last_rx: Instant,
    deadline: Instant,
}

impl Endpoint {
    fn send(
        &mut self,
        flags: u8,
        seq: u32,
        payload: &[u8],
        mss: Option<u16>,
    ) -> anyhow::Result<()> {
        let Some(remote) = self.remote else {
            return Ok(());
        };
        let header = TcpHeader {
            sport: self.local.port(),
            dport: remote.port(),
            seq,
            ack: if flags & ACK != 0 { self.rcv_ack } else { 0 },
            flags,
            window: wire::WINDOW,
            mss,
        };
        let segment = wire::build_segment(*self.local.ip(), *remote.ip(), &header, payload);
        if let Sent::DroppedLocally = self.socket.send(*remote.ip(), &segment)? {
            self.local_send_drops += 1;
            if !payload.is_empty() {
                self.datagram_send_drops += 1;
            }
        }
        self.segments_sent += 1;
        if flags & ACK != 0 {
            self.last_ack_sent = self.rcv_ack;
            self.data_since_send = 0;
            self.unacked_since = None;
        }
        Ok(())
    }

    fn send_syn(&mut self) -> anyhow::Result<()> {
        self.syns_sent += 1;
        self.send(SYN, self.iss, &[], Some(wire::MSS))
    }

    fn send_syn_ack(&mut self) -> anyhow::Result<()> {
        self.send(SYN | ACK, self.iss, &[], Some(wire::MSS))
    }

    fn send_pure_ack(&mut self) -> anyhow::Result<()> {
        self.pure_acks_sent += 1;
        self.send(ACK, self.snd_nxt, &[], None)
    }

    fn send_fin(&mut self) -> anyhow::Result<()> {
        if self.established.is_none() || std::mem::replace(&mut self.fin_sent, true) {
            return Ok(());
        }
        self.send(FIN | ACK, self.snd_nxt, &[], None)?;
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        Ok(())
    }

    fn send_datagram(&mut self) -> anyhow::Result<()> {
        let seq = self.snd_nxt;
        let (kind, payload) = self.sender.payload(self.role, self.mode, seq);
        self.send(ACK | PSH, seq, &payload, None)?;
        self.snd_nxt = seq.wrapping_add(payload.len() as u32);
        self.sender.next += 1;
        match kind {
            Kind::Ike => self.ike_sent += 1,
            Kind::Esp => self.esp_sent += 1,
        }
        Ok(())
    }

    fn establish(&mut self, now: Instant) {
        self.established.get_or_insert(now);
        self.last_rx = now;
    }

    /// Takes in one packet from the raw socket.
    fn on_packet(&mut self, packet: &[u8], now: Instant) -> anyhow::Result<()> {
        let Some(seg) = wire::parse_ipv4_tcp(packet) else {
            return Ok(());
        };
        if seg.dst != *self.local.ip() || seg.dport != self.local.port() {
            return Ok(());
        }
        let remote = SocketAddrV4::new(seg.src, seg.sport);
        match self.remote {
            Some(r) if r != remote => return Ok(()),
            Some(_) => {}
            // The headend's first client: a SYN, nothing else.
            None if seg.flags & (SYN | ACK | RST) == SYN && seg.checksum_ok => {
                self.remote = Some(remote)
            }
            None => return Ok(()),
        }
        self.receiver.segments += 1;
        self.last_rx = now;
        if !seg.checksum_ok {
            self.receiver.bad_checksum_segments += 1;
            if !seg.payload.is_empty() {
                self.receiver.modified += 1;
            }
            return Ok(());
        }
        if seg.flags & RST != 0 {
            self.receiver.reset = true;
            return Ok(());
        }
        match self.role {
            Role::Client => {
                if seg.flags & (SYN | ACK) == SYN | ACK && seg.ack == self.iss.wrapping_add(1) {
                    if self.irs.is_none() {
                        self.irs = Some(seg.seq);
                        self.rcv_ack = seg.seq.wrapping_add(1);
                        (self.peer_mss, self.peer_syn_options) = wire::tcp_options(seg.options);
                        self.establish(now);
                    }
                    // Our ACK, again if the SYN-ACK came again (a lost ACK is the one loss the
                    // handshake repairs).
                    return self.send(ACK, self.snd_nxt, &[], None);
                }
            }
            Role::Headend => {
                if seg.flags & (SYN | ACK) == SYN {
                    self.syns_received += 1;
                    if self.irs.is_none() {
                        self.irs = Some(seg.seq);
                        self.rcv_ack = seg.seq.wrapping_add(1);
                        (self.peer_mss, self.peer_syn_options) = wire::tcp_options(seg.options);
                        self.handshake_began = Some(now);
                    }
                    if self.irs == Some(seg.seq) {
                        return self.send_syn_ack();
                    }
                    return Ok(());
                }
                if self.irs.is_some()
                    && self.established.is_none()
                    && seg.flags & ACK != 0
                    && seg.ack == self.iss.wrapping_add(1)
                {
                    self.establish(now);
                }
            }
        }
        if self.irs.is_none() {
            return Ok(());
        }
        if !seg.payload.is_empty() {
            self.receiver.data_segments += 1;
            self.rcv_ack = wire::ack_after(self.rcv_ack, seg.seq, seg.payload.len() as u32);
            self.data_since_send += 1;
            if self.rcv_ack != self.last_ack_sent {
                self.unacked_since.get_or_insert(now);
            }
            self.receiver.deliver(self.mode, seg.seq, seg.payload, now);
        }
        if seg.flags & FIN != 0 {
            self.receiver.fin = true;
        }
        Ok(())
    }

    /// When this side's datagrams start: the client's at the end of the handshake, the
    /// headend's when the client's first datagram arrives.
    fn traffic_start(&self) -> Option<Instant> {
        match self.role {
            Role::Client => self.established,
            Role::Headend => self.established.and(self.receiver.first),
        }
    }

    /// Everything due at `now`; `Some` when this side is finished.
    fn step(&mut self, now: Instant) -> anyhow::Result<Option<StopReason>> {
        if self.established.is_none() {
            if self.role == Role::Client && now >= self.next_syn {
                if self.syns_sent > SYN_RETRIES {
                    return Ok(Some(StopReason::NoSynAck));
                }
                self.handshake_began.get_or_insert(now);
                self.send_syn()?;
                self.next_syn = now + SYN_INTERVAL;
            }
            return Ok(None);
        }
        if let Some(start) = self.traffic_start() {
            while !self.sender.done() && now >= self.sender.due(start, self.sender.next) {
                self.send_datagram()?;
            }
        }
        if self.data_since_send >= ACK_EVERY_SEGMENTS
            || self.unacked_since.is_some_and(|t| now >= t + ACK_DELAY)
        {
            self.send_pure_ack()?;
        }
        if !self.sender.done() {
            // A headend whose client never sent a datagram gives up like one whose client
            // went silent.
            if self.role == Role::Headend
                && self.traffic_start().is_none()
                && now >= self.last_rx + self.idle_timeout
            {
                return Ok(Some(StopReason::IdleTimeout));
            }
            return Ok(None);
        }
        Ok(match self.role {
            Role::Client => {
                let until = *self.linger_until.get_or_insert(now + self.linger);
                if now >= until {
                    self.send_fin()?;
                    Some(StopReason::Done)
                } else {
                    None
                }
            }
            Role::Headend if self.receiver.fin => Some(StopReason::Fin),
            Role::Headend if now >= self.last_rx + self.idle_timeout => {
                Some(StopReason::IdleTimeout)
            }
            Role::Headend => None,
        })
    }

    /// When `step` next has something to do.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = self.deadline.min(now + MAX_WAIT);
        if self.established.is_none() {
            if self.role == Role::Client {
                at = at.min(self.next_syn);
            }
            return at;
        }
        if self.data_since_send >= ACK_EVERY_SEGMENTS {
            return now;
        }
        if let Some(t) = self.unacked_since {
            at = at.min(t + ACK_DELAY);
        }
        if let (false, Some(start)) = (self.sender.done(), self.traffic_start()) {
            at = at.min(self.sender.due(start, self.sender.next));
        } else if !self.sender.done() {
            at = at.min(self.last_rx + self.idle_timeout);
        } else if let Some(t) = self.linger_until {
            at = at.min(t);
        } else if self.role == Role::Headend {
            at = at.min(self.last_rx + self.idle_timeout);
        }
        at
    }

    fn run(&mut self, signal: &AtomicUsize) -> anyhow::Result<StopReason> {
        let mut buf = vec![0u8; 65536];
        loop {
            if signal.load(Ordering::Relaxed) != 0 {
                self.send_fin_if_client()?;
                return Ok(StopReason::Signal);
            }
            let now = Instant::now();
            if now >= self.deadline {
                self.send_fin_if_client()?;
                return Ok(StopReason::Timeout);
            }
            if let Some(reason) = self.step(now)? {
                return Ok(reason);
            }
            let wake = self.next_wakeup(now);
            self.socket
                .wait(wake.saturating_duration_since(Instant::now()))?;
            while let Some(n) = self.socket.recv(&mut buf)? {
                self.on_packet(&buf[..n], Instant::now())?;
                if self.receiver.reset {
                    return Ok(StopReason::Reset);
                }
            }
        }
    }

    fn send_fin_if_client(&mut self) -> anyhow::Result<()> {
        if self.role == Role::Client {
            self.send_fin()?;
        }
        Ok(())
    }

    fn report(&self, traffic: &Traffic, stop_reason: StopReason) -> Report {
        let since_start = |t: Instant| t.duration_since(self.started).as_secs_f64();
        let handshake_ms = match (self.handshake_began, self.established) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64() * 1e3),
            _ => None,
        };
        let r = &self.receiver;
        Report {
            role: self.role,
            mode: self.mode,
            local: self.local.to_string(),
            remote: self.remote.map(|r| r.to_string()),
            handshake_ms,
            established_s: self.established.map(since_start),
            syns_sent: self.syns_sent,
            syns_received: self.syns_received,
            peer_mss: self.peer_mss,
            peer_syn_options: self.peer_syn_options.clone(),
            datagrams_sent: self.ike_sent + self.esp_sent,
            ike_sent: self.ike_sent,
            esp_sent: self.esp_sent,
            segments_sent: self.segments_sent,
            pure_acks_sent: self.pure_acks_sent,
            local_send_drops: self.local_send_drops,
            datagram_send_drops: self.datagram_send_drops,
            datagrams_received: r.datagrams,
            ike_received: r.ike,
            esp_received: r.esp,
            duplicates: r.duplicates,
            modified: r.modified,
            malformed_segments: r.malformed_segments,
            bad_checksum_segments: r.bad_checksum_segments,
            segments_received: r.segments,
            data_segments_received: r.data_segments,
            highest_index_received: r.highest_index,
            prefix_received: r.prefix,
            fin_received: r.fin,
            reset_received: r.reset,
            first_received_s: r.first.map(since_start),
            last_received_s: r.last.map(since_start),
            elapsed_s: since_start(Instant::now()),
            stop_reason,
            ike: traffic.ike,
            count: traffic.count,
            rate: traffic.rate,
            ike_size: traffic.ike_size,
            esp_size: traffic.esp_size,
        }
    }
}

/// The name serde gives a unit variant (`client`, `rfc8229`, `idle-timeout`).
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn summary(r: &Report) -> String {
    let handshake = r.handshake_ms.map_or("no handshake".to_string(), |ms| {
        format!("handshake {ms:.1} ms")
    });
    format!(
        "ctcp-peer {role} {mode} {local} <-> {remote}: {handshake}; sent {ds} datagrams \
         ({is} IKE, {es} ESP) in {ss} segments; received {dr} ({ir} IKE, {er} ESP), \
         {dup} duplicate, {m} modified, {sr} segments; stop: {stop} after {t:.2} s",
        role = name(&r.role),
        mode = name(&r.mode),
        local = r.local,
        remote = r.remote.as_deref().unwrap_or("-"),
        ds = r.datagrams_sent,
        is = r.ike_sent,
        es = r.esp_sent,
        ss = r.segments_sent,
        dr = r.datagrams_received,
        ir = r.ike_received,
        er = r.esp_received,
        dup = r.duplicates,
        m = r.modified,
        sr = r.segments_received,
        stop = name(&r.stop_reason),
        t = r.elapsed_s,
    )
}

fn write_report(report: &Report, path: Option<&PathBuf>) -> anyhow::Result<()> {
    let mut json = serde_json::to_string_pretty(report).context("serialising the report")?;
    json.push('\n');
    match path {
        Some(p) => std::fs::write(p, json)
            .with_context(|| format!("writing the report to {}", p.display())),
        None => std::io::stdout()
            .write_all(json.as_bytes())
            .context("writing the report to stdout"),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)
            .context("installing the SIGINT/SIGTERM handlers")?;
    }
    let mut rng = Rng::from_os()?;
    let (role, local, remote, traffic, linger, idle_timeout) = match cli.role {
        RoleArgs::Headend {
            listen,
            idle_timeout_ms,
            traffic,
        } => {
            ensure!(
                !listen.ip().is_unspecified() && listen.port() != 0,
                "--listen needs the address and port the headend answers on, e.g. 198.18.0.2:10000"
            );
            (
                Role::Headend,
                listen,
                None,
                traffic,
                Duration::ZERO,
                Duration::from_millis(idle_timeout_ms),
            )
        }
        RoleArgs::Client {
            connect,
            local,
            sport,
            linger_ms,
            traffic,
        } => {
            ensure!(
                !connect.ip().is_unspecified() && connect.port() != 0,
                "--connect needs the headend's address and port, e.g. 198.18.0.2:10000"
            );
            let ip = match local {
                Some(ip) => ip,
                None => route_source(connect)?,
            };
            let port = sport.unwrap_or_else(|| 32768 + (rng.next_u32() % (61000 - 32768)) as u16);
            ensure!(port != 0, "--sport must not be 0");
            (
                Role::Client,
                SocketAddrV4::new(ip, port),
                Some(connect),
                traffic,
                Duration::from_millis(linger_ms),
                Duration::ZERO,
            )
        }
    };
    traffic.validate()?;

    let socket = RawTcp::open(*local.ip())?;
    let rule = match remote {
        Some(r) => format!(
            "ip saddr {} ip daddr {} tcp sport {} tcp dport {}",
            local.ip(),
            r.ip(),
            local.port(),
            r.port()
        ),
        None => format!("ip saddr {} tcp sport {}", local.ip(), local.port()),
    };
    let mut filter = RstFilter::install(&rule)?;

    let iss = rng.next_u32();
    let mut endpoint = Endpoint {
        role,
        mode: traffic.mode,
        socket,
        local,
        remote,
        iss,
        snd_nxt: iss.wrapping_add(1),
        irs: None,
        rcv_ack: 0,
        last_ack_sent: 0,
        data_since_send: 0,
        unacked_since: None,
        started,
        handshake_began: None,
        established: None,
        next_syn: Instant::now(),
        syns_sent: 0,
        syns_received: 0,
        peer_mss: None,
        peer_syn_options: Vec::new(),
        sender: Sender {
            total_ike: traffic.ike,
            total: traffic.ike.saturating_add(traffic.count),
            next: 0,
            rate: traffic.rate,
            esp_spi: rng.spi(),
            ike_initiator_spi: rng.nonzero_u64(),
            ike_responder_spi: rng.nonzero_u64(),
            ike_size: traffic.ike_size,
            esp_size: traffic.esp_size,
            prefix_pending: role == Role::Client && traffic.mode == Mode::Rfc8229,
        },
        receiver: Receiver::default(),
        segments_sent: 0,
        pure_acks_sent: 0,
        local_send_drops: 0,
        datagram_send_drops: 0,
        ike_sent: 0,
        esp_sent: 0,
        fin_sent: false,
        linger_until: None,
        linger,
        idle_timeout,
        last_rx: started,
        deadline: started + Duration::from_secs_f64(traffic.timeout),
    };
    let outcome = endpoint.run(&signal);
    filter.remove();
    let stop_reason = outcome?;

    let report = endpoint.report(&traffic, stop_reason);
    write_report(&report, traffic.report.as_ref())?;
    eprintln!("{}", summary(&report));
    Ok(match stop_reason {
        StopReason::Signal => {
            ExitCode::from(128u8.saturating_add(signal.load(Ordering::Relaxed) as u8))
        }
        StopReason::NoSynAck => {
            eprintln!(
                "ctcp-peer: error: no SYN-ACK from {} after {} SYNs {} s apart: is the headend \
                 running, and does the path let TCP port {} through?",
                remote.map_or("-".into(), |r| r.to_string()),
                SYN_RETRIES + 1,
                SYN_INTERVAL.as_secs(),
                remote.map_or(0, |r| r.port())
            );
            ExitCode::FAILURE
        }
        StopReason::Reset if endpoint.established.is_none() => {
            eprintln!(
                "ctcp-peer: error: connection refused: {} answered with a RST before the \
                 handshake completed (is a headend listening there?)",
                endpoint.remote.map_or("the peer".into(), |r| r.to_string())
            );
            ExitCode::FAILURE
        }
        _ if endpoint.established.is_none() => {
            eprintln!(
                "ctcp-peer: error: no connection within --timeout {} s{}",
                traffic.timeout,
                if role == Role::Headend {
                    format!(" (no client's SYN reached {local}, or its handshake never completed)")
                } else {
                    String::new()
                }
            );
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}

/// The source address the kernel would use towards `remote`.
fn route_source(remote: SocketAddrV4) -> anyhow::Result<Ipv4Addr> {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(remote).map(|()| s))
        .and_then(|s| s.local_addr())
        .with_context(|| format!("no route to {remote}: give --local"))?;
    match probe.ip() {
        std::net::IpAddr::V4(ip) => Ok(ip),
        std::net::IpAddr::V6(ip) => bail!("the route to {remote} uses {ip}: give --local"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ctcp-peer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(mode: Mode, role: Role) -> Sender {
        Sender {
            total_ike: 2,
            total: 5,
            next: 0,
            rate: 500.0,
            esp_spi: 0x0000_abcd,
            ike_initiator_spi: 0x0102_0304_0506_0708,
            ike_responder_spi: 0x1112_1314_1516_1718,
            ike_size: 300,
            esp_size: 200,
            prefix_pending: role == Role::Client && mode == Mode::Rfc8229,
        }
    }

    /// Every datagram a sender makes, with the sequence number it went out at.
    fn stream(mode: Mode, role: Role) -> Vec<(u32, Kind, Vec<u8>)> {
        let mut s = sender(mode, role);
        let mut seq = 1000u32;
        let mut out = Vec::new();
        while !s.done() {
            let (kind, payload) = s.payload(role, mode, seq);
            s.next += 1;
            let len = payload.len() as u32;
            out.push((seq, kind, payload));
            seq = seq.wrapping_add(len);
        }
        out
    }

    #[test]
    fn each_mode_sends_ike_then_esp_and_the_peer_takes_them_all_intact() {
        for mode in [Mode::Ctcp, Mode::Rfc8229, Mode::Framed] {
            for role in [Role::Client, Role::Headend] {
                let segments = stream(mode, role);
                let kinds: Vec<Kind> = segments.iter().map(|s| s.1).collect();
                assert_eq!(
                    kinds,
                    [Kind::Ike, Kind::Ike, Kind::Esp, Kind::Esp, Kind::Esp]
                );
                let now = Instant::now();
                let mut r = Receiver::default();
                for (seq, _, payload) in &segments {
                    r.deliver(mode, *seq, payload, now);
                }
                assert_eq!((r.datagrams, r.ike, r.esp), (5, 2, 3), "{mode:?} {role:?}");
                assert_eq!((r.modified, r.duplicates, r.malformed_segments), (0, 0, 0));
                assert_eq!(r.prefix, mode == Mode::Rfc8229 && role == Role::Client);
                assert_eq!(r.highest_index, Some(4));
            }
        }
    }

    #[test]
    fn ike_headers_follow_the_mode_and_role() {
        let header_of = |mode, role, n: usize| {
            let segments = stream(mode, role);
            let parsed = wire::parse_payload(mode, &segments[n].2);
            match parsed.datagrams[0].datagram {
                Datagram::Ike { header, body } => {
                    assert_eq!(body.len(), 272);
                    assert_eq!(header.length, 300);
                    header
                }
                other => panic!("{other:?}"),
            }
        };
        let first = header_of(Mode::Ctcp, Role::Client, 0);
        assert_eq!(
            (
                first.version,
                first.exchange,
                first.flags,
                first.next_payload
            ),
            (0x10, 4, 0, 1)
        );
        assert_eq!((first.responder_spi, first.message_id), (0, 0));
        assert_eq!(
            header_of(Mode::Ctcp, Role::Client, 1).responder_spi,
            0x1112_1314_1516_1718
        );
        assert_ne!(header_of(Mode::Ctcp, Role::Headend, 0).responder_spi, 0);

        let init = header_of(Mode::Rfc8229, Role::Client, 0);
        assert_eq!((init.version, init.exchange, init.flags), (0x20, 34, 0x08));
        assert_eq!(
            (init.next_payload, init.responder_spi, init.message_id),
            (33, 0, 0)
        );
        let auth = header_of(Mode::Framed, Role::Headend, 1);
        assert_eq!((auth.version, auth.exchange, auth.flags), (0x20, 35, 0x20));
        assert_eq!((auth.next_payload, auth.message_id), (46, 1));
    }

    #[test]
    fn esp_sequence_numbers_count_from_one() {
        for mode in [Mode::Ctcp, Mode::Framed] {
            let seqs: Vec<(u32, u32)> = stream(mode, Role::Client)
                .iter()
                .filter_map(
                    |(_, _, p)| match wire::parse_payload(mode, p).datagrams[0].datagram {
                        Datagram::Esp { spi, seq, .. } => Some((spi, seq)),
                        Datagram::Ike { .. } => None,
                    },
                )
                .collect();
            assert_eq!(seqs, [(0xabcd, 1), (0xabcd, 2), (0xabcd, 3)]);
        }
    }

    #[test]
    fn receiver_counts_gaps_duplicates_and_modified_datagrams() {
        let mode = Mode::Ctcp;
        let segments = stream(mode, Role::Client);
        let now = Instant::now();
        let mut r = Receiver::default();
        // The second one lost, the fourth one twice.
        for i in [0, 2, 3, 3, 4] {
            let (seq, _, payload) = &segments[i];
            r.deliver(mode, *seq, payload, now);
        }
        assert_eq!(
            (r.datagrams, r.ike, r.esp, r.duplicates, r.modified),
            (4, 1, 3, 1, 0)
        );

        // Carried at another sequence number than it was sent at: modified, still received.
        let mut r = Receiver::default();
        let (seq, _, payload) = &segments[2];
        r.deliver(mode, seq.wrapping_add(1), payload, now);
        assert_eq!((r.datagrams, r.modified), (1, 1));

        // A changed payload byte, a changed ESP SPI, a cut payload.
        let mut r = Receiver::default();
        let (seq, _, payload) = &segments[2];
        r.deliver(mode, *seq, payload, now);
        let mut bad = payload.clone();
        bad[100] ^= 1;
        r.deliver(mode, *seq, &bad, now);
        let (seq3, _, payload3) = &segments[3];
        let mut other_spi = payload3.clone();
        other_spi[3] ^= 1;
        r.deliver(mode, *seq3, &other_spi, now);
        r.deliver(mode, *seq3, &payload3[..10], now);
        assert_eq!(
            (r.datagrams, r.duplicates, r.modified, r.malformed_segments),
            (2, 1, 3, 1)
        );
    }
}
