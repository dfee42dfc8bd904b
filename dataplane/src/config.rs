//! Start-up configuration: a TOML file, overridden by command-line flags.
//! Every error names the key that is wrong and what would be right, on one
//! line, because this is what an operator sees when the service won't start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use tollgate_core::pipeline::FrameAction;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("config {file}: {location}{message}")]
    Syntax {
        file: PathBuf,
        location: String,
        message: String,
    },
    #[error("config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// Extra EAL arguments, passed through as they are.
    pub args: Vec<String>,
    /// Run without hugepages (slower; for labs and machines without them).
    pub no_huge: bool,
    /// Memory for the EAL in MiB (`-m`); 0 lets DPDK decide (hugepages only).
    pub memory_mb: u32,
    /// Keeps several DPDK processes on one host apart (`--file-prefix`).
    pub file_prefix: String,
    /// DPDK's own log level (`--log-level`), e.g. "notice", "warning".
    pub log_level: String,
    /// Let `dpdk-dumpcap` capture on the ports while tollgate runs (DPDK's packet capture
    /// framework; frames are copied only while a capture is active). Needs hugepages.
    pub packet_capture: bool,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            args: Vec::new(),
            no_huge: false,
            memory_mb: 0,
            file_prefix: "tollgate".into(),
            log_level: "notice".into(),
            packet_capture: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortsConfig {
    /// The port facing the protected side (clients): a PCI address or a
    /// virtual device string such as `net_af_packet0,iface=eth1,qpairs=2`.
    pub inside: String,
    /// The port facing the far side (servers).
    pub outside: String,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Packet buffers in the pool shared by both ports.
    pub mbufs: u32,
    /// Per-worker mbuf cache.
    pub mbuf_cache: u32,
    /// Ask NICs for symmetric RSS; off forces software steering.
    pub rss: bool,
    /// How many times a worker offers the driver frames it refused, before
    /// dropping them (counted as tx_full).
    pub tx_retries: u32,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            inside: String::new(),
            outside: String::new(),
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mbufs: 16383,
            mbuf_cache: 256,
            rss: true,
            tx_retries: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// One worker per listed CPU core, pinned there.
    pub cores: Vec<usize>,
    /// 0 polls without pause (the DPDK way, for dedicated cores). Otherwise
    /// a worker whose last 1024 polls in a row found nothing sleeps this many
    /// microseconds after each further empty poll, until traffic comes back,
    /// which leaves CPU to other processes on shared or small machines at the
    /// cost of latency.
    pub idle_sleep_us: u64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            cores: vec![0],
            idle_sleep_us: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReassemblySection {
    /// Reassemble the IP fragments of TCP datagrams; off, they pass as before (and the proxy
    /// cannot take fragmented segments).
    pub enabled: bool,
    /// How long a datagram's fragments wait for the rest. A middlebox's timeout, not a host's
    /// (Linux: 30 s): a fragment is a few milliseconds behind its datagram's others unless it
    /// was lost, and the sender of a lost one retransmits the whole segment anyway.
    pub timeout_ms: u64,
    /// Datagrams in progress at once, per worker.
    pub max_datagrams: usize,
    /// Frame bytes held in fragments, per worker.
    pub max_held_kib: usize,
    /// Longest datagram reassembled, IP header included.
    pub max_datagram_len: usize,
    /// Fragments one datagram may arrive in.
    pub max_fragments: usize,
    /// Buffers for reassembled datagrams longer than a packet buffer (2048 bytes), each of
    /// `max_datagram_len`, shared by the workers; the proxy holds one until the far end
    /// acknowledges its bytes. 0: none, such datagrams are dropped as too big.
    pub large_buffers: u32,
}

impl Default for ReassemblySection {
    fn default() -> Self {
        let d = tollgate_core::ip_reassembly::ReassemblyConfig::default();
        ReassemblySection {
            enabled: true,
            timeout_ms: d.timeout_ms,
            max_datagrams: d.max_datagrams,
            max_held_kib: d.max_held_bytes / 1024,
            max_datagram_len: d.max_datagram_len,
            max_fragments: d.max_fragments,
            large_buffers: 63,
        }
    }
}

impl ReassemblySection {
    pub fn table_config(&self) -> tollgate_core::ip_reassembly::ReassemblyConfig {
        tollgate_core::ip_reassembly::ReassemblyConfig {
            timeout_ms: self.timeout_ms,
            max_datagrams: self.max_datagrams,
            max_held_bytes: self.max_held_kib * 1024,
            max_datagram_len: self.max_datagram_len,
            max_fragments: self.max_fragments,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value, range) in [
            (
                "reassembly.timeout_ms",
                self.timeout_ms as usize,
                1..=60_000,
            ),
            ("reassembly.max_datagrams", self.max_datagrams, 1..=1 << 20),
            ("reassembly.max_held_kib", self.max_held_kib, 64..=1 << 20),
            (
                "reassembly.max_datagram_len",
                self.max_datagram_len,
                576..=65_535,
            ),
            ("reassembly.max_fragments", self.max_fragments, 2..=8192),
            (
                "reassembly.large_buffers",
                self.large_buffers as usize,
                0..=65_535,
            ),
        ] {
            if !range.contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Flows tracked at once, over all workers (each worker gets its share).
    pub capacity: usize,
    /// A new flow when the table is full: forward it untracked, or drop it.
    pub on_full: FrameAction,
    pub tcp_embryonic_timeout_secs: u64,
    /// A TCP flow picked up mid-stream keeps at most this until the other side answers.
    pub tcp_unreplied_timeout_secs: u64,
    pub tcp_established_timeout_secs: u64,
    pub tcp_closing_timeout_secs: u64,
    pub tcp_closed_timeout_secs: u64,
    pub udp_timeout_secs: u64,
    pub other_timeout_secs: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            capacity: 1 << 20,
            on_full: FrameAction::Forward,
            tcp_embryonic_timeout_secs: 30,
            tcp_unreplied_timeout_secs: 5,
            tcp_established_timeout_secs: 3600,
            tcp_closing_timeout_secs: 120,
            tcp_closed_timeout_secs: 10,
            udp_timeout_secs: 120,
            other_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MalformedConfig {
    /// Frames that fail parsing: forward them unchanged (a bump in the wire
    /// should not be the one to break a network) or drop them. Counted by
    /// reason either way.
    pub action: FrameAction,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Write a JSON counters snapshot here every `interval_secs` and at exit.
    pub file: Option<PathBuf>,
    pub interval_secs: u64,
    /// Serve the counters in Prometheus' text format at http://ADDR/metrics, refreshed every
    /// `interval_secs` ("IP:PORT"; empty: off).
    pub prometheus_listen: String,
}

impl StatsConfig {
    /// The Prometheus endpoint's address, if one is configured (`validate` checked it parses).
    pub fn prometheus_addr(&self) -> Option<std::net::SocketAddr> {
        (!self.prometheus_listen.is_empty())
            .then(|| self.prometheus_listen.parse().ok())
            .flatten()
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            file: None,
            interval_secs: 1,
            prometheus_listen: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// What flows matching no rule get, per protocol. `proxy` is the full
    /// TCP proxy (for other protocols, tracked pass-through); `bypass` is
    /// stateless pass-through.
    pub default_tcp: tollgate_control::policy::Action,
    pub default_udp: tollgate_control::policy::Action,
    pub default_other: tollgate_control::policy::Action,
    /// The policy is saved here on every change and restored at start-up.
    /// `""` (like `--state-file ""`): policies live only as long as the process.
    #[serde(deserialize_with = "empty_path_is_none")]
    pub state_file: Option<PathBuf>,
}

/// A path where `""` means none, as for `control.socket`.
fn empty_path_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

impl Default for PolicyConfig {
    fn default() -> Self {
        use tollgate_control::policy::Action;
        PolicyConfig {
            default_tcp: Action::Proxy,
            default_udp: Action::Bypass,
            default_other: Action::Bypass,
            state_file: Some(PathBuf::from("/var/lib/tollgate/policy.json")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The control socket (`tollgatectl --socket`); empty disables it.
    pub socket: PathBuf,
    /// Members of this group may use the socket besides root; the socket is
    /// created root:GROUP, mode 0660. Empty: root only.
    pub group: String,
    /// Connections open at once (one thread each). When all are taken, root closes the one idle
    /// longest to get in; one with a request in progress is never closed for it.
    pub max_clients: usize,
    /// Connections one user other than root may hold at once.
    pub max_clients_per_uid: usize,
    /// Of `max_clients`, the ones only root (and tollgate's own user) may take, so that the
    /// control group's requests in progress cannot fill the socket either.
    pub reserved_for_root: usize,
    /// A request must arrive whole (its line and newline) within this many seconds of its first
    /// byte, else the connection is closed.
    pub request_timeout_secs: u64,
    /// A connection that sends no request for this many seconds is closed. A request being
    /// answered does not count as idle.
    pub idle_timeout_secs: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        let limits = tollgate_control::server::ServerLimits::default();
        ControlConfig {
            socket: PathBuf::from("/run/tollgate/control.sock"),
            group: String::new(),
            max_clients: limits.max_clients,
            max_clients_per_uid: limits.max_clients_per_uid,
            reserved_for_root: limits.reserved_for_root,
            request_timeout_secs: limits.request_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
        }
    }
}

impl ControlConfig {
    /// The control server's limits this section sets (`validate` checked them).
    pub fn limits(&self) -> tollgate_control::server::ServerLimits {
        tollgate_control::server::ServerLimits {
            max_clients: self.max_clients,
            max_clients_per_uid: self.max_clients_per_uid,
            reserved_for_root: self.reserved_for_root,
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            ..tollgate_control::server::ServerLimits::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Written once the ports forward; removed at exit.
    pub pid_file: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long proxied connections get to finish while new flows pass
    /// through unproxied and bypassed ones keep forwarding; 0 stops at once. A second signal
    /// stops at once too.
    pub drain_timeout_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            pid_file: None,
            drain_timeout_secs: 30,
        }
    }
}

/// How much tollgate logs: each level includes the ones above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(format!(
                "{other:?} is not a log level: use error, warn, info, debug or trace"
            )),
        }
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tollgate: [warning: ]message key=value ...`, one event per line; the journal or the
    /// file it goes to adds the time.
    #[default]
    Text,
    /// One JSON object per line with time, level and every field, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format: use text or json")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

/// The TCP proxy (issue 4): per-flow buffering, admission and the exception actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Bytes buffered per flow and direction (the far leg's send queue); the near leg's
    /// advertised window closes when it is full.
    pub buffer_kib: usize,
    /// Out-of-order segments held per flow and direction above a hole.
    pub out_of_order_segments: usize,
    /// How long segments may wait above a hole before they are dropped (the sender sends them
    /// again once the hole is filled), like the ASA tcp-map `queue-limit ... timeout`; 0 keeps
    /// them until the hole is filled. Keep it above the stall detection (1 s and 3 RTOs), so
    /// that `on-stall bypass` still finds the data to hand over.
    pub out_of_order_timeout_ms: u64,
    /// Proxied flows at once, over all workers (each gets its share); TIME-WAIT included.
    pub max_flows: usize,
    /// Handshakes in progress per worker past which SYNs are answered with SYN cookies.
    pub max_embryonic: usize,
    /// Handshakes in progress from one client address (per worker) past which its SYNs are
    /// answered with SYN cookies, until it has sent none for 10 s.
    pub max_embryonic_per_source: usize,
    /// A TCP flow under proxy policy whose first packet is not a SYN: `bypass` forwards it
    /// unproxied, `drop` drops it (drop reason `tcp_not_syn`) and keeps no entry for it.
    pub on_midstream: tollgate_core::proxy::MidstreamAction,
    /// Payload bytes all proxied flows may hold together, in MiB (each worker gets its share).
    pub memory_budget_mib: usize,
    /// What a new flow gets when the proxy cannot take it, per condition: `bypass` forwards
    /// it unproxied for its whole life, `reset` refuses it with a RST. At `max_flows`...
    pub on_flow_limit: tollgate_core::proxy::BudgetAction,
    /// ...at `memory_budget_mib`...
    pub on_memory_budget: tollgate_core::proxy::BudgetAction,
    /// ...and when fewer than an eighth of the packet buffers are free.
    pub on_buffer_shortage: tollgate_core::proxy::BudgetAction,
    /// What a stall does when the flow's rule has no `on-stall`: wait, reset or bypass.
    pub on_stall: tollgate_control::policy::StallAction,
    /// Server ports whose proxied flows are watched for IPsec over TCP (handed over to
    /// pass-through when their first payload shows it) unless their rule says `detect`.
    pub detect_ipsec_over_tcp_ports: Vec<u16>,
    /// The largest MSS either leg offers over IPv4 (the link MTU less 40); over IPv6, 20
    /// less. A SYN cookie's SYN-ACK, sent before the server is asked, offers it.
    pub mss: u16,
    /// ECN (RFC 3168) on each leg whose endpoint offers it, each leg reacting to congestion
    /// marks on its own path; false strips ECE and CWR from SYNs, so neither leg uses it.
    pub ecn: bool,
    /// Byte patterns that reset a proxied connection when its stream carries them.
    #[serde(rename = "signature")]
    pub signatures: Vec<tollgate_core::tcp::inspect::SignatureConfig>,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            buffer_kib: 256,
            out_of_order_segments: 256,
            out_of_order_timeout_ms: 10_000,
            max_flows: 262_144,
            max_embryonic: 1024,
            // A browser opens a few connections per server and a few dozen in all; 64 at once
            // from one address is past what a host needs, and a NAT's users still connect
            // past it, through their cookies.
            max_embryonic_per_source: 64,
            on_midstream: tollgate_core::proxy::MidstreamAction::Bypass,
            memory_budget_mib: 1024,
            on_flow_limit: tollgate_core::proxy::BudgetAction::Bypass,
            on_memory_budget: tollgate_core::proxy::BudgetAction::Bypass,
            on_buffer_shortage: tollgate_core::proxy::BudgetAction::Bypass,
            on_stall: tollgate_control::policy::StallAction::Wait,
            // Cisco's IPsec over TCP default.
            detect_ipsec_over_tcp_ports: vec![10_000],
            mss: 1460,
            ecn: true,
            signatures: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub eal: EalConfig,
    pub ports: PortsConfig,
    pub workers: WorkersConfig,
    pub flows: FlowsConfig,
    pub malformed: MalformedConfig,
    pub stats: StatsConfig,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    pub policy: PolicyConfig,
    pub control: ControlConfig,
    pub proxy: ProxySection,
    pub reassembly: ReassemblySection,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Syntax {
                location, message, ..
            } => ConfigError::Syntax {
                file: path.to_owned(),
                location,
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = match inner.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    if path.is_empty() || path == "." {
                        format!("line {line}: ")
                    } else {
                        format!("line {line}: {path}: ")
                    }
                }
                None if !path.is_empty() && path != "." => format!("{path}: "),
                None => String::new(),
            };
            ConfigError::Syntax {
                file: PathBuf::new(),
                location,
                message: inner.message().replace('\n', " ").trim().to_owned(),
            }
        })
    }

    /// Checks what types alone cannot. Run after flags are applied.
    pub fn validate(&self, available_cores: &[usize]) -> Result<(), ConfigError> {
        if self.ports.inside.trim().is_empty() {
            return Err(invalid("ports.inside", "missing: name the inside port's device (PCI address or vdev string), or pass --inside"));
        }
        if self.ports.outside.trim().is_empty() {
            return Err(invalid("ports.outside", "missing: name the outside port's device (PCI address or vdev string), or pass --outside"));
        }
        if device_name(&self.ports.inside) == device_name(&self.ports.outside) {
            return Err(invalid(
                "ports.outside",
                format!(
                    "is the same device as ports.inside ({})",
                    device_name(&self.ports.inside)
                ),
            ));
        }
        for (key, n) in [
            ("ports.rx_descriptors", self.ports.rx_descriptors),
            ("ports.tx_descriptors", self.ports.tx_descriptors),
        ] {
            if !(32..=32768).contains(&n) || !n.is_power_of_two() {
                return Err(invalid(
                    key,
                    format!("{n} is not a power of two between 32 and 32768"),
                ));
            }
        }
        let cores = &self.workers.cores;
        if cores.is_empty() {
            return Err(invalid(
                "workers.cores",
                "empty: list at least one CPU core for a worker",
            ));
        }
        for (i, c) in cores.iter().enumerate() {
            if cores[..i].contains(c) {
                return Err(invalid(
                    "workers.cores",
                    format!("core {c} is listed twice"),
                ));
            }
            if !available_cores.is_empty() && !available_cores.contains(c) {
                return Err(invalid("workers.cores", format!("core {c} is not available to this process (available: {available_cores:?})")));
            }
        }
        if cores.len() > 64 {
            return Err(invalid(
                "workers.cores",
                format!("{} workers; at most 64 are supported", cores.len()),
            ));
        }
        let workers = cores.len() as u64;
        // Every RX descriptor of every queue holds an mbuf, TX rings hold
        // mbufs until the driver recycles them, and each worker keeps a cache
        // and bursts in flight.
        let needed =
            2 * workers * (self.ports.rx_descriptors as u64 + self.ports.tx_descriptors as u64)
                + workers * (self.ports.mbuf_cache as u64 + 8 * dpdk::BURST_SIZE as u64);
        if (self.ports.mbufs as u64) < needed {
            return Err(invalid("ports.mbufs", format!("{} is too few for {workers} worker(s) with {} RX and {} TX descriptors per queue: use at least {needed}", self.ports.mbufs, self.ports.rx_descriptors, self.ports.tx_descriptors)));
        }
        if self.ports.mbuf_cache > 512 {
            return Err(invalid(
                "ports.mbuf_cache",
                format!("{} is above DPDK's limit of 512", self.ports.mbuf_cache),
            ));
        }
        if self.flows.capacity < cores.len() {
            return Err(invalid(
                "flows.capacity",
                format!("{} is below one flow per worker", self.flows.capacity),
            ));
        }
        if self.flows.capacity > 1 << 28 {
            return Err(invalid(
                "flows.capacity",
                format!("{} is above the supported 268435456", self.flows.capacity),
            ));
        }
        for (key, secs) in [
            (
                "flows.tcp_embryonic_timeout_secs",
                self.flows.tcp_embryonic_timeout_secs,
            ),
            (
                "flows.tcp_unreplied_timeout_secs",
                self.flows.tcp_unreplied_timeout_secs,
            ),
            (
                "flows.tcp_established_timeout_secs",
                self.flows.tcp_established_timeout_secs,
            ),
            (
                "flows.tcp_closing_timeout_secs",
                self.flows.tcp_closing_timeout_secs,
            ),
            (
                "flows.tcp_closed_timeout_secs",
                self.flows.tcp_closed_timeout_secs,
            ),
            ("flows.udp_timeout_secs", self.flows.udp_timeout_secs),
            ("flows.other_timeout_secs", self.flows.other_timeout_secs),
        ] {
            if secs == 0 || secs > 7 * 24 * 3600 {
                return Err(invalid(
                    key,
                    format!("{secs} is outside 1..=604800 seconds"),
                ));
            }
        }
        self.reassembly.validate()?;
        let p = &self.proxy;
        if !(4..=65_536).contains(&p.buffer_kib) {
            return Err(invalid(
                "proxy.buffer_kib",
                format!("{} is outside 4..=65536 KiB", p.buffer_kib),
            ));
        }
        if !(1..=4096).contains(&p.out_of_order_segments) {
            return Err(invalid(
                "proxy.out_of_order_segments",
                format!("{} is outside 1..=4096", p.out_of_order_segments),
            ));
        }
        if p.out_of_order_timeout_ms > 600_000 {
            return Err(invalid(
                "proxy.out_of_order_timeout_ms",
                format!(
                    "{} is above 600000 (10 minutes); 0 keeps segments until the hole is filled",
                    p.out_of_order_timeout_ms
                ),
            ));
        }
        if p.max_flows < cores.len() || p.max_flows > 1 << 24 {
            return Err(invalid(
                "proxy.max_flows",
                format!(
                    "{} is outside {}..=16777216 (at least one per worker)",
                    p.max_flows,
                    cores.len()
                ),
            ));
        }
        if p.max_embryonic == 0 {
            return Err(invalid(
                "proxy.max_embryonic",
                "0 would answer every SYN with a cookie: use at least 1",
            ));
        }
        if !(1..=65_535).contains(&p.max_embryonic_per_source) {
            return Err(invalid(
                "proxy.max_embryonic_per_source",
                format!(
                    "{} is outside 1..=65535 (0 would answer every SYN with a cookie)",
                    p.max_embryonic_per_source
                ),
            ));
        }
        if p.memory_budget_mib == 0 {
            return Err(invalid(
                "proxy.memory_budget_mib",
                "0 would refuse every proxied flow: use at least 1",
            ));
        }
        if !(536..=9000).contains(&p.mss) {
            return Err(invalid(
                "proxy.mss",
                format!("{} is outside 536..=9000", p.mss),
            ));
        }
        if !self.stats.prometheus_listen.is_empty()
            && self
                .stats
                .prometheus_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "stats.prometheus_listen",
                format!(
                    "{:?} is not IP:PORT (e.g. \"127.0.0.1:9101\" or \"[::1]:9101\"); \"\" turns it off",
                    self.stats.prometheus_listen
                ),
            ));
        }
        if p.detect_ipsec_over_tcp_ports.contains(&0) {
            return Err(invalid(
                "proxy.detect_ipsec_over_tcp_ports",
                "0 is not a TCP port a server listens on",
            ));
        }
        if let Err(e) = tollgate_core::tcp::inspect::SignatureInspector::new(&p.signatures) {
            return Err(invalid("proxy.signature", e.to_string()));
        }
        if self.workers.idle_sleep_us > 1_000_000 {
            return Err(invalid(
                "workers.idle_sleep_us",
                format!("{} is above one second", self.workers.idle_sleep_us),
            ));
        }
        if self.stats.interval_secs == 0 {
            return Err(invalid("stats.interval_secs", "must be at least 1"));
        }
        if !self.control.group.is_empty()
            && !self
                .control
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "control.group",
                format!("{:?} is not a group name", self.control.group),
            ));
        }
        let c = &self.control;
        if !(1..=1024).contains(&c.max_clients) {
            return Err(invalid(
                "control.max_clients",
                format!(
                    "{} is outside 1..=1024 (each connection is served by a thread)",
                    c.max_clients
                ),
            ));
        }
        if c.reserved_for_root >= c.max_clients {
            return Err(invalid(
                "control.reserved_for_root",
                format!(
                    "{} leaves none of control.max_clients {} to the control group: use fewer",
                    c.reserved_for_root, c.max_clients
                ),
            ));
        }
        if c.max_clients_per_uid == 0 || c.max_clients_per_uid > c.max_clients {
            return Err(invalid(
                "control.max_clients_per_uid",
                format!(
                    "{} is outside 1..={} (control.max_clients)",
                    c.max_clients_per_uid, c.max_clients
                ),
            ));
        }
        if !(1..=300).contains(&c.request_timeout_secs) {
            return Err(invalid(
                "control.request_timeout_secs",
                format!("{} is outside 1..=300 seconds", c.request_timeout_secs),
            ));
        }
        if !(1..=86_400).contains(&c.idle_timeout_secs) {
            return Err(invalid(
                "control.idle_timeout_secs",
                format!("{} is outside 1..=86400 seconds", c.idle_timeout_secs),
            ));
        }
        if let Some(f) = &self.policy.state_file {
            if f.as_os_str().is_empty() || f.file_name().is_none() {
                return Err(invalid(
                    "policy.state_file",
                    format!("{} is not a file path", f.display()),
                ));
            }
        }
        if self.eal.no_huge && self.eal.memory_mb == 0 {
            return Err(invalid("eal.memory_mb", "set it (e.g. 512) when eal.no_huge is on: without hugepages DPDK needs an explicit size"));
        }
        if self.eal.file_prefix.is_empty() || self.eal.file_prefix.contains('/') {
            return Err(invalid(
                "eal.file_prefix",
                format!(
                    "{:?} must be a non-empty name without '/'",
                    self.eal.file_prefix
                ),
            ));
        }
        Ok(())
    }

    /// Checks what the configuration names on this host, which [`Config::validate`] cannot
    /// know: that each port's PCI device or network interface exists, and the control group.
    /// DPDK would otherwise fail on them only after taking the other port, with a message that
    /// does not say which interface is missing. `sys` is sysfs' root (`/sys`).
    pub fn check_host(&self, sys: &Path) -> Result<(), ConfigError> {
        for (key, dev) in [
            ("ports.inside", &self.ports.inside),
            ("ports.outside", &self.ports.outside),
        ] {
            let name = device_name(dev);
            if is_pci_address(name) {
                let address = full_pci_address(name);
                let path = sys.join("bus/pci/devices").join(&address);
                if !path.exists() {
                    return Err(invalid(
                        key,
                        format!(
                            "no PCI device {address} on this host ({} does not exist): \
                             `scripts/host status` or `lspci -D` lists the NICs and their addresses",
                            path.display()
                        ),
                    ));
                }
                continue;
            }
            for (arg, iface) in interfaces_of(dev) {
                let path = sys.join("class/net").join(iface);
                if iface.is_empty() || iface.contains('/') || !path.exists() {
                    return Err(invalid(
                        key,
                        format!(
                            "{name}: no network interface {iface:?} ({arg}={iface}; {} does not \
                             exist): create it, or name one `ip link show` lists",
                            path.display()
                        ),
                    ));
                }
            }
        }
        if !self.control.socket.as_os_str().is_empty() && !self.control.group.is_empty() {
            if let Err(e) = tollgate_control::server::lookup_group(&self.control.group) {
                return Err(invalid("control.group", e.to_string()));
            }
        }
        Ok(())
    }

    /// What flows matching no rule get, per protocol.
    pub fn policy_defaults(&self) -> tollgate_control::protocol::PolicyDefaults {
        tollgate_control::protocol::PolicyDefaults {
            tcp: self.policy.default_tcp,
            udp: self.policy.default_udp,
            other: self.policy.default_other,
        }
    }

    /// The EAL argument list this configuration implies.
    pub fn eal_args(&self, program: &str) -> Vec<String> {
        let mut args = vec![program.to_owned()];
        // The main lcore (0) is this process's main thread, the control plane, free to run on
        // any worker core until start-up moves it; worker i runs on lcore i + 1, an EAL thread
        // pinned to its core. EAL lcores, unlike threads registered with DPDK, keep DPDK's
        // multi-process support on (dpdk-dumpcap attaches as a secondary process).
        let cores = &self.workers.cores;
        let all = cores
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut lcores = vec![format!("0@({all})")];
        lcores.extend(
            cores
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}@{c}", i + 1)),
        );
        args.push("--lcores".into());
        args.push(lcores.join(","));
        args.push("--main-lcore".into());
        args.push("0".into());
        args.push("--file-prefix".into());
        args.push(self.eal.file_prefix.clone());
        args.push("--log-level".into());
        args.push(self.eal.log_level.clone());
        if self.eal.no_huge {
            args.push("--no-huge".into());
        }
        if self.eal.memory_mb > 0 {
            args.push("-m".into());
            args.push(self.eal.memory_mb.to_string());
        }
        let mut pci = false;
        for dev in [&self.ports.inside, &self.ports.outside] {
            if is_pci_address(device_name(dev)) {
                pci = true;
                args.push("-a".into());
            } else {
                args.push("--vdev".into());
            }
            args.push(dev.clone());
        }
        if !pci {
            // Only virtual devices: don't touch the host's PCI devices.
            args.push("--no-pci".into());
        }
        args.extend(self.eal.args.iter().cloned());
        args
    }
}

/// The device name in a DPDK device string (the part before the first comma).
pub fn device_name(dev: &str) -> &str {
    dev.split(',').next().unwrap_or("").trim()
}

/// A PCI address as sysfs names it: with its domain, in lower case.
fn full_pci_address(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    if name.matches(':').count() == 1 {
        format!("0000:{name}")
    } else {
        name
    }
}

/// The existing network interfaces a virtual device string attaches to, with the argument
/// that names each: `iface` of af_packet and af_xdp, the interface arguments of pcap. (A tap
/// device's `iface` is one it creates, so it is not among them.)
fn interfaces_of(dev: &str) -> Vec<(&str, &str)> {
    let name = device_name(dev);
    let driver = name
        .strip_prefix("net_")
        .or_else(|| name.strip_prefix("eth_"))
        .unwrap_or("");
    let keys: &[&str] = if driver.starts_with("af_packet") || driver.starts_with("af_xdp") {
        &["iface"]
    } else if driver.starts_with("pcap") {
        &["iface", "rx_iface", "rx_iface_in", "tx_iface"]
    } else {
        &[]
    };
    dev.split(',')
        .skip(1)
        .filter_map(|arg| arg.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| keys.contains(k))
        .collect()
}

/// `0000:01:00.0` or `01:00.0`.
pub fn is_pci_address(name: &str) -> bool {
    let parts: Vec<&str> = name.split(':').collect();
    let (bus_dev_fn, domain_ok) = match parts.as_slice() {
        [dom, bus, df] => (
            Some((*bus, *df)),
            dom.len() == 4 && dom.chars().all(|c| c.is_ascii_hexdigit()),
        ),
        [bus, df] => (Some((*bus, *df)), true),
        _ => (None, false),
    };
    let Some((bus, df)) = bus_dev_fn else {
        return false;
    };
    let Some((dev, func)) = df.split_once('.') else {
        return false;
    };
    domain_ok
        && bus.len() == 2
        && bus.chars().all(|c| c.is_ascii_hexdigit())
        && dev.len() == 2
        && dev.chars().all(|c| c.is_ascii_hexdigit())
        && func.len() == 1
        && func.chars().all(|c| c.is_ascii_digit())
}

/// Parses a core list such as `0,2-4`.
pub fn parse_core_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("{part:?} is not a core range like 2-5"))?;
                let b: usize = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("{part:?} is not a core range like 2-5"))?;
                if b < a {
                    return Err(format!("{part:?}: the range runs backwards"));
                }
                a..=b
            }
            None => {
                let c: usize = part
                    .parse()
                    .map_err(|_| format!("{part:?} is not a core number"))?;
                c..=c
            }
        };
        cores.extend(range);
    }
    if cores.is_empty() {
        return Err("no cores listed".into());
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_file_keeps_the_policy_in_memory_only() {
        let parse = |toml: &str| Config::from_toml(toml).unwrap().policy.state_file;
        assert_eq!(parse("[policy]\nstate_file = \"\"\n"), None);
        assert_eq!(
            parse(""),
            Some(PathBuf::from("/var/lib/tollgate/policy.json"))
        );
        assert_eq!(
            parse("[policy]\nstate_file = \"/tmp/p.json\"\n"),
            Some(PathBuf::from("/tmp/p.json"))
        );
        let mut c = lab();
        c.policy = Config::from_toml("[policy]\nstate_file = \"\"\n")
            .unwrap()
            .policy;
        c.validate(&[]).unwrap();
        let mut c = lab();
        c.policy = Config::from_toml("[policy]\nstate_file = \"/\"\n")
            .unwrap()
            .policy;
        assert!(c.validate(&[]).is_err(), "a directory is no state file");
    }

    #[test]
    fn reassembly_bounds_are_read_and_checked() {
        let c = Config::from_toml(
            "[reassembly]\ntimeout_ms = 2000\nmax_held_kib = 1024\nlarge_buffers = 0\n",
        )
        .unwrap();
        let t = c.reassembly.table_config();
        assert_eq!((t.timeout_ms, t.max_held_bytes), (2000, 1 << 20));
        assert_eq!(c.reassembly.large_buffers, 0);
        assert!(c.reassembly.enabled);
        for (key, bad) in [
            ("timeout_ms", "0"),
            ("max_datagrams", "0"),
            ("max_datagram_len", "70000"),
            ("max_fragments", "1"),
        ] {
            let mut c = Config::from_toml(&format!("[reassembly]\n{key} = {bad}\n")).unwrap();
            c.ports = lab().ports;
            c.workers = lab().workers;
            let err = c.validate(&[0, 1, 2, 3]).unwrap_err().to_string();
            assert!(err.contains(&format!("reassembly.{key}")), "{err}");
        }
    }

    fn lab() -> Config {
        let mut c = Config::default();
        c.ports.inside = "net_af_packet0,iface=tg-cl".into();
        c.ports.outside = "net_af_packet1,iface=tg-sv".into();
        c
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let text = include_str!("../tollgate.example.toml");
        let c = Config::from_toml(text).expect("example parses");
        c.validate(&[]).expect("example validates");
        // Scripts read the drain from the example (scripts/e2e/operations): it is the default.
        assert_eq!(
            c.daemon.drain_timeout_secs,
            DaemonConfig::default().drain_timeout_secs
        );
        assert_eq!(
            (c.log.level, c.log.format),
            (LogLevel::Info, LogFormat::Text)
        );
        // The example shows the control socket's defaults, which are the server's own.
        assert_eq!(
            c.control.limits(),
            tollgate_control::server::ServerLimits::default()
        );
    }

    #[test]
    fn the_control_sockets_limits_are_read_and_checked() {
        let mut c = lab();
        let text = "[control]\nmax_clients = 16\nmax_clients_per_uid = 3\nreserved_for_root = 2\nrequest_timeout_secs = 2\nidle_timeout_secs = 30\n";
        c.control = Config::from_toml(text).unwrap().control;
        c.validate(&[]).unwrap();
        let l = c.control.limits();
        assert_eq!(
            (l.max_clients, l.max_clients_per_uid, l.reserved_for_root),
            (16, 3, 2)
        );
        assert_eq!(
            (l.request_timeout, l.idle_timeout),
            (
                std::time::Duration::from_secs(2),
                std::time::Duration::from_secs(30)
            )
        );
        let refused = |edit: fn(&mut ControlConfig)| {
            let mut c = lab();
            edit(&mut c.control);
            c.validate(&[]).unwrap_err().to_string()
        };
        assert_eq!(
            refused(|c| c.max_clients = 0),
            "config: control.max_clients: 0 is outside 1..=1024 (each connection is served by a thread)"
        );
        assert_eq!(
            refused(|c| c.reserved_for_root = 64),
            "config: control.reserved_for_root: 64 leaves none of control.max_clients 64 to the control group: use fewer"
        );
        assert_eq!(
            refused(|c| c.max_clients_per_uid = 0),
            "config: control.max_clients_per_uid: 0 is outside 1..=64 (control.max_clients)"
        );
        assert_eq!(
            refused(|c| c.request_timeout_secs = 0),
            "config: control.request_timeout_secs: 0 is outside 1..=300 seconds"
        );
        assert_eq!(
            refused(|c| c.idle_timeout_secs = 0),
            "config: control.idle_timeout_secs: 0 is outside 1..=86400 seconds"
        );
        let err = Config::from_toml("[control]\nidle_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timeout"), "{err}");
    }

    #[test]
    fn a_log_level_that_does_not_exist_names_the_key() {
        let err = Config::from_toml("[log]\nlevel = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
        assert!("verbose"
            .parse::<LogLevel>()
            .unwrap_err()
            .contains("use error, warn"));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let err = Config::from_toml("[flows]\ncapacity = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("flows.capacity"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = Config::from_toml("[flows]\ncapacty = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacty"), "{err}");
    }

    #[test]
    fn a_syntax_error_says_where() {
        let err = Config::from_toml("[ports\ninside = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = lab();
        c.flows.udp_timeout_secs = 0;
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("flows.udp_timeout_secs"));
        let mut c = lab();
        c.workers.cores = vec![0, 0];
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let mut c = lab();
        c.stats.prometheus_listen = "localhost:9101".into();
        assert_eq!(
            c.validate(&[]).unwrap_err().to_string(),
            "config: stats.prometheus_listen: \"localhost:9101\" is not IP:PORT (e.g. \"127.0.0.1:9101\" or \"[::1]:9101\"); \"\" turns it off"
        );
        let mut c = lab();
        c.proxy.detect_ipsec_over_tcp_ports = vec![10_000, 0];
        assert_eq!(
            c.validate(&[]).unwrap_err().to_string(),
            "config: proxy.detect_ipsec_over_tcp_ports: 0 is not a TCP port a server listens on"
        );
        let mut c = lab();
        c.workers.cores = vec![7];
        assert!(c
            .validate(&[0, 1])
            .unwrap_err()
            .to_string()
            .contains("workers.cores"));
        let mut c = lab();
        c.ports.mbufs = 100;
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("ports.mbufs"));
        let mut c = lab();
        c.ports.outside = "net_af_packet0,iface=x".into();
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("same device"));
        let mut c = lab();
        c.ports.rx_descriptors = 1000;
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("ports.rx_descriptors"));
        let mut c = lab();
        c.eal.no_huge = true;
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("eal.memory_mb"));
        let c = Config::default();
        assert!(c
            .validate(&[])
            .unwrap_err()
            .to_string()
            .contains("ports.inside"));
    }

    #[test]
    fn eal_arguments_follow_the_devices() {
        let mut c = lab();
        c.eal.no_huge = true;
        c.eal.memory_mb = 256;
        let args = c.eal_args("tollgate");
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--vdev" && w[1] == "net_af_packet0,iface=tg-cl"));
        assert!(args.contains(&"--no-pci".to_string()));
        assert!(args.windows(2).any(|w| w[0] == "-m" && w[1] == "256"));
        // The main lcore floats over the worker cores; worker i gets lcore i + 1 on its core.
        c.workers.cores = vec![2, 5];
        let args = c.eal_args("tollgate");
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--lcores" && w[1] == "0@(2,5),1@2,2@5"));
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--main-lcore" && w[1] == "0"));
        assert!(!args.contains(&"-l".to_string()));
        c.ports.inside = "0000:01:00.0".into();
        let args = c.eal_args("tollgate");
        assert!(args
            .windows(2)
            .any(|w| w[0] == "-a" && w[1] == "0000:01:00.0"));
        assert!(!args.contains(&"--no-pci".to_string()));
    }

    #[test]
    fn pci_addresses_and_core_lists() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("3b:00.1"));
        assert!(!is_pci_address("net_ring0"));
        assert!(!is_pci_address("0000:01:00"));
        assert_eq!(parse_core_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_core_list("4-2").is_err());
        assert!(parse_core_list("x").is_err());
        assert!(parse_core_list("").is_err());
    }
}
