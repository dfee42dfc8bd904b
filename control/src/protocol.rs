//! The control protocol: newline-delimited JSON over a Unix stream socket, one
//! request per line and one reply line per request, versioned so clients and
//! daemons of different releases fail clearly rather than misunderstand.
//!
//! ```text
//! {"version":1,"op":"policy.add","rule":{"match":{"proto":"tcp","dst_port":10000},"action":"bypass"}}
//! {"version":1,"ok":true,"result":{"id":1,"generation":2,"in_force_us":140}}
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::policy::{Action, FlowFields, PortSide, Protocol, Rule, RuleSpec};
use crate::stats::{LimitCounters, StatsSnapshot};

// What the workers report, as the core defines it.
pub use tollgate_core::detect::IpsecFraming;
pub use tollgate_core::flow::view::{
    ClearCounts, FilterError, FlowFilter, FlowTcpState, FlowView, FlowsClearReply, HandedOver,
    KeptFlow, KeptReason, LegView, ProxyFlowView, MAX_KEPT_LISTED,
};
pub use tollgate_core::policy::{PolicyDefaults, RuleHits};
pub use tollgate_core::proxy::LimitNow;
pub use tollgate_core::tcp::endpoint::State as LegState;
pub use tollgate_core::tcp::proxy::ProxyState;

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request or reply line, newline included.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most flows one `flows.list` page returns.
pub const MAX_PAGE_SIZE: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// Echoed in the reply, for clients that pipeline requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Op {
    /// Appends a rule (or inserts it at `position`, 0 = first).
    #[serde(rename = "policy.add")]
    PolicyAdd {
        rule: RuleSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
        /// Also switch live flows the rule matches (by default, as on an ASA,
        /// a new rule applies to new flows only).
        #[serde(default)]
        apply_existing: bool,
    },
    #[serde(rename = "policy.delete")]
    PolicyDelete { id: u32 },
    #[serde(rename = "policy.list")]
    PolicyList {},
    /// Replaces the whole rule list atomically: all or nothing.
    #[serde(rename = "policy.replace")]
    PolicyReplace {
        rules: Vec<RuleSpec>,
        #[serde(default)]
        apply_existing: bool,
    },
    /// Validates a rule list without applying it.
    #[serde(rename = "policy.check")]
    PolicyCheck { rules: Vec<RuleSpec> },
    /// Which rule a flow would match and what tollgate would do with it.
    #[serde(rename = "explain")]
    Explain(ExplainQuery),
    #[serde(rename = "flows.list")]
    FlowsList {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default)]
        page: u32,
        #[serde(default = "default_page_size")]
        page_size: u32,
    },
    /// Clears the flows the filter selects: proxied connections are reset at both ends (or
    /// handed over to pass-through with `hand_over`), other flows' entries are forgotten.
    #[serde(rename = "flows.clear")]
    FlowsClear {
        #[serde(default)]
        filter: FlowFilter,
        /// Hand proxied connections over to pass-through, where their endpoints carry on
        /// unproxied, instead of resetting them.
        #[serde(default, skip_serializing_if = "is_false")]
        hand_over: bool,
    },
    #[serde(rename = "stats")]
    Stats {},
    #[serde(rename = "health")]
    Health {},
    #[serde(rename = "version")]
    Version {},
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_page_size() -> u32 {
    1000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub proto: Protocol,
    /// The flow's first frame: its source and destination (port 0 for
    /// protocols without ports).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    #[serde(default = "default_ingress")]
    pub ingress: PortSide,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

impl ExplainQuery {
    /// The flow this query describes, as the classifier sees it.
    pub fn flow_fields(&self) -> FlowFields {
        FlowFields {
            proto: self.proto.0,
            src: self.src.ip(),
            dst: self.dst.ip(),
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            ingress: self.ingress,
            vlan: self.vlan,
        }
    }
}

fn default_ingress() -> PortSide {
    PortSide::Inside
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a request this daemon understands.
    BadRequest,
    UnsupportedVersion,
    TooLarge,
    /// A rule or query that fails validation.
    Invalid,
    NotFound,
    PermissionDenied,
    /// The daemon could not answer in time (e.g. a worker is stuck).
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Every reply a daemon sends, one variant per reply type. Which operation gets which is
/// declared once, in [`Op::reply_kind`], for the daemon that sends replies and the clients that
/// read them; on the wire a reply is its variant's object alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `policy.add`, `policy.delete`, `policy.replace`.
    PolicyChange(PolicyChangeReply),
    PolicyList(PolicyListReply),
    PolicyCheck(PolicyCheckReply),
    Explain(ExplainReply),
    FlowsList(FlowsListReply),
    FlowsClear(FlowsClearReply),
    Stats(Box<StatsReply>),
    Health(HealthReply),
    Version(VersionReply),
}

/// The type of a [`Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    PolicyChange,
    PolicyList,
    PolicyCheck,
    Explain,
    FlowsList,
    FlowsClear,
    Stats,
    Health,
    Version,
}

impl Op {
    /// The type of the reply this operation gets.
    pub fn reply_kind(&self) -> ReplyKind {
        match self {
            Op::PolicyAdd { .. } | Op::PolicyDelete { .. } | Op::PolicyReplace { .. } => {
                ReplyKind::PolicyChange
            }
            Op::PolicyList {} => ReplyKind::PolicyList,
            Op::PolicyCheck { .. } => ReplyKind::PolicyCheck,
            Op::Explain(_) => ReplyKind::Explain,
            Op::FlowsList { .. } => ReplyKind::FlowsList,
            Op::FlowsClear { .. } => ReplyKind::FlowsClear,
            Op::Stats {} => ReplyKind::Stats,
            Op::Health {} => ReplyKind::Health,
            Op::Version {} => ReplyKind::Version,
        }
    }
}

impl Reply {
    pub fn kind(&self) -> ReplyKind {
        match self {
            Reply::PolicyChange(_) => ReplyKind::PolicyChange,
            Reply::PolicyList(_) => ReplyKind::PolicyList,
            Reply::PolicyCheck(_) => ReplyKind::PolicyCheck,
            Reply::Explain(_) => ReplyKind::Explain,
            Reply::FlowsList(_) => ReplyKind::FlowsList,
            Reply::FlowsClear(_) => ReplyKind::FlowsClear,
            Reply::Stats(_) => ReplyKind::Stats,
            Reply::Health(_) => ReplyKind::Health,
            Reply::Version(_) => ReplyKind::Version,
        }
    }

    /// A successful reply's `result`, read as the type `kind` says.
    pub fn read(kind: ReplyKind, result: serde_json::Value) -> Result<Reply, serde_json::Error> {
        use serde_json::from_value;
        Ok(match kind {
            ReplyKind::PolicyChange => Reply::PolicyChange(from_value(result)?),
            ReplyKind::PolicyList => Reply::PolicyList(from_value(result)?),
            ReplyKind::PolicyCheck => Reply::PolicyCheck(from_value(result)?),
            ReplyKind::Explain => Reply::Explain(from_value(result)?),
            ReplyKind::FlowsList => Reply::FlowsList(from_value(result)?),
            ReplyKind::FlowsClear => Reply::FlowsClear(from_value(result)?),
            ReplyKind::Stats => Reply::Stats(from_value(result)?),
            ReplyKind::Health => Reply::Health(from_value(result)?),
            ReplyKind::Version => Reply::Version(from_value(result)?),
        })
    }
}

macro_rules! reply_types {
    ($($variant:ident($type:ty)),* $(,)?) => {
        $(impl From<$type> for Reply {
            fn from(reply: $type) -> Reply {
                Reply::$variant(reply)
            }
        }

        impl TryFrom<Reply> for $type {
            type Error = Reply;
            fn try_from(reply: Reply) -> Result<$type, Reply> {
                match reply {
                    Reply::$variant(reply) => Ok(reply),
                    other => Err(other),
                }
            }
        })*
    };
}

reply_types!(
    PolicyChange(PolicyChangeReply),
    PolicyList(PolicyListReply),
    PolicyCheck(PolicyCheckReply),
    Explain(ExplainReply),
    FlowsList(FlowsListReply),
    FlowsClear(FlowsClearReply),
    Health(HealthReply),
    Version(VersionReply),
);

impl From<StatsReply> for Reply {
    fn from(reply: StatsReply) -> Reply {
        Reply::Stats(Box::new(reply))
    }
}

impl TryFrom<Reply> for StatsReply {
    type Error = Reply;
    fn try_from(reply: Reply) -> Result<StatsReply, Reply> {
        match reply {
            Reply::Stats(reply) => Ok(*reply),
            other => Err(other),
        }
    }
}

impl Response {
    /// A success: only a declared [`Reply`] can be sent.
    pub fn ok(seq: Option<u64>, reply: impl Into<Reply>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            seq,
            ok: true,
            result: Some(serde_json::to_value(reply.into()).unwrap_or(serde_json::Value::Null)),
            error: None,
        }
    }

    pub fn error(seq: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            seq,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    /// The result as a typed value, or the daemon's error.
    pub fn into_result<T: for<'de> Deserialize<'de>>(self) -> Result<T, ErrorBody> {
        match (self.ok, self.result, self.error) {
            (true, Some(v), _) => serde_json::from_value(v).map_err(|e| ErrorBody {
                code: ErrorCode::BadRequest,
                message: format!("unexpected reply from the daemon: {e}"),
            }),
            (_, _, Some(e)) => Err(e),
            _ => Err(ErrorBody {
                code: ErrorCode::Internal,
                message: "the daemon's reply has neither a result nor an error".into(),
            }),
        }
    }
}

/// Parses one request line, checking size and version first so that a client
/// of another release gets "unsupported version" rather than a parse error.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(Response::error(
            None,
            ErrorCode::TooLarge,
            format!("request is longer than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        Response::error(None, ErrorCode::BadRequest, format!("not valid JSON: {e}"))
    })?;
    let seq = value.get("seq").and_then(serde_json::Value::as_u64);
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        Some(v) => {
            return Err(Response::error(
                seq,
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported; this daemon speaks version {PROTOCOL_VERSION}"),
            ))
        }
        None => return Err(Response::error(seq, ErrorCode::BadRequest, "the request has no \"version\" number")),
    }
    serde_json::from_value(value).map_err(|e| {
        Response::error(
            seq,
            ErrorCode::BadRequest,
            format!("not a valid request: {e}"),
        )
    })
}

/// One line of JSON, newline included.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

// Replies, by operation.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    #[serde(flatten)]
    pub rule: Rule,
    pub hits: RuleHits,
    /// The rule's connection limits at work, for a rule that sets any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_counters: Option<LimitCounters>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyListReply {
    pub generation: u64,
    pub rules: Vec<RuleView>,
    /// What flows matching no rule get, per protocol.
    pub defaults: PolicyDefaults,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyChangeReply {
    /// The new rule's id (policy.add).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    pub generation: u64,
    /// Microseconds from the request until every worker used the new policy.
    pub in_force_us: u64,
    /// Live flows switched to the new policy (with apply_existing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows_switched: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyCheckReply {
    pub rules: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainReply {
    pub action: Action,
    /// The rule that matched, or None when the protocol default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// In words: "rule 3 (ctcp) matches: bypass" or "no rule matches: the default for tcp is proxy".
    pub explanation: String,
    /// The matching rule's connection limits as they stand now, for this flow's client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitNow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsListReply {
    /// Flows matching the filter, over all workers.
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    pub flows: Vec<FlowView>,
}

/// How tollgate is doing, as `health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every worker answered and both links are up.
    Ok,
    /// A worker did not answer, or a link is down.
    Degraded,
}

impl HealthStatus {
    pub fn name(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    pub status: HealthStatus,
    pub workers: usize,
    pub workers_responding: usize,
    pub links_up: Vec<(String, bool)>,
    pub uptime_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReply {
    pub tollgate: String,
    pub protocol: u32,
    pub dpdk: String,
}

/// The stats reply is the same snapshot the stats file holds.
pub type StatsReply = StatsSnapshot;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let ops = vec![
            Op::PolicyAdd {
                rule: serde_json::from_str(
                    r#"{"match":{"proto":"tcp","dst_port":10000},"action":"bypass"}"#,
                )
                .unwrap(),
                position: None,
                apply_existing: true,
            },
            Op::PolicyDelete { id: 4 },
            Op::PolicyList {},
            Op::PolicyReplace {
                rules: vec![],
                apply_existing: false,
            },
            Op::PolicyCheck { rules: vec![] },
            Op::Explain(ExplainQuery {
                proto: Protocol::TCP,
                src: "198.18.0.1:40000".parse().unwrap(),
                dst: "198.18.0.2:10000".parse().unwrap(),
                ingress: PortSide::Inside,
                vlan: None,
            }),
            Op::FlowsList {
                filter: FlowFilter {
                    port: Some(5201),
                    ..Default::default()
                },
                page: 2,
                page_size: 50,
            },
            Op::FlowsClear {
                filter: FlowFilter::default(),
                hand_over: false,
            },
            Op::FlowsClear {
                filter: FlowFilter {
                    proto: Some(Protocol::TCP),
                    src: Some("198.18.0.2:8081".parse().unwrap()),
                    dst: Some("198.18.0.1:46586".parse().unwrap()),
                    ..Default::default()
                },
                hand_over: true,
            },
            Op::Stats {},
            Op::Health {},
            Op::Version {},
        ];
        for op in ops {
            let req = Request {
                version: PROTOCOL_VERSION,
                seq: Some(9),
                op,
            };
            let line = encode(&req);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode_request(&line[..line.len() - 1]).unwrap(), req);
        }
    }

    #[test]
    fn the_wire_form_is_what_socat_users_type() {
        let r = decode_request(br#"{"version":1,"op":"policy.add","rule":{"match":{"proto":"tcp","dst_port":"10000"},"action":"bypass"}}"#).unwrap();
        assert!(matches!(
            r.op,
            Op::PolicyAdd {
                apply_existing: false,
                ..
            }
        ));
        let r = decode_request(br#"{"version":1,"op":"flows.list"}"#).unwrap();
        assert_eq!(
            r.op,
            Op::FlowsList {
                filter: FlowFilter::default(),
                page: 0,
                page_size: 1000
            }
        );
    }

    #[test]
    fn bad_requests_get_the_right_error() {
        let code = |line: &[u8]| decode_request(line).unwrap_err().error.unwrap().code;
        assert_eq!(code(b"{not json"), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"op":"stats"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(br#"{"version":2,"op":"stats"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            code(br#"{"version":1,"op":"reboot"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"version":1,"op":"policy.delete","id":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(br#"{"version":1,"op":"stats","surprise":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            ErrorCode::TooLarge
        );
        let e = decode_request(br#"{"version":7,"seq":3,"op":"stats"}"#).unwrap_err();
        assert_eq!(
            e.seq,
            Some(3),
            "the sequence number is echoed even on errors"
        );
    }

    #[test]
    fn responses_carry_typed_results() {
        let r = Response::ok(
            Some(1),
            FlowsClearReply {
                cleared: 3,
                ..Default::default()
            },
        );
        let line = encode(&r);
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back.into_result::<FlowsClearReply>().unwrap().cleared, 3);
        let e = Response::error(None, ErrorCode::NotFound, "no rule with id 9");
        assert_eq!(
            e.into_result::<FlowsClearReply>().unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    fn endpoints(src: &str, dst: &str) -> FlowFilter {
        FlowFilter {
            src: Some(src.parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn a_connection_is_selected_by_its_endpoints_in_either_direction() {
        let (client, server) = (
            "198.18.0.1:46586".parse().unwrap(),
            "198.18.0.2:8081".parse().unwrap(),
        );
        let other_port = "198.18.0.1:46587".parse().unwrap();
        let tcp = Protocol::TCP;
        let is = |f: &FlowFilter, a, b| f.matches(tcp, a, b, Action::Proxy, None);
        for f in [
            endpoints("198.18.0.1:46586", "198.18.0.2:8081"),
            endpoints("198.18.0.2:8081", "198.18.0.1:46586"),
        ] {
            assert!(is(&f, client, server) && is(&f, server, client));
            assert!(
                !is(&f, other_port, server),
                "another connection of the client's"
            );
        }
        let mut f = endpoints("198.18.0.1:46586", "198.18.0.2:8081");
        f.proto = Some(Protocol::UDP);
        assert!(
            !is(&f, client, server),
            "the same ports over another protocol"
        );
        f.proto = Some(tcp);
        f.mode = Some(Action::Bypass);
        assert!(!is(&f, client, server), "every field given must match");
        let v6 = endpoints("[2001:2::1]:40000", "[2001:2::2]:443");
        assert!(v6.check().is_ok());
        assert!(is(
            &v6,
            "[2001:2::2]:443".parse().unwrap(),
            "[2001:2::1]:40000".parse().unwrap()
        ));
    }

    #[test]
    fn a_filter_that_cannot_name_a_connection_is_refused_with_the_field_at_fault() {
        let field = |f: FlowFilter| f.check().unwrap_err().field;
        let one_end = FlowFilter {
            src: Some("198.18.0.1:40000".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(field(one_end), "dst");
        let other_end = FlowFilter {
            dst: Some("198.18.0.1:40000".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(field(other_end), "src");
        assert_eq!(field(endpoints("198.18.0.1:1", "[2001:2::1]:2")), "dst");
        let mut no_port = endpoints("198.18.0.1:0", "198.18.0.2:443");
        no_port.proto = Some(Protocol::TCP);
        let e = no_port.check().unwrap_err();
        assert_eq!(e.field, "src");
        assert!(e.to_string().contains("tcp flows have ports"), "{e}");
        let mut icmp = endpoints("198.18.0.1:0", "198.18.0.2:7");
        icmp.proto = Some(Protocol::ICMP);
        assert_eq!(field(icmp.clone()), "dst");
        icmp.dst = Some("198.18.0.2:0".parse().unwrap());
        assert!(icmp.check().is_ok());
        assert!(FlowFilter::default().check().is_ok());
        // And on the wire, a filter field the daemon does not know is refused.
        let e =
            decode_request(br#"{"version":1,"op":"flows.clear","filter":{"srcc":"198.18.0.1:1"}}"#)
                .unwrap_err();
        assert_eq!(e.error.unwrap().code, ErrorCode::BadRequest);
    }

    #[test]
    fn clear_replies_add_up_and_an_older_daemons_reply_still_reads() {
        let older: FlowsClearReply = serde_json::from_str(r#"{"cleared":2}"#).unwrap();
        assert_eq!(older.cleared, 2);
        assert_eq!(older.proxy, ClearCounts::default());
        let kept = |worker| KeptFlow {
            worker,
            proto: Protocol::TCP,
            src: "198.18.0.1:40000".parse().unwrap(),
            dst: "198.18.0.2:443".parse().unwrap(),
            mode: Action::Proxy,
            reason: KeptReason::HandshakeInProgress,
        };
        let worker = |n: u16| FlowsClearReply {
            cleared: 1,
            proxy: ClearCounts {
                reset: 1,
                kept: 700,
                ..Default::default()
            },
            kept: (0..700).map(|_| kept(n)).collect(),
            ..Default::default()
        };
        let mut all = worker(0);
        all.absorb(worker(1));
        assert_eq!((all.cleared, all.proxy.reset, all.proxy.kept), (2, 2, 1400));
        assert_eq!(
            all.kept.len(),
            MAX_KEPT_LISTED,
            "the list is bounded, the counts are not"
        );
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json["kept"][0]["reason"], "handshake-in-progress");
    }
}
