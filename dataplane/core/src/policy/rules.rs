//! The policy model: an ordered list of rules, first match wins. Shared by the
//! daemon (which compiles it into a classifier) and `tollgatectl`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::pipeline::PortSide;

/// Most rules a policy set may hold.
pub const MAX_RULES: usize = 65_536;
/// Longest rule name or comment, in bytes.
pub const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no rule with id {0}")]
    NoSuchRule(u32),
    #[error("the policy set is full ({MAX_RULES} rules)")]
    Full,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// An address prefix such as `198.18.0.0/15` or `2001:2::/48`. A bare address
/// is a host prefix. Host bits must be zero, as in `nft` and on routers: a
/// typo there is more likely a mistake than an intention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} is longer than {max}"));
        }
        let p = Prefix { addr, len };
        if p.network() != addr {
            return Err(format!(
                "{addr}/{len} has host bits set (did you mean {}/{len}?)",
                p.network()
            ));
        }
        Ok(p)
    }

    /// The address with host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len as u32)
                };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len as u32)
                };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len as u32)
                };
                u32::from(a) & mask == u32::from(p)
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len as u32)
                };
                u128::from(a) & mask == u128::from(p)
            }
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address or prefix"))?;
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?}: the prefix length is not a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive port range such as `10000`, `1024-65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port (0-65535) or a range like 1024-65535"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        if last < first {
            return Err(format!("{s:?}: the range runs backwards"));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        // Accept 10000 as well as "10000" and "1024-65535".
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => u16::try_from(n)
                .map(PortRange::single)
                .map_err(|_| serde::de::Error::custom(format!("{n} is not a port (0-65535)"))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// An IP protocol: by name for the common ones, else by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ESP: Protocol = Protocol(50);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const DCCP: Protocol = Protocol(33);
    pub const SCTP: Protocol = Protocol(132);
    pub const UDPLITE: Protocol = Protocol(136);

    /// Protocols whose flows have ports, so port matches make sense.
    pub fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 33 | 132 | 136)
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "icmp" => Protocol::ICMP,
            "tcp" => Protocol::TCP,
            "udp" => Protocol::UDP,
            "esp" => Protocol::ESP,
            "icmpv6" | "ipv6-icmp" => Protocol::ICMPV6,
            "sctp" => Protocol::SCTP,
            "dccp" => Protocol::DCCP,
            "udplite" | "udp-lite" => Protocol::UDPLITE,
            other => Protocol(other.parse::<u8>().map_err(|_| format!("{s:?} is not a protocol: use tcp, udp, icmp, icmpv6, esp, sctp, dccp, udplite or a number 0-255"))?),
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("icmp"),
            6 => f.write_str("tcp"),
            17 => f.write_str("udp"),
            50 => f.write_str("esp"),
            58 => f.write_str("icmpv6"),
            132 => f.write_str("sctp"),
            33 => f.write_str("dccp"),
            136 => f.write_str("udplite"),
            n => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => u8::try_from(n).map(Protocol).map_err(|_| {
                serde::de::Error::custom(format!("{n} is not a protocol number (0-255)"))
            }),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What a rule does with the flows it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stateless pass-through: forwarded untouched, no TCP state checked,
    /// picked up mid-stream.
    Bypass,
    /// The default for TCP: the full proxy (until it exists, tracked
    /// pass-through).
    Proxy,
    /// Every frame of the flow is dropped, and counted.
    Drop,
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        match s {
            "bypass" => Ok(Action::Bypass),
            "proxy" => Ok(Action::Proxy),
            "drop" => Ok(Action::Drop),
            _ => Err(format!("{s:?} is not an action: use bypass, proxy or drop")),
        }
    }
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Bypass => "bypass",
            Action::Proxy => "proxy",
            Action::Drop => "drop",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the proxy does with a flow that stalls: a peer left a hole in its
/// stream and does not fill it (issue 4). Only proxied flows stall, so only
/// rules with action proxy take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StallAction {
    /// Keep waiting for the missing bytes, as the ASA does; the stall is
    /// counted and the flow left alone.
    Wait,
    /// Reset both legs, so both ends see the failure at once.
    Reset,
    /// Hand the flow over to pass-through, so a peer that never retransmits
    /// can go on.
    Bypass,
}

impl FromStr for StallAction {
    type Err = String;
    fn from_str(s: &str) -> Result<StallAction, String> {
        match s {
            "wait" => Ok(StallAction::Wait),
            "reset" => Ok(StallAction::Reset),
            "bypass" => Ok(StallAction::Bypass),
            _ => Err(format!(
                "{s:?} is not a stall action: use wait, reset or bypass"
            )),
        }
    }
}

impl fmt::Display for StallAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StallAction::Wait => "wait",
            StallAction::Reset => "reset",
            StallAction::Bypass => "bypass",
        })
    }
}

/// What a rule's connection limits do to a new flow past one of them (`--on-limit`), as the
/// ASA's `set connection conn-max / embryonic-conn-max / per-client-max` refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// Refuse it: its SYN is answered with a RST, and no entry is kept for it.
    Reset,
    /// Forward it unproxied for its whole life (fail open).
    Bypass,
}

impl FromStr for LimitAction {
    type Err = String;
    fn from_str(s: &str) -> Result<LimitAction, String> {
        match s {
            "reset" => Ok(LimitAction::Reset),
            "bypass" => Ok(LimitAction::Bypass),
            _ => Err(format!("{s:?} is not a limit action: use reset or bypass")),
        }
    }
}

impl fmt::Display for LimitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitAction::Reset => "reset",
            LimitAction::Bypass => "bypass",
        })
    }
}

/// Largest `conn_max` and `embryonic_max`: the flow table's largest capacity.
pub const MAX_CONN_LIMIT: u32 = 16_777_216;
/// Largest `per_client_max` (counted in 16 bits per client bucket).
pub const MAX_PER_CLIENT_LIMIT: u32 = 65_535;

/// What a proxied flow is watched for from its first payload: a protocol
/// that looks like TCP but cannot be proxied, which then passes through
/// (issue 5). Rules without it get the daemon's default by port
/// (`proxy.detect_ipsec_over_tcp_ports`, TCP/10000 unless configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detect {
    /// IPsec over TCP: Cisco cTCP, RFC 8229, length-framed IKE/ESP.
    IpsecOverTcp,
    /// Nothing: the flow stays proxied whatever it carries.
    Off,
}

impl FromStr for Detect {
    type Err = String;
    fn from_str(s: &str) -> Result<Detect, String> {
        match s {
            "ipsec-over-tcp" => Ok(Detect::IpsecOverTcp),
            "off" => Ok(Detect::Off),
            _ => Err(format!(
                "{s:?} is not a detection: use ipsec-over-tcp or off"
            )),
        }
    }
}

impl fmt::Display for Detect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Detect::IpsecOverTcp => "ipsec-over-tcp",
            Detect::Off => "off",
        })
    }
}

/// What a rule matches. An absent field matches anything. Source and
/// destination are as seen in the flow's first frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<PortSide>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// In the words of `tollgatectl`'s options: `proto tcp dst-port 10000`, or
/// `any` for a match on everything.
impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.proto {
            parts.push(format!("proto {p}"));
        }
        if let Some(p) = self.src {
            parts.push(format!("src {p}"));
        }
        if let Some(p) = self.src_port {
            parts.push(format!("src-port {p}"));
        }
        if let Some(p) = self.dst {
            parts.push(format!("dst {p}"));
        }
        if let Some(p) = self.dst_port {
            parts.push(format!("dst-port {p}"));
        }
        if let Some(i) = self.ingress {
            parts.push(format!("ingress {i}"));
        }
        if let Some(v) = self.vlan {
            parts.push(format!("vlan {v}"));
        }
        if parts.is_empty() {
            f.write_str("any")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// A rule as written by an operator, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(rename = "match", default)]
    pub matches: Match,
    pub action: Action,
    /// Idle timeout of flows this rule matches, replacing the protocol's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// What a stall does to flows this rule proxies; absent, the daemon's
    /// default. Only with action proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stall: Option<StallAction>,
    /// What flows this rule proxies are watched for; absent, the daemon's
    /// default by port. Only with action proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<Detect>,
    /// Most connections this rule proxies at once, over all workers. Only with action proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_max: Option<u32>,
    /// Most of them in their handshakes at once (embryonic: the server has not answered yet,
    /// or the client has not completed its side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embryonic_max: Option<u32>,
    /// Most of them from one client address at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client_max: Option<u32>,
    /// What a new flow past one of those limits gets; absent, reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<LimitAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A rule in the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: u32,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

impl RuleSpec {
    /// Checks what types alone cannot, naming the field at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let m = &self.matches;
        if let (Some(s), Some(d)) = (m.src, m.dst) {
            if s.addr.is_ipv4() != d.addr.is_ipv4() {
                return Err(invalid("match.dst", format!("{d} and match.src {s} are of different address families: no flow can match both")));
            }
        }
        if m.src_port.is_some() || m.dst_port.is_some() {
            match m.proto {
                Some(p) if p.has_ports() => {}
                Some(p) => {
                    return Err(invalid(
                        "match.proto",
                        format!("{p} has no ports: drop the port match or use tcp, udp, sctp, dccp or udplite"),
                    ))
                }
                None => {
                    return Err(invalid(
                        "match.proto",
                        "a port match needs a protocol with ports (tcp, udp, sctp, dccp, udplite)",
                    ))
                }
            }
        }
        if let Some(v) = m.vlan {
            if v == 0 || v > 4094 {
                return Err(invalid(
                    "match.vlan",
                    format!("{v} is not a VLAN id (1-4094)"),
                ));
            }
        }
        if let Some(t) = self.idle_timeout_secs {
            if t == 0 || t > 7 * 24 * 3600 {
                return Err(invalid(
                    "idle_timeout_secs",
                    format!("{t} is outside 1..=604800 seconds"),
                ));
            }
        }
        if self.on_stall.is_some() && self.action != Action::Proxy {
            return Err(invalid(
                "on_stall",
                format!(
                    "only proxied flows stall; this rule's action is {}: drop on_stall or use action proxy",
                    self.action
                ),
            ));
        }
        if self.detect.is_some() && self.action != Action::Proxy {
            return Err(invalid(
                "detect",
                format!(
                    "detection watches proxied flows; this rule's action is {}: drop detect or use action proxy",
                    self.action
                ),
            ));
        }
        self.validate_limits()?;
        for (field, text) in [("name", &self.name), ("comment", &self.comment)] {
            if let Some(t) = text {
                if t.len() > MAX_TEXT {
                    return Err(invalid(
                        field,
                        format!("is {} bytes; at most {MAX_TEXT}", t.len()),
                    ));
                }
                if t.chars().any(char::is_control) {
                    return Err(invalid(field, "contains control characters"));
                }
            }
        }
        Ok(())
    }

    /// Whether the rule sets any connection limit.
    pub fn has_limits(&self) -> bool {
        self.conn_max.is_some() || self.embryonic_max.is_some() || self.per_client_max.is_some()
    }

    /// The action past a limit, the default (reset) when the rule does not say.
    pub fn limit_action(&self) -> LimitAction {
        self.on_limit.unwrap_or(LimitAction::Reset)
    }

    fn validate_limits(&self) -> Result<(), PolicyError> {
        let limits = [
            ("conn_max", self.conn_max, MAX_CONN_LIMIT),
            ("embryonic_max", self.embryonic_max, MAX_CONN_LIMIT),
            ("per_client_max", self.per_client_max, MAX_PER_CLIENT_LIMIT),
        ];
        for (field, value, max) in limits {
            let Some(n) = value else { continue };
            if n == 0 || n > max {
                return Err(invalid(field, format!("{n} is outside 1..={max}")));
            }
            if self.action != Action::Proxy {
                return Err(invalid(
                    field,
                    format!(
                        "connection limits count the connections a rule proxies; this rule's action is {}: drop {field} or use action proxy",
                        self.action
                    ),
                ));
            }
        }
        if let Some(conn_max) = self.conn_max {
            for (field, value) in [
                ("embryonic_max", self.embryonic_max),
                ("per_client_max", self.per_client_max),
            ] {
                if let Some(n) = value.filter(|&n| n > conn_max) {
                    return Err(invalid(
                        field,
                        format!("{n} is above conn_max {conn_max}, which it counts among, so it could never be reached: lower it or raise conn_max"),
                    ));
                }
            }
        }
        if self.on_limit.is_some() && !self.has_limits() {
            return Err(invalid(
                "on_limit",
                "the rule sets no limit to act on: add conn_max, embryonic_max or per_client_max, or drop on_limit",
            ));
        }
        Ok(())
    }

    /// Does this rule match a flow? (The reference semantics the compiled
    /// classifier must agree with.)
    pub fn matches(&self, flow: &FlowFields) -> bool {
        let m = &self.matches;
        m.proto.is_none_or(|p| p.0 == flow.proto)
            && m.src.is_none_or(|p| p.contains(flow.src))
            && m.dst.is_none_or(|p| p.contains(flow.dst))
            && m.src_port.is_none_or(|r| r.contains(flow.src_port))
            && m.dst_port.is_none_or(|r| r.contains(flow.dst_port))
            && m.ingress.is_none_or(|i| i == flow.ingress)
            && m.vlan.is_none_or(|v| flow.vlan == Some(v))
    }
}

/// What classification looks at: a flow's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFields {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ingress: PortSide,
    pub vlan: Option<u16>,
}

/// The ordered rule list. Ids are never reused within a set's lifetime, so a
/// flow's rule id always names the rule that matched it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    pub rules: Vec<Rule>,
    pub next_id: u32,
}

impl PolicySet {
    fn allocate_id(&mut self) -> u32 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Appends a rule; returns its id.
    pub fn add(&mut self, spec: RuleSpec) -> Result<u32, PolicyError> {
        self.insert(self.rules.len(), spec)
    }

    /// Inserts a rule at `position` (0 = first, evaluated before all others).
    pub fn insert(&mut self, position: usize, spec: RuleSpec) -> Result<u32, PolicyError> {
        spec.validate()?;
        if self.rules.len() >= MAX_RULES {
            return Err(PolicyError::Full);
        }
        if position > self.rules.len() {
            return Err(invalid(
                "position",
                format!(
                    "{position} is past the end of the {} rules",
                    self.rules.len()
                ),
            ));
        }
        // Only a hand-edited state file gets here: ids are never reused, so none is left.
        if self.next_id == u32::MAX {
            return Err(invalid(
                "next_id",
                "every rule id has been used: replace the policy to start again from 1",
            ));
        }
        let id = self.allocate_id();
        self.rules.insert(position, Rule { id, spec });
        Ok(id)
    }

    pub fn delete(&mut self, id: u32) -> Result<Rule, PolicyError> {
        let at = self
            .rules
            .iter()
            .position(|r| r.id == id)
            .ok_or(PolicyError::NoSuchRule(id))?;
        Ok(self.rules.remove(at))
    }

    /// Replaces every rule, all or nothing: the first invalid rule (by
    /// position) stops the replacement and nothing changes.
    pub fn replace(&mut self, specs: Vec<RuleSpec>) -> Result<(), PolicyError> {
        let mut next = self.clone();
        next.rules.clear();
        if next.next_id == u32::MAX {
            next.next_id = 1;
        }
        Self::check(&specs)?;
        for spec in specs {
            next.add(spec)?;
        }
        *self = next;
        Ok(())
    }

    /// Validates a whole rule list without applying it.
    pub fn check(specs: &[RuleSpec]) -> Result<(), PolicyError> {
        if specs.len() > MAX_RULES {
            return Err(PolicyError::Full);
        }
        for (i, spec) in specs.iter().enumerate() {
            spec.validate().map_err(|e| match e {
                PolicyError::Invalid { field, message } => invalid(
                    format!(
                        "rule {} ({}): {field}",
                        i + 1,
                        spec.name.as_deref().unwrap_or("unnamed")
                    ),
                    message,
                ),
                other => other,
            })?;
        }
        Ok(())
    }

    /// The first rule that matches, by the reference semantics.
    pub fn first_match(&self, flow: &FlowFields) -> Option<&Rule> {
        self.rules.iter().find(|r| r.spec.matches(flow))
    }
}

/// Hit counters of one rule, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDefaults {
    pub tcp: Action,
    pub udp: Action,
    pub other: Action,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_up_ids_refuse_a_new_rule_and_a_replace_starts_again() {
        let spec: RuleSpec =
            serde_json::from_str(r#"{"match":{"proto":"tcp","dst_port":10000},"action":"bypass"}"#)
                .unwrap();
        let mut set = PolicySet {
            rules: Vec::new(),
            next_id: u32::MAX,
        };
        let err = set.add(spec.clone()).unwrap_err().to_string();
        assert!(
            err.starts_with("next_id: every rule id has been used"),
            "{err}"
        );
        assert!(set.rules.is_empty());
        set.replace(vec![spec]).unwrap();
        assert_eq!(set.rules[0].id, 1);
    }

    fn spec(json: &str) -> RuleSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn prefixes_parse_and_refuse_host_bits() {
        let p: Prefix = "198.18.0.0/15".parse().unwrap();
        assert!(p.contains("198.19.255.1".parse().unwrap()));
        assert!(!p.contains("198.20.0.1".parse().unwrap()));
        assert!(!p.contains("2001:2::1".parse().unwrap()));
        assert!("198.18.0.1/15"
            .parse::<Prefix>()
            .unwrap_err()
            .contains("host bits"));
        assert!("2001:2::/129".parse::<Prefix>().is_err());
        assert_eq!("2001:2::1".parse::<Prefix>().unwrap().len, 128);
        let any: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn ports_and_protocols_parse() {
        assert_eq!(
            "1024-65535".parse::<PortRange>().unwrap(),
            PortRange {
                first: 1024,
                last: 65535
            }
        );
        assert!("70000".parse::<PortRange>().is_err());
        assert!("9-1".parse::<PortRange>().is_err());
        assert_eq!("TCP".parse::<Protocol>().unwrap(), Protocol::TCP);
        assert_eq!("47".parse::<Protocol>().unwrap(), Protocol(47));
        assert!("tcpp".parse::<Protocol>().is_err());
        // Every protocol with ports goes by its name, both ways.
        for (name, number) in [("dccp", 33), ("udplite", 136), ("sctp", 132)] {
            let p = name.parse::<Protocol>().unwrap();
            assert_eq!(p, Protocol(number));
            assert!(p.has_ports());
            assert_eq!(p.to_string(), name);
            let rule =
                format!(r#"{{"match":{{"proto":"{name}","dst_port":5004}},"action":"bypass"}}"#);
            spec(&rule).validate().unwrap();
        }
    }

    #[test]
    fn rules_round_trip_as_json() {
        let s = spec(
            r#"{"match":{"proto":"tcp","dst_port":10000,"dst":"198.18.0.0/15"},"action":"bypass","name":"ctcp"}"#,
        );
        assert_eq!(s.matches.dst_port, Some(PortRange::single(10000)));
        let mut set = PolicySet::default();
        let id = set.add(s).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        let back: PolicySet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.rules[0].id, id);
    }

    #[test]
    fn invalid_rules_name_the_field() {
        let e = spec(r#"{"match":{"dst_port":"80"},"action":"drop"}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("match.proto"), "{e}");
        let e = spec(r#"{"match":{"proto":"icmp","dst_port":"80"},"action":"drop"}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("has no ports"), "{e}");
        let e = spec(r#"{"match":{"src":"198.18.0.0/15","dst":"2001:2::/48"},"action":"drop"}"#)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("address families"), "{e}");
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"match":{"prot":"tcp"},"action":"drop"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<RuleSpec>(r#"{"action":"allow"}"#).is_err());
    }

    #[test]
    fn detect_is_for_proxied_flows_only() {
        let s = spec(r#"{"match":{"proto":"tcp"},"action":"proxy","detect":"ipsec-over-tcp"}"#);
        assert_eq!(s.detect, Some(Detect::IpsecOverTcp));
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""detect":"ipsec-over-tcp""#), "{json}");
        let plain = spec(r#"{"action":"proxy"}"#);
        assert!(!serde_json::to_string(&plain).unwrap().contains("detect"));
        let e = spec(r#"{"action":"bypass","detect":"off"}"#)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "detect: detection watches proxied flows; this rule's action is bypass: drop detect or use action proxy"
        );
        assert!(serde_json::from_str::<RuleSpec>(r#"{"action":"proxy","detect":"ssh"}"#).is_err());
        for d in [Detect::IpsecOverTcp, Detect::Off] {
            assert_eq!(d.to_string().parse::<Detect>().unwrap(), d);
        }
        assert!("IPsec"
            .parse::<Detect>()
            .unwrap_err()
            .contains("ipsec-over-tcp or off"));
    }

    #[test]
    fn on_stall_is_for_proxied_flows_only() {
        let s = spec(r#"{"match":{"proto":"tcp"},"action":"proxy","on_stall":"bypass"}"#);
        assert_eq!(s.on_stall, Some(StallAction::Bypass));
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""on_stall":"bypass""#), "{json}");
        // Absent, it is not written, so older readers see the same rule.
        let plain = spec(r#"{"action":"proxy"}"#);
        assert_eq!(plain.on_stall, None);
        assert!(!serde_json::to_string(&plain).unwrap().contains("on_stall"));
        for action in ["bypass", "drop"] {
            let e = spec(&format!(r#"{{"action":"{action}","on_stall":"wait"}}"#))
                .validate()
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("on_stall: only proxied flows stall; this rule's action is {action}: drop on_stall or use action proxy")
            );
        }
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"action":"proxy","on_stall":"retry"}"#).is_err()
        );
        for a in [StallAction::Wait, StallAction::Reset, StallAction::Bypass] {
            assert_eq!(a.to_string().parse::<StallAction>().unwrap(), a);
        }
        assert_eq!(
            "Wait".parse::<StallAction>().unwrap_err(),
            "\"Wait\" is not a stall action: use wait, reset or bypass"
        );
    }

    #[test]
    fn connection_limits_round_trip_and_are_checked() {
        let s = spec(
            r#"{"match":{"proto":"tcp","dst_port":80},"action":"proxy","conn_max":3,"embryonic_max":2,"per_client_max":1,"on_limit":"bypass"}"#,
        );
        s.validate().unwrap();
        assert_eq!(
            (s.conn_max, s.embryonic_max, s.per_client_max),
            (Some(3), Some(2), Some(1))
        );
        assert_eq!(s.limit_action(), LimitAction::Bypass);
        assert!(s.has_limits());
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(
                r#""conn_max":3,"embryonic_max":2,"per_client_max":1,"on_limit":"bypass""#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RuleSpec>(&json).unwrap(), s);
        // Absent, nothing is written, and a limit alone resets.
        let plain = spec(r#"{"action":"proxy"}"#);
        assert!(!plain.has_limits());
        assert!(!serde_json::to_string(&plain).unwrap().contains("max"));
        assert_eq!(
            spec(r#"{"action":"proxy","per_client_max":5}"#).limit_action(),
            LimitAction::Reset
        );

        let error = |json: &str| spec(json).validate().unwrap_err().to_string();
        assert_eq!(
            error(r#"{"action":"bypass","conn_max":3}"#),
            "conn_max: connection limits count the connections a rule proxies; this rule's action is bypass: drop conn_max or use action proxy"
        );
        assert_eq!(
            error(r#"{"action":"drop","per_client_max":3}"#),
            "per_client_max: connection limits count the connections a rule proxies; this rule's action is drop: drop per_client_max or use action proxy"
        );
        assert_eq!(
            error(r#"{"action":"proxy","conn_max":0}"#),
            "conn_max: 0 is outside 1..=16777216"
        );
        assert_eq!(
            error(r#"{"action":"proxy","embryonic_max":16777217}"#),
            "embryonic_max: 16777217 is outside 1..=16777216"
        );
        assert_eq!(
            error(r#"{"action":"proxy","per_client_max":65536}"#),
            "per_client_max: 65536 is outside 1..=65535"
        );
        assert_eq!(
            error(r#"{"action":"proxy","conn_max":3,"embryonic_max":4}"#),
            "embryonic_max: 4 is above conn_max 3, which it counts among, so it could never be reached: lower it or raise conn_max"
        );
        assert!(
            error(r#"{"action":"proxy","conn_max":3,"per_client_max":4}"#)
                .starts_with("per_client_max: 4 is above conn_max 3")
        );
        assert_eq!(
            error(r#"{"action":"proxy","on_limit":"reset"}"#),
            "on_limit: the rule sets no limit to act on: add conn_max, embryonic_max or per_client_max, or drop on_limit"
        );
        assert!(serde_json::from_str::<RuleSpec>(r#"{"action":"proxy","conn_max":-1}"#).is_err());
        assert!(serde_json::from_str::<RuleSpec>(
            r#"{"action":"proxy","conn_max":1,"on_limit":"drop"}"#
        )
        .is_err());
        for a in [LimitAction::Reset, LimitAction::Bypass] {
            assert_eq!(a.to_string().parse::<LimitAction>().unwrap(), a);
        }
        assert_eq!(
            "drop".parse::<LimitAction>().unwrap_err(),
            "\"drop\" is not a limit action: use reset or bypass"
        );
        // A set with an invalid limit is refused whole, naming the rule.
        let e = PolicySet::check(&[spec(r#"{"action":"bypass","name":"web","conn_max":1}"#)])
            .unwrap_err();
        assert!(e.to_string().starts_with("rule 1 (web): conn_max:"), "{e}");
    }

    #[test]
    fn ids_are_never_reused_and_order_is_kept() {
        let mut set = PolicySet::default();
        let a = set.add(spec(r#"{"action":"drop"}"#)).unwrap();
        let b = set.insert(0, spec(r#"{"action":"bypass"}"#)).unwrap();
        assert_eq!(
            set.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![b, a]
        );
        set.delete(b).unwrap();
        let c = set.add(spec(r#"{"action":"proxy"}"#)).unwrap();
        assert!(c > b);
        assert_eq!(set.delete(999).unwrap_err(), PolicyError::NoSuchRule(999));
    }

    #[test]
    fn replace_is_all_or_nothing() {
        let mut set = PolicySet::default();
        set.add(spec(r#"{"action":"drop"}"#)).unwrap();
        let before = set.clone();
        let bad = vec![
            spec(r#"{"action":"bypass"}"#),
            spec(r#"{"match":{"vlan":5000},"action":"bypass","name":"second"}"#),
        ];
        let e = set.replace(bad).unwrap_err();
        assert!(e.to_string().contains("rule 2 (second): match.vlan"), "{e}");
        assert_eq!(set, before);
        set.replace(vec![spec(r#"{"action":"bypass"}"#)]).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].spec.action, Action::Bypass);
    }

    #[test]
    fn first_match_follows_order() {
        let mut set = PolicySet::default();
        set.add(spec(
            r#"{"match":{"proto":"tcp","dst_port":"10000"},"action":"bypass"}"#,
        ))
        .unwrap();
        set.add(spec(r#"{"match":{"proto":"tcp"},"action":"drop"}"#))
            .unwrap();
        let mut f = FlowFields {
            proto: 6,
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            src_port: 40000,
            dst_port: 10000,
            ingress: PortSide::Inside,
            vlan: None,
        };
        assert_eq!(set.first_match(&f).unwrap().spec.action, Action::Bypass);
        f.dst_port = 80;
        assert_eq!(set.first_match(&f).unwrap().spec.action, Action::Drop);
        f.proto = 17;
        assert!(set.first_match(&f).is_none());
    }
}
