//! `tollgatectl`: the operator's client for a running tollgate. Talks to the
//! daemon's control socket; prints tables for people and, with `--json`, the
//! daemon's replies for scripts. On failure it prints exactly one line,
//! `tollgatectl: <what went wrong>`, and exits 1 (2 for a malformed command
//! line), so scripts can tell a refused request from a typo.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::de::IgnoredAny;
use serde::Deserialize;

use tollgate_control::client::{Client, ClientError, DEFAULT_SOCKET};
use tollgate_control::policy::{
    Action, Detect, LimitAction, Match, PolicyError, PolicySet, PortRange, PortSide, Prefix,
    Protocol, RuleSpec, StallAction,
};
use tollgate_control::protocol::{
    ErrorCode, ExplainQuery, ExplainReply, FlowFilter, FlowView, FlowsClearReply, FlowsListReply,
    HealthReply, LegView, Op, PolicyChangeReply, PolicyCheckReply, PolicyListReply, ProxyFlowView,
    Reply, RuleView, StatsReply, VersionReply, MAX_PAGE_SIZE,
};
use tollgate_control::Prometheus;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SOCKET_ENV: &str = "TOLLGATE_SOCKET";

const EXAMPLES: &str = "\
Examples:
  tollgatectl policy add --proto tcp --dst-port 10000 --action bypass --name ctcp
  tollgatectl policy add --proto tcp --dst-port 5201 --action bypass --apply-existing
  tollgatectl policy add --proto tcp --dst 198.19.0.0/16 --action proxy --on-stall bypass
  tollgatectl policy add --proto tcp --dst-port 4443 --action proxy --detect ipsec-over-tcp
  tollgatectl policy add --proto tcp --dst-port 443 --action proxy --conn-max 10000 --per-client-max 50
  tollgatectl policy insert 1 --proto udp --dst 198.18.0.0/15 --action drop
  tollgatectl policy list
  tollgatectl policy replace --file /etc/tollgate/policy.json
  tollgatectl explain --proto tcp --src 198.18.0.1:40000 --dst 198.19.0.1:10000
  tollgatectl flows list --mode bypass --port 10000
  tollgatectl flows clear --port 5201 --hand-over
  tollgatectl stats --json
  tollgatectl stats --prometheus > /var/lib/node_exporter/textfile/tollgate.prom

New rules apply to new flows only, as on an ASA; --apply-existing switches
matching live flows too. Using the socket needs root or membership of the
control group configured in the daemon.";

/// Control a running tollgate: bypass policies, live flows, counters.
#[derive(Debug, Parser)]
// A missing command is a one-line usage error like any other, not a page of
// help on stderr.
#[command(name = "tollgatectl", version, after_help = EXAMPLES, arg_required_else_help = false, subcommand_required = true)]
struct Cli {
    /// The daemon's control socket [default: $TOLLGATE_SOCKET, else /run/tollgate/control.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the daemon's reply as JSON, for scripts, instead of a table
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add, list, delete and replace the rules that decide what tollgate does with new flows
    #[command(subcommand, arg_required_else_help = false, subcommand_required = true)]
    Policy(PolicyCommand),
    /// Show which rule a flow would match and what tollgate would do with it
    Explain(ExplainArgs),
    /// List or clear live flows
    #[command(subcommand, arg_required_else_help = false, subcommand_required = true)]
    Flows(FlowsCommand),
    /// Show counters: per port, per worker, drop reasons, flow-table fill, rules, the proxy
    Stats {
        /// Print them in Prometheus' text exposition format (for node_exporter's textfile
        /// collector or a scrape proxy; the daemon can serve the same on HTTP: stats.prometheus_listen)
        #[arg(long)]
        prometheus: bool,
    },
    /// Show whether every worker answers and both links are up
    Health,
    /// Show the versions of tollgatectl, the daemon and DPDK
    Version,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Append a rule (or insert it at --position); first match wins
    #[command(after_help = LIMITS_HELP)]
    Add {
        #[command(flatten)]
        rule: RuleArgs,
        /// Insert at this position instead of appending (1 = first, evaluated before all others)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        position: Option<u32>,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Insert a rule at POSITION (1 = first, evaluated before all others)
    #[command(after_help = LIMITS_HELP)]
    Insert {
        /// Where the rule goes: 1 = first; one past the last rule appends
        #[arg(value_name = "POSITION", value_parser = clap::value_parser!(u32).range(1..))]
        position: u32,
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Delete the rule with this id (ids are shown by `policy list`)
    Delete {
        #[arg(value_name = "ID")]
        id: u32,
    },
    /// List the rules in the order they are evaluated, with their hit counters
    List,
    /// Replace every rule with those in a file, all or nothing
    #[command(after_help = FILE_HELP)]
    Replace {
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Check a rule file, here and in the daemon, without applying it
    #[command(after_help = FILE_HELP)]
    Check {
        #[command(flatten)]
        file: FileArgs,
    },
}

const LIMITS_HELP: &str = "\
Connection limits (--conn-max, --embryonic-max, --per-client-max; as the
ASA's set connection conn-max, embryonic-conn-max, per-client-max) count the
connections the rule proxies, over all workers together: a connection counts
from its client's SYN until it closes (TIME-WAIT not counted), is reset or is
handed over to pass-through, and is embryonic until both its handshakes are
complete. Each new flow of the rule is checked against them before it is
proxied; past one, --on-limit reset answers its SYN with a RST and keeps no
entry, --on-limit bypass forwards it unproxied for its whole life (such flows
are not counted). Per-client counts are kept in 16,384 buckets per rule, by a
keyed hash of the client address: clients whose addresses share a bucket
share its count, which can refuse one early but never lets one past its
bound. `policy list`, `explain` and `stats` show the counts and the flows
each limit refused.";

const FILE_HELP: &str = "\
The file holds JSON: {\"rules\": [RULE, ...]} or a bare array of rules, each
like {\"match\": {\"proto\": \"tcp\", \"dst_port\": 10000}, \"action\": \"bypass\",
\"name\": \"ctcp\"}. Match fields: proto, src, dst, src_port, dst_port,
ingress, vlan; rule fields: match, action, idle_timeout_secs, on_stall
(\"wait\", \"reset\" or \"bypass\", with action proxy only), detect
(\"ipsec-over-tcp\" or \"off\", with action proxy only), conn_max,
embryonic_max, per_client_max and on_limit (\"reset\" or \"bypass\"; with
action proxy only), name, comment.
The output of `policy list --json` is accepted too: its ids and hit counters
are ignored, as replaced rules get new ids.";

#[derive(Debug, Args)]
struct FileArgs {
    /// JSON rule file (see below)
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Also switch live flows that the new policy matches (by default, as on an ASA, it applies to new flows only)
    #[arg(long)]
    apply_existing: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ActionArg {
    /// Stateless pass-through: forwarded untouched, picked up mid-stream
    Bypass,
    /// Tracked by tollgate (the default for TCP)
    Proxy,
    /// Every frame dropped, and counted
    Drop,
}

impl From<ActionArg> for Action {
    fn from(a: ActionArg) -> Action {
        match a {
            ActionArg::Bypass => Action::Bypass,
            ActionArg::Proxy => Action::Proxy,
            ActionArg::Drop => Action::Drop,
        }
    }
}

/// What a stalled proxied flow becomes: a peer left a hole in its stream
/// (a lost segment) and, though asked with duplicate ACKs, did not fill it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StallArg {
    /// Keep holding the flow and waiting for the missing bytes, as an ASA does (the stall is counted)
    Wait,
    /// Reset both legs, so client and server see the failure at once
    Reset,
    /// Hand the flow over to stateless pass-through, so a peer that never retransmits can go on
    Bypass,
}

/// What a proxied flow's first payload is watched for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DetectArg {
    /// IPsec over TCP (Cisco cTCP, RFC 8229, length-framed IKE/ESP): such a flow is handed over to pass-through before a lost segment can stall it
    IpsecOverTcp,
    /// Nothing: the flow stays proxied whatever it carries
    Off,
}

/// What a new flow past one of the rule's connection limits gets.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LimitArg {
    /// Refuse it: its SYN is answered with a RST and no entry is kept (the default)
    Reset,
    /// Forward it unproxied for its whole life (fail open)
    Bypass,
}

impl From<LimitArg> for LimitAction {
    fn from(a: LimitArg) -> LimitAction {
        match a {
            LimitArg::Reset => LimitAction::Reset,
            LimitArg::Bypass => LimitAction::Bypass,
        }
    }
}

impl From<DetectArg> for Detect {
    fn from(a: DetectArg) -> Detect {
        match a {
            DetectArg::IpsecOverTcp => Detect::IpsecOverTcp,
            DetectArg::Off => Detect::Off,
        }
    }
}

impl From<StallArg> for StallAction {
    fn from(a: StallArg) -> StallAction {
        match a {
            StallArg::Wait => StallAction::Wait,
            StallArg::Reset => StallAction::Reset,
            StallArg::Bypass => StallAction::Bypass,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IngressArg {
    Inside,
    Outside,
}

impl From<IngressArg> for PortSide {
    fn from(i: IngressArg) -> PortSide {
        match i {
            IngressArg::Inside => PortSide::Inside,
            IngressArg::Outside => PortSide::Outside,
        }
    }
}

#[derive(Debug, Args)]
struct RuleArgs {
    /// What to do with the flows the rule matches
    #[arg(long, value_enum)]
    action: ActionArg,
    /// IP protocol: tcp, udp, icmp, icmpv6, esp, sctp, dccp, udplite or a number 0-255
    #[arg(long, value_name = "PROTO")]
    proto: Option<Protocol>,
    /// Source prefix of the flow's first frame, e.g. 198.18.0.0/15 or 2001:2::/48 (a bare address is one host)
    #[arg(long, value_name = "PREFIX")]
    src: Option<Prefix>,
    /// Destination prefix of the flow's first frame
    #[arg(long, value_name = "PREFIX")]
    dst: Option<Prefix>,
    /// Source port or inclusive range, e.g. 10000 or 1024-65535 (needs --proto tcp, udp, sctp, dccp or udplite)
    #[arg(long, value_name = "RANGE")]
    src_port: Option<PortRange>,
    /// Destination port or inclusive range
    #[arg(long, value_name = "RANGE")]
    dst_port: Option<PortRange>,
    /// The port the flow's first frame arrives on
    #[arg(long, value_enum)]
    ingress: Option<IngressArg>,
    /// VLAN id, 1-4094
    #[arg(long, value_name = "ID")]
    vlan: Option<u16>,
    /// Idle timeout of matching flows in seconds (1-604800), instead of the protocol's
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// What happens when a peer of a flow this rule proxies leaves a hole in its stream (a lost segment) and does not fill it (needs --action proxy); without it the daemon's default applies
    #[arg(long, value_enum, value_name = "ACTION")]
    on_stall: Option<StallArg>,
    /// What flows this rule proxies are watched for from their first payload (needs --action proxy); without it the daemon watches for IPsec over TCP on its configured ports (proxy.detect_ipsec_over_tcp_ports, TCP/10000 by default)
    #[arg(long, value_enum, value_name = "WHAT")]
    detect: Option<DetectArg>,
    /// Most connections the rule proxies at once, over all workers (1-16777216; needs --action proxy); see below
    #[arg(long, value_name = "N")]
    conn_max: Option<u32>,
    /// Most of those in their handshakes at once (1-16777216; embryonic: the server has not answered yet, or the client has not completed its side)
    #[arg(long, value_name = "N")]
    embryonic_max: Option<u32>,
    /// Most of those from one client address at once (1-65535)
    #[arg(long, value_name = "N")]
    per_client_max: Option<u32>,
    /// What a new flow past one of the rule's limits gets [default: reset]
    #[arg(long, value_enum, value_name = "ACTION")]
    on_limit: Option<LimitArg>,
    /// A short name, shown in listings and in flows' reasons
    #[arg(long)]
    name: Option<String>,
    /// Free text for whoever reads the policy next
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
}

impl RuleArgs {
    fn spec(&self) -> RuleSpec {
        RuleSpec {
            matches: Match {
                proto: self.proto,
                src: self.src,
                dst: self.dst,
                src_port: self.src_port,
                dst_port: self.dst_port,
                ingress: self.ingress.map(PortSide::from),
                vlan: self.vlan,
            },
            action: self.action.into(),
            idle_timeout_secs: self.idle_timeout,
            on_stall: self.on_stall.map(StallAction::from),
            detect: self.detect.map(Detect::from),
            conn_max: self.conn_max,
            embryonic_max: self.embryonic_max,
            per_client_max: self.per_client_max,
            on_limit: self.on_limit.map(LimitAction::from),
            name: self.name.clone(),
            comment: self.comment.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// IP protocol of the flow: tcp, udp, icmp, ... or a number
    #[arg(long, value_name = "PROTO")]
    proto: Protocol,
    /// Source of the flow's first frame: IP:PORT, [IPv6]:PORT, or a bare IP for protocols without ports
    #[arg(long, value_name = "IP:PORT", value_parser = parse_endpoint)]
    src: SocketAddr,
    /// Destination of the flow's first frame
    #[arg(long, value_name = "IP:PORT", value_parser = parse_endpoint)]
    dst: SocketAddr,
    /// The port the first frame arrives on
    #[arg(long, value_enum, default_value = "inside")]
    ingress: IngressArg,
    /// VLAN id of the first frame
    #[arg(long, value_name = "ID")]
    vlan: Option<u16>,
}

fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    Err(format!(
        "{s:?} is not an address and port like 198.18.0.1:40000 or [2001:2::1]:443"
    ))
}

#[derive(Debug, Subcommand)]
enum FlowsCommand {
    /// List live flows, a page at a time, with their mode and why they have it
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Page to show, 1 = first
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
        /// Flows per page, at most 10000
        #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_SIZE as i64))]
        page_size: u32,
    },
    /// Clear live flows (all of them unless filtered): proxied connections are reset at both ends (or handed over with --hand-over), other flows' entries forgotten
    #[command(after_help = CLEAR_HELP)]
    Clear {
        #[command(flatten)]
        filter: FilterArgs,
        /// Hand proxied connections over to pass-through instead of resetting them: their endpoints carry on unproxied, byte for byte
        #[arg(long)]
        hand_over: bool,
    },
}

const CLEAR_HELP: &str = "\
What clearing does, by the flow's mode (as `flows list` shows it):
  proxy   Tollgate holds the connection: both ends are reset (each gets a RST
          in the other's name), and the entry stays, closed, for the TCP closed
          timeout (flows.tcp_closed_timeout_secs, 10 s), so that segments still
          in flight from either end are ignored rather than taken for a new flow.
          With --hand-over the connection is handed over to pass-through
          instead: the endpoints carry on unproxied, and tollgate first delivers
          what it had acknowledged on their behalf. A connection still in its
          handshake, or one end of which has closed, cannot be handed over: it
          is kept proxied and listed. A proxy-mode entry holding no connection
          (picked up mid-stream, or finished) is forgotten.
  bypass  The entry is forgotten: the flow's next frame makes a new one,
          classified by the policy in force (its initiator is then whichever end
          sends first). A flow the proxy handed over earlier and still serves
          (delivering bytes it owes, or translating sequence numbers) is kept:
          forgetting it would break the connection.
  drop    The entry is forgotten; the next frame is classified afresh.
The reply counts the flows by mode and outcome and lists the ones kept
(--json: see the README).

Examples:
  tollgatectl flows clear --port 8081 --hand-over
  tollgatectl flows clear --proto tcp --src 198.18.0.1:46586 --dst 198.18.0.2:8081";

#[derive(Debug, Args)]
struct FilterArgs {
    /// Flows with either endpoint in this prefix
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<Prefix>,
    /// Flows with either endpoint on this port
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Flows of this IP protocol
    #[arg(long, value_name = "PROTO")]
    proto: Option<Protocol>,
    /// Flows in this mode
    #[arg(long, value_enum)]
    mode: Option<ActionArg>,
    /// Flows classified by the rule with this id
    #[arg(long, value_name = "ID")]
    rule: Option<u32>,
    /// With --dst: the connection between these two endpoints, in either direction (IP:PORT, [IPv6]:PORT, or a bare IP for protocols without ports); add --proto for the whole 5-tuple
    #[arg(long, value_name = "IP:PORT", value_parser = parse_endpoint, requires = "dst")]
    src: Option<SocketAddr>,
    /// The connection's other endpoint (see --src)
    #[arg(long, value_name = "IP:PORT", value_parser = parse_endpoint, requires = "src")]
    dst: Option<SocketAddr>,
}

impl FilterArgs {
    /// The filter, checked here so that a mistake is reported as such even when the daemon
    /// is down.
    fn filter(&self) -> Result<FlowFilter, String> {
        let filter = FlowFilter {
            prefix: self.prefix,
            port: self.port,
            proto: self.proto,
            mode: self.mode.map(Action::from),
            rule: self.rule,
            src: self.src,
            dst: self.dst,
        };
        filter
            .check()
            .map_err(|e| format!("--{} {}", e.field, e.message))?;
        Ok(filter)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if cli.json && matches!(cli.command, Command::Stats { prometheus: true }) {
        eprintln!("tollgatectl: --json and --prometheus are two output formats: pick one");
        return ExitCode::from(2);
    }
    match run(&cli) {
        Ok(out) => match io::stdout().lock().write_all(out.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            // `tollgatectl flows list | head` is not a failure.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => fail(&format!("cannot write the output: {e}")),
        },
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("tollgatectl: {}", one_line(message));
    ExitCode::from(1)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Help and --version print as usual; command-line mistakes become one line
/// and exit 2, like every other failure but distinguishable from them.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    let mut parts = Vec::new();
    let mut hint = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("Usage:") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("For more information, ") {
            hint = Some(rest.trim_end_matches('.').to_owned());
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
    }
    let mut message = String::new();
    for part in parts {
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(&part);
    }
    if let Some(hint) = hint {
        let _ = write!(message, " ({hint})");
    }
    eprintln!("tollgatectl: {}", one_line(&message));
    ExitCode::from(2)
}

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.socket {
        return p.clone();
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Runs the command; returns what to print, or the one-line failure.
fn run(cli: &Cli) -> Result<String, String> {
    // Everything checkable here is checked before connecting, so a typo in
    // a rule is reported as such even when the daemon is down.
    let op = operation(&cli.command)?;
    let kind = op.reply_kind();
    let mut client = Client::connect(socket_path(cli)).map_err(|e| e.to_string())?;
    let result = client
        .call(op)
        .map_err(|e| explain_error(&cli.command, e))?;
    if cli.json {
        let mut out = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        out.push('\n');
        return Ok(out);
    }
    let reply = Reply::read(kind, result).map_err(not_understood)?;
    render(&cli.command, reply)
}

/// The request a command sends.
fn operation(command: &Command) -> Result<Op, String> {
    Ok(match command {
        Command::Policy(p) => match p {
            PolicyCommand::Add {
                rule,
                position,
                apply,
            } => policy_add(rule, position.map(|p| p as usize - 1), apply)?,
            PolicyCommand::Insert {
                position,
                rule,
                apply,
            } => policy_add(rule, Some(*position as usize - 1), apply)?,
            PolicyCommand::Delete { id } => Op::PolicyDelete { id: *id },
            PolicyCommand::List => Op::PolicyList {},
            PolicyCommand::Replace { file, apply } => Op::PolicyReplace {
                rules: read_rules(&file.file)?,
                apply_existing: apply.apply_existing,
            },
            PolicyCommand::Check { file } => Op::PolicyCheck {
                rules: read_rules(&file.file)?,
            },
        },
        Command::Explain(e) => Op::Explain(explain_query(e)?),
        Command::Flows(FlowsCommand::List {
            filter,
            page,
            page_size,
        }) => Op::FlowsList {
            filter: filter.filter()?,
            page: page - 1,
            page_size: *page_size,
        },
        Command::Flows(FlowsCommand::Clear { filter, hand_over }) => Op::FlowsClear {
            filter: filter.filter()?,
            hand_over: *hand_over,
        },
        Command::Stats { .. } => Op::Stats {},
        Command::Health => Op::Health {},
        Command::Version => Op::Version {},
    })
}

fn policy_add(rule: &RuleArgs, position: Option<usize>, apply: &ApplyArgs) -> Result<Op, String> {
    let spec = rule.spec();
    spec.validate()
        .map_err(|e| format!("invalid rule: {}", with_flag(&e)))?;
    Ok(Op::PolicyAdd {
        rule: spec,
        position,
        apply_existing: apply.apply_existing,
    })
}

/// A validation error worded for the command line: the rule field and the
/// option that sets it.
fn with_flag(e: &PolicyError) -> String {
    let PolicyError::Invalid { field, message } = e else {
        return e.to_string();
    };
    let flag = match field.as_str() {
        "match.proto" => "--proto",
        "match.src" => "--src",
        "match.dst" => "--dst",
        "match.src_port" => "--src-port",
        "match.dst_port" => "--dst-port",
        "match.ingress" => "--ingress",
        "match.vlan" => "--vlan",
        "idle_timeout_secs" => "--idle-timeout",
        "on_stall" => "--on-stall",
        "detect" => "--detect",
        "conn_max" => "--conn-max",
        "embryonic_max" => "--embryonic-max",
        "per_client_max" => "--per-client-max",
        "on_limit" => "--on-limit",
        "name" => "--name",
        "comment" => "--comment",
        _ => return e.to_string(),
    };
    format!("{field} ({flag}): {message}")
}

fn explain_query(e: &ExplainArgs) -> Result<ExplainQuery, String> {
    if e.src.is_ipv4() != e.dst.is_ipv4() {
        return Err(format!(
            "--src {} and --dst {} are of different address families",
            e.src.ip(),
            e.dst.ip()
        ));
    }
    if e.proto.has_ports() {
        for (flag, addr) in [("--src", e.src), ("--dst", e.dst)] {
            if addr.port() == 0 {
                return Err(format!(
                    "{flag} {addr} needs a port: {} flows have ports (IP:PORT)",
                    e.proto
                ));
            }
        }
    }
    if let Some(v) = e.vlan {
        if v == 0 || v > 4094 {
            return Err(format!("--vlan {v} is not a VLAN id (1-4094)"));
        }
    }
    Ok(ExplainQuery {
        proto: e.proto,
        src: e.src,
        dst: e.dst,
        ingress: e.ingress.into(),
        vlan: e.vlan,
    })
}

/// The daemon reports rule positions as it stores them (0 = first); say it
/// in the numbering the operator typed.
fn explain_error(command: &Command, e: ClientError) -> String {
    let position = match command {
        Command::Policy(PolicyCommand::Add {
            position: Some(p), ..
        }) => Some(*p),
        Command::Policy(PolicyCommand::Insert { position, .. }) => Some(*position),
        _ => None,
    };
    match (&e, position) {
        (
            ClientError::Daemon {
                code: ErrorCode::Invalid,
                message,
            },
            Some(p),
        ) if message.starts_with("position") => {
            format!("there is no position {p} in the policy: positions run from 1 (first) to one past the last rule (see `tollgatectl policy list`)")
        }
        _ => e.to_string(),
    }
}

/// A rule file: `{"rules": [...]}` or a bare array. `policy list --json`
/// output parses too, so a listing can be saved and restored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<FileRule>,
    #[serde(default)]
    #[allow(dead_code)]
    generation: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    defaults: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    next_id: Option<IgnoredAny>,
}

/// A `RuleSpec` that may also carry the id and hit counters of a listing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    hits: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    limit_counters: Option<IgnoredAny>,
    #[serde(rename = "match", default)]
    matches: Match,
    action: Action,
    #[serde(default)]
    idle_timeout_secs: Option<u64>,
    #[serde(default)]
    on_stall: Option<StallAction>,
    #[serde(default)]
    detect: Option<Detect>,
    #[serde(default)]
    conn_max: Option<u32>,
    #[serde(default)]
    embryonic_max: Option<u32>,
    #[serde(default)]
    per_client_max: Option<u32>,
    #[serde(default)]
    on_limit: Option<LimitAction>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

impl From<FileRule> for RuleSpec {
    fn from(r: FileRule) -> RuleSpec {
        // A struct literal, so a field added to RuleSpec fails to compile
        // here rather than being dropped from files silently.
        RuleSpec {
            matches: r.matches,
            action: r.action,
            idle_timeout_secs: r.idle_timeout_secs,
            on_stall: r.on_stall,
            detect: r.detect,
            conn_max: r.conn_max,
            embryonic_max: r.embryonic_max,
            per_client_max: r.per_client_max,
            on_limit: r.on_limit,
            name: r.name,
            comment: r.comment,
        }
    }
}

fn read_rules(file: &Path) -> Result<Vec<RuleSpec>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let at = |e: serde_json::Error| {
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
        format!("{}:{}:{}: {message}", file.display(), e.line(), e.column())
    };
    let rules: Vec<FileRule> = match text.trim_start().chars().next() {
        Some('[') => serde_json::from_str(&text).map_err(at)?,
        Some('{') => serde_json::from_str::<RuleFile>(&text).map_err(at)?.rules,
        _ => {
            let skipped = &text[..text.len() - text.trim_start().len()];
            let line = skipped.matches('\n').count() + 1;
            let column = skipped.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(format!(
                "{}:{line}:{column}: expected a JSON object {{\"rules\": [...]}} or an array of rules",
                file.display()
            ));
        }
    };
    let specs: Vec<RuleSpec> = rules.into_iter().map(RuleSpec::from).collect();
    PolicySet::check(&specs).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(specs)
}

fn not_understood(e: impl std::fmt::Display) -> String {
    format!("tollgate sent a reply that this tollgatectl does not understand: {e}")
}

/// The reply as the type the command's operation gets ([`Op::reply_kind`]).
fn typed<T: TryFrom<Reply, Error = Reply>>(reply: Reply) -> Result<T, String> {
    T::try_from(reply).map_err(|other| not_understood(format!("a {:?} reply", other.kind())))
}

/// The human form of a reply.
fn render(command: &Command, result: Reply) -> Result<String, String> {
    let mut out = String::new();
    match command {
        Command::Policy(PolicyCommand::Add { apply, .. } | PolicyCommand::Insert { apply, .. }) => {
            let r: PolicyChangeReply = typed(result)?;
            let id =
                r.id.map(|i| format!("rule {i}"))
                    .unwrap_or_else(|| "the rule".into());
            let _ = writeln!(out, "added {id} ({})", in_force(&r));
            switched(&mut out, &r, apply.apply_existing);
        }
        Command::Policy(PolicyCommand::Delete { id }) => {
            let r: PolicyChangeReply = typed(result)?;
            let _ = writeln!(
                out,
                "deleted rule {id} ({}); flows it classified keep their mode until they end",
                in_force(&r)
            );
        }
        Command::Policy(PolicyCommand::List) => render_policy(&mut out, &typed(result)?),
        Command::Policy(PolicyCommand::Replace { file, apply }) => {
            let r: PolicyChangeReply = typed(result)?;
            let _ = writeln!(
                out,
                "replaced the policy with the rules in {} ({})",
                file.file.display(),
                in_force(&r)
            );
            switched(&mut out, &r, apply.apply_existing);
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            let r: PolicyCheckReply = typed(result)?;
            let _ = writeln!(
                out,
                "{}: {} rule{}, all valid",
                file.file.display(),
                r.rules,
                plural(r.rules as u64)
            );
        }
        Command::Explain(_) => {
            let r: ExplainReply = typed(result)?;
            let _ = writeln!(out, "{}", r.explanation);
            if let Some(rule) = &r.rule {
                let _ = write!(
                    out,
                    "  rule {}: {} -> {}",
                    rule.id, rule.spec.matches, rule.spec.action
                );
                if let Some(s) = rule.spec.on_stall {
                    let _ = write!(out, ", on-stall {s}");
                }
                if let Some(d) = rule.spec.detect {
                    let _ = write!(out, ", detect {d}");
                }
                if let Some(limits) = limits_text(&rule.spec) {
                    let _ = write!(out, ", {limits}");
                }
                out.push('\n');
            }
            for l in &r.limits {
                let _ = writeln!(
                    out,
                    "  {} {}: {} now{}",
                    l.limit,
                    l.max,
                    l.current,
                    if l.reached { ", reached" } else { "" }
                );
            }
        }
        Command::Flows(FlowsCommand::List { .. }) => render_flows(&mut out, &typed(result)?),
        Command::Flows(FlowsCommand::Clear { .. }) => render_clear(&mut out, &typed(result)?),
        Command::Stats { prometheus: false } => out = typed::<StatsReply>(result)?.render_table(),
        Command::Stats { prometheus: true } => {
            out = Prometheus(&typed::<StatsReply>(result)?).to_string()
        }
        Command::Health => {
            let r: HealthReply = typed(result)?;
            let _ = writeln!(out, "status   {}", r.status);
            let _ = writeln!(
                out,
                "workers  {} of {} responding",
                r.workers_responding, r.workers
            );
            let links: Vec<String> = r
                .links_up
                .iter()
                .map(|(name, up)| format!("{name} {}", if *up { "up" } else { "down" }))
                .collect();
            let _ = writeln!(
                out,
                "links    {}",
                if links.is_empty() {
                    "none".into()
                } else {
                    links.join(", ")
                }
            );
            let _ = writeln!(out, "uptime   {}", duration(r.uptime_secs * 1000));
        }
        Command::Version => {
            let r: VersionReply = typed(result)?;
            let _ = writeln!(
                out,
                "tollgatectl {} (control protocol {})",
                env!("CARGO_PKG_VERSION"),
                tollgate_control::protocol::PROTOCOL_VERSION
            );
            // rte_version() already says "DPDK 22.11.4".
            let dpdk = if r.dpdk.starts_with("DPDK") {
                r.dpdk.clone()
            } else {
                format!("DPDK {}", r.dpdk)
            };
            let _ = writeln!(
                out,
                "tollgate {} (control protocol {}, {dpdk})",
                r.tollgate, r.protocol
            );
        }
    }
    Ok(out)
}

fn in_force(r: &PolicyChangeReply) -> String {
    format!(
        "policy generation {}, in force on every worker after {} µs",
        r.generation, r.in_force_us
    )
}

fn switched(out: &mut String, r: &PolicyChangeReply, apply_existing: bool) {
    if apply_existing {
        let n = r.flows_switched.unwrap_or(0);
        let _ = writeln!(out, "switched {n} live flow{}", plural(n));
    } else {
        let _ = writeln!(
            out,
            "live flows keep their mode; add --apply-existing to switch the ones it matches"
        );
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn render_policy(out: &mut String, reply: &PolicyListReply) {
    if reply.rules.is_empty() {
        let _ = writeln!(out, "no rules");
    } else {
        // ON-STALL and DETECT only when some rule sets them, as few do: "-" there
        // is the daemon's default (for proxy rules) or not applicable.
        let with_stall = reply.rules.iter().any(|r| r.rule.spec.on_stall.is_some());
        let with_detect = reply.rules.iter().any(|r| r.rule.spec.detect.is_some());
        let with_limits = reply.rules.iter().any(|r| r.rule.spec.has_limits());
        let mut headers = vec!["ID", "POS", "ACTION", "MATCH", "IDLE"];
        if with_stall {
            headers.push("ON-STALL");
        }
        if with_detect {
            headers.push("DETECT");
        }
        if with_limits {
            headers.push("LIMITS");
        }
        headers.extend(["NAME", "FLOWS", "PACKETS", "BYTES"]);
        let counts = headers.len() - 3;
        let mut table = Table::new(&headers, &[0, 1, counts, counts + 1, counts + 2]);
        for (
            i,
            RuleView {
                rule,
                hits,
                limit_counters,
            },
        ) in reply.rules.iter().enumerate()
        {
            let mut row = vec![
                rule.id.to_string(),
                (i + 1).to_string(),
                rule.spec.action.to_string(),
                rule.spec.matches.to_string(),
                rule.spec
                    .idle_timeout_secs
                    .map_or("-".into(), |s| duration(s * 1000)),
            ];
            if with_stall {
                row.push(rule.spec.on_stall.map_or("-".into(), |s| s.to_string()));
            }
            if with_detect {
                row.push(rule.spec.detect.map_or("-".into(), |d| d.to_string()));
            }
            if with_limits {
                row.push(limits_text(&rule.spec).unwrap_or_else(|| "-".into()));
            }
            row.extend([
                rule.spec.name.clone().unwrap_or_else(|| "-".into()),
                hits.flows.to_string(),
                hits.packets.to_string(),
                bytes(hits.bytes),
            ]);
            table.row(row);
            if let Some(counters) = limit_counters {
                table.detail(format!("limits: {}", counters.describe()));
            }
        }
        out.push_str(&table.render());
    }
    let d = &reply.defaults;
    let _ = writeln!(
        out,
        "policy generation {}; flows matching no rule: tcp {}, udp {}, other {}",
        reply.generation, d.tcp, d.udp, d.other
    );
}

/// A rule's connection limits in `policy add`'s words, e.g. `conn-max 3 per-client-max 1
/// on-limit reset`; None when it sets none.
fn limits_text(spec: &RuleSpec) -> Option<String> {
    if !spec.has_limits() {
        return None;
    }
    let mut parts = Vec::new();
    for (name, value) in [
        ("conn-max", spec.conn_max),
        ("embryonic-max", spec.embryonic_max),
        ("per-client-max", spec.per_client_max),
    ] {
        if let Some(n) = value {
            parts.push(format!("{name} {n}"));
        }
    }
    parts.push(format!("on-limit {}", spec.limit_action()));
    Some(parts.join(" "))
}

fn render_flows(out: &mut String, reply: &FlowsListReply) {
    if reply.flows.is_empty() {
        if reply.total == 0 {
            let _ = writeln!(out, "no flows match");
        } else {
            let _ = writeln!(
                out,
                "no flows on page {} ({} flows match)",
                reply.page + 1,
                reply.total
            );
        }
        return;
    }
    let with_state = reply.flows.iter().any(|f| f.tcp_state.is_some());
    let mut headers = vec![
        "WORKER", "PROTO", "FLOW", "MODE", "REASON", "PKTS >", "PKTS <", "BYTES >", "BYTES <",
        "IDLE",
    ];
    if with_state {
        headers.push("STATE");
    }
    let mut table = Table::new(&headers, &[0, 5, 6, 7, 8, 9]);
    for f in &reply.flows {
        let FlowView {
            worker,
            proto,
            src,
            dst,
            mode,
            reason,
            ..
        } = f;
        let mut row = vec![
            worker.to_string(),
            proto.to_string(),
            format!("{src} -> {dst}"),
            mode.to_string(),
            reason.clone(),
            f.packets_original.to_string(),
            f.packets_reply.to_string(),
            bytes(f.bytes_original),
            bytes(f.bytes_reply),
            duration(f.idle_ms),
        ];
        if with_state {
            row.push(f.tcp_state.map_or_else(|| "-".into(), |s| s.to_string()));
        }
        table.row(row);
        if let Some(p) = &f.proxy {
            table.detail(proxy_line(p));
        }
        if let Some(why) = &f.handed_over {
            table.detail(match &f.detected {
                Some(what) => {
                    format!("handed over to pass-through: {why} (ipsec-over-tcp, {what})")
                }
                None => format!("handed over to pass-through: {why}"),
            });
        }
    }
    out.push_str(&table.render());
    let first = u64::from(reply.page) * u64::from(reply.page_size) + 1;
    let last = first + reply.flows.len() as u64 - 1;
    let _ = write!(
        out,
        "flows {first}-{last} of {} (> from the initiator, < from the responder)",
        reply.total
    );
    if last < reply.total {
        let _ = write!(out, "; next page: --page {}", reply.page + 2);
    }
    out.push('\n');
}

/// `cleared 3 flows`, then a line per mode that had any: what became of them, e.g.
/// `  proxy   2 reset at both ends (entries kept closed for late segments), 1 kept`,
/// then the kept flows, each with why.
fn render_clear(out: &mut String, r: &FlowsClearReply) {
    let _ = writeln!(out, "cleared {} flow{}", r.cleared, plural(r.cleared));
    let lines = [("proxy", r.proxy), ("bypass", r.bypass), ("drop", r.drop)];
    for (mode, c) in lines {
        let mut parts = Vec::new();
        if c.reset > 0 {
            parts.push(format!(
                "{} reset at both ends (entries kept closed a few seconds, for segments in flight)",
                c.reset
            ));
        }
        if c.handed_over > 0 {
            parts.push(format!("{} handed over to pass-through", c.handed_over));
        }
        if c.forgotten > 0 {
            parts.push(format!("{} forgotten", c.forgotten));
        }
        if c.kept > 0 {
            parts.push(format!("{} kept unchanged", c.kept));
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "  {mode:<7} {}", parts.join(", "));
        }
    }
    for k in &r.kept {
        let _ = writeln!(
            out,
            "  kept: {} {} -> {} ({}, worker {}): {}",
            k.proto,
            k.src,
            k.dst,
            k.mode,
            k.worker,
            k.reason.explanation()
        );
    }
    let kept = r.proxy.kept + r.bypass.kept + r.drop.kept;
    if kept > r.kept.len() as u64 {
        let _ = writeln!(
            out,
            "  ({} more kept, not listed)",
            kept - r.kept.len() as u64
        );
    }
}

/// A proxied flow's two legs on one line under its row, e.g.
/// `proxy relaying | client leg ESTABLISHED retx 0 srtt 1ms | server leg
/// ESTABLISHED retx 3 srtt 42ms | buffered >64.0K <0B | stalls 1`.
/// The client leg faces the initiator, the server leg the responder; `>` and
/// `<` are the table's directions. A leg that set up ECN says `ecn`.
fn proxy_line(p: &ProxyFlowView) -> String {
    let leg = |name: &str, leg: &Option<LegView>| match leg {
        Some(l) => {
            let mut text = format!(
                "{name} leg {} retx {} srtt {}",
                l.state,
                l.retransmissions,
                l.srtt_ms.map_or("-".into(), |ms| format!("{ms}ms"))
            );
            if l.out_of_order_received > 0 {
                let _ = write!(text, " out-of-order {}", l.out_of_order_received);
            }
            if l.ecn {
                text.push_str(" ecn");
            }
            text
        }
        None => format!("{name} leg not open"),
    };
    let mut parts = vec![
        format!("proxy {}", p.state),
        leg("client", &p.client_leg),
        leg("server", &p.server_leg),
        format!(
            "buffered >{} <{}",
            bytes(p.buffered_client_to_server),
            bytes(p.buffered_server_to_client)
        ),
        format!("stalls {}", p.stalls),
    ];
    if let Some(why) = &p.handed_over {
        parts.push(format!("handed over to pass-through: {why}"));
    }
    parts.join(" | ")
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Columns padded to their widest cell; numbers right-aligned. A row may
/// carry a detail line, printed under it from the second column on and left
/// out of the column widths.
struct Table {
    headers: Vec<String>,
    right: Vec<usize>,
    rows: Vec<(Vec<String>, Option<String>)>,
}

impl Table {
    fn new(headers: &[&str], right: &[usize]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            right: right.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push((cells, None));
    }

    /// Sets the detail line of the last row.
    fn detail(&mut self, text: String) {
        if let Some((_, detail)) = self.rows.last_mut() {
            *detail = Some(text);
        }
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for (row, _) in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let indent = " ".repeat(widths.first().map_or(0, |w| w + 2));
        let mut out = String::new();
        let rows = self
            .rows
            .iter()
            .map(|(row, detail)| (row, detail.as_deref()));
        for (row, detail) in std::iter::once((&self.headers, None)).chain(rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(w - cell.chars().count());
                if self.right.contains(&i) {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if let Some(detail) = detail {
                out.push_str(&indent);
                out.push_str(detail);
                out.push('\n');
            }
        }
        out
    }
}
