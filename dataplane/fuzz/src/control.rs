//! The `control_codec` target: what a client writes to the control socket, line by line.
//!
//! Each line is decoded as the daemon decodes a request and as `tollgatectl` decodes a reply.
//! Whatever decodes must encode to one line that decodes to the same value, and an error must
//! come back as a reply that does too. Decoded policy changes are applied to a policy set, as
//! the daemon would, and the compiled classifier must pick the same rule as the rule list read
//! in order ([`PolicySet::first_match`]) for the flows each rule names and for every `explain`
//! query.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tollgate_control::policy::Classifier;
use tollgate_control::policy::{FlowFields, PolicySet, PortSide, Prefix, Protocol};
use tollgate_control::protocol::{
    decode_request, encode, ExplainReply, FlowsClearReply, FlowsListReply, HealthReply, Op,
    PolicyChangeReply, PolicyCheckReply, PolicyListReply, Request, Response, StatsReply,
    VersionReply, PROTOCOL_VERSION,
};

/// Rules whose flows are probed after a change; the lookups cost rules × probes.
const MAX_PROBED_RULES: usize = 32;

pub fn check(data: &[u8]) {
    let mut policy = PolicySet::default();
    for line in data.split(|&b| b == b'\n') {
        // As the server does: blank lines are not requests.
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode_request(line) {
            Ok(request) => {
                check_request(&request);
                apply(&mut policy, request.op);
            }
            Err(reply) => {
                assert!(
                    !reply.ok && reply.error.is_some(),
                    "a refusal that is not an error"
                );
                check_response(&reply);
            }
        }
        if let Ok(reply) = serde_json::from_slice::<Response>(line) {
            check_response(&reply);
            check_results(&reply);
        }
    }
    // Once, for the set the input ended with: compiling after every change would cost more
    // than it finds, since each intermediate set is only another set.
    check_classifier(&policy, &[]);
}

/// One line, newline last and nowhere else.
fn one_line(line: &[u8]) -> &[u8] {
    let (last, body) = line.split_last().expect("an encoded message is not empty");
    assert_eq!(*last, b'\n', "an encoded message ends its line");
    assert!(!body.contains(&b'\n'), "an encoded message spans lines");
    body
}

fn check_request(request: &Request) {
    assert_eq!(request.version, PROTOCOL_VERSION);
    let line = encode(request);
    let again = decode_request(one_line(&line)).unwrap_or_else(|reply| {
        panic!(
            "a request encodes to {:?}, which is refused: {:?}",
            String::from_utf8_lossy(&line),
            reply.error
        )
    });
    assert_eq!(
        &again, request,
        "a request changes on its way through the wire"
    );
}

fn check_response(reply: &Response) {
    let line = encode(reply);
    let again: Response = serde_json::from_slice(one_line(&line)).unwrap_or_else(|e| {
        panic!(
            "a reply encodes to {:?}, which does not decode: {e}",
            String::from_utf8_lossy(&line)
        )
    });
    let (before, after) = (value_of(reply), value_of(&again));
    assert!(
        same(&before, &after),
        "a reply changes on its way through the wire: {before} became {after}"
    );
}

/// A reply's result as each operation's client reads it.
fn check_results(reply: &Response) {
    check_result::<PolicyListReply>(reply);
    check_result::<PolicyChangeReply>(reply);
    check_result::<PolicyCheckReply>(reply);
    check_result::<ExplainReply>(reply);
    check_result::<FlowsListReply>(reply);
    check_result::<FlowsClearReply>(reply);
    check_result::<HealthReply>(reply);
    check_result::<VersionReply>(reply);
    check_result::<StatsReply>(reply);
}

fn check_result<T: Serialize + DeserializeOwned>(reply: &Response) {
    let Ok(result) = reply.clone().into_result::<T>() else {
        return;
    };
    let text = serde_json::to_vec(&result).expect("a result serializes");
    let again: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "the result {} of a reply does not decode as itself: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    let (before, after) = (value_of(&result), value_of(&again));
    assert!(
        same(&before, &after),
        "a {} changes on its way through the wire: {before} became {after}",
        std::any::type_name::<T>()
    );
}

fn value_of<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

/// Equal, but for the last bits of floating-point numbers: serde_json parses those fast
/// rather than exactly unless asked otherwise, and that is its business, not ours.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}

/// What the daemon does with a decoded request, as far as the policy set goes.
fn apply(policy: &mut PolicySet, op: Op) {
    match op {
        Op::PolicyAdd { rule, position, .. } => {
            let _ = match position {
                Some(at) => policy.insert(at, rule),
                None => policy.add(rule),
            };
        }
        Op::PolicyDelete { id } => {
            let _ = policy.delete(id);
        }
        Op::PolicyReplace { rules, .. } => {
            let _ = policy.replace(rules);
        }
        Op::PolicyCheck { rules } if PolicySet::check(&rules).is_ok() => {
            let mut checked = PolicySet::default();
            assert!(
                checked.replace(rules).is_ok(),
                "a rule list that checks cannot be applied"
            );
            check_classifier(&checked, &[]);
        }
        Op::Explain(query) => check_classifier(policy, &[query.flow_fields()]),
        _ => {}
    }
}

/// The classifier and the rule list agree on `flows` and on flows at the edges of every rule.
fn check_classifier(policy: &PolicySet, flows: &[FlowFields]) {
    let classifier = Classifier::compile(policy);
    assert_eq!(classifier.len(), policy.rules.len());
    let mut probes = flows.to_vec();
    for rule in policy.rules.iter().take(MAX_PROBED_RULES) {
        probes.extend(edge_flows(&rule.spec.matches));
    }
    for flow in &probes {
        let reference = policy.first_match(flow).map(|rule| rule.id);
        let compiled = classifier.lookup_rule(flow).map(|rule| rule.id);
        assert_eq!(
            compiled, reference,
            "the classifier picks rule {compiled:?} for {flow:?}, the rule list {reference:?}"
        );
    }
}

/// The first and last address of a prefix, or one of each family when there is none.
fn prefix_edges(prefix: Option<Prefix>) -> Vec<IpAddr> {
    let Some(prefix) = prefix else {
        return vec![
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1)),
        ];
    };
    let last = match prefix.addr {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(prefix.len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(u32::from(prefix.len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    };
    vec![prefix.addr, last]
}

/// Flows on the edges of a match: its prefixes' first and last addresses, its port ranges'
/// ends and the ports just outside them, and the other port and ingress.
fn edge_flows(m: &tollgate_control::policy::Match) -> Vec<FlowFields> {
    let proto = m.proto.unwrap_or(Protocol::TCP).0;
    let ports = |range: Option<tollgate_control::policy::PortRange>| match range {
        Some(r) => vec![
            r.first,
            r.last,
            r.first.wrapping_sub(1),
            r.last.wrapping_add(1),
        ],
        None => vec![10_000],
    };
    let mut flows = Vec::new();
    for src in prefix_edges(m.src) {
        for dst in prefix_edges(m.dst) {
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for src_port in ports(m.src_port) {
                for dst_port in ports(m.dst_port) {
                    // The other ingress every other flow, so both are seen at half the cost.
                    let ingress = match (flows.len() % 2 == 0, m.ingress) {
                        (true, Some(ingress)) => ingress,
                        (_, Some(PortSide::Inside)) | (false, None) => PortSide::Outside,
                        _ => PortSide::Inside,
                    };
                    flows.push(FlowFields {
                        proto,
                        src,
                        dst,
                        src_port,
                        dst_port,
                        ingress,
                        vlan: m.vlan,
                    });
                }
            }
        }
    }
    flows
}
