//! The compiled classifier against the reference semantics
//! (`PolicySet::first_match`) on random policy sets and flows, plus edge cases.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tollgate_core::policy::Classifier;
use tollgate_core::policy::{
    Action, FlowFields, Match, PolicySet, PortRange, PortSide, Prefix, Protocol, Rule, RuleSpec,
};

/// SplitMix64: deterministic, so a failure reproduces from its case number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A small pool of addresses so that random prefixes and flows overlap.
const V4: [u32; 6] = [
    0xC612_0000,
    0xC612_0101,
    0xC613_FF01,
    0x0A00_0001,
    0x0A01_0203,
    0xCB00_7109,
];
const V6: [u128; 4] = [
    0x2001_0002_0000_0000_0000_0000_0000_0001,
    0x2001_0002_0000_0001_0000_0000_0000_0001,
    0x2001_0db8_0000_0000_0000_0000_0000_0042,
    0xfe80_0000_0000_0000_0000_0000_0000_0001,
];
const PORTS: [u16; 9] = [0, 1, 53, 80, 443, 5201, 10000, 40000, 65535];
const PROTOS: [u8; 5] = [6, 17, 1, 47, 132];

fn address(rng: &mut Rng, v6: bool) -> IpAddr {
    // Mostly pool addresses, nudged in their low bits now and then.
    if v6 {
        let mut a = rng.pick(&V6);
        if rng.chance(30) {
            a ^= 1 << rng.below(128);
        }
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        let mut a = rng.pick(&V4);
        if rng.chance(30) {
            a ^= 1 << rng.below(32);
        }
        IpAddr::V4(Ipv4Addr::from(a))
    }
}

fn prefix(rng: &mut Rng, v6: bool) -> Prefix {
    let addr = address(rng, v6);
    let len = if v6 {
        let any = rng.below(129) as u8;
        rng.pick(&[0, 16, 32, 48, 63, 64, 96, 127, 128, any])
    } else {
        let any = rng.below(33) as u8;
        rng.pick(&[0, 1, 8, 15, 16, 24, 31, 32, any])
    };
    let net = Prefix { addr, len }.network();
    Prefix::new(net, len).unwrap()
}

fn port(rng: &mut Rng) -> u16 {
    match rng.below(4) {
        0 => rng.below(65536) as u16,
        _ => rng.pick(&PORTS),
    }
}

fn port_range(rng: &mut Rng) -> PortRange {
    match rng.below(6) {
        0 | 1 => PortRange::single(port(rng)),
        2 => {
            // Narrow: entered port by port.
            let first = port(rng).min(65535 - 80);
            PortRange {
                first,
                last: first + rng.below(80) as u16,
            }
        }
        3 => PortRange {
            first: 1024,
            last: 65535,
        },
        4 => PortRange {
            first: 0,
            last: 65535,
        },
        _ => {
            let a = port(rng);
            let b = port(rng);
            PortRange {
                first: a.min(b),
                last: a.max(b),
            }
        }
    }
}

fn random_rule(rng: &mut Rng) -> RuleSpec {
    let proto = match rng.below(10) {
        0..=2 => None,
        3..=5 => Some(Protocol::TCP),
        6 | 7 => Some(Protocol::UDP),
        8 => Some(Protocol(47)),
        _ => Some(Protocol(rng.pick(&PROTOS))),
    };
    // Ports need a protocol with ports to be valid; one rule in twenty breaks
    // that on purpose, since the classifier must agree on any set it is given.
    let ports_allowed = proto.is_some_and(|p| p.has_ports()) || rng.chance(5);
    let v6 = rng.chance(35);
    let m = Match {
        proto,
        src: rng.chance(35).then(|| prefix(rng, v6)),
        dst: rng.chance(60).then(|| prefix(rng, v6)),
        src_port: (ports_allowed && rng.chance(15)).then(|| port_range(rng)),
        dst_port: (ports_allowed && rng.chance(65)).then(|| port_range(rng)),
        ingress: rng.chance(20).then(|| {
            if rng.chance(50) {
                PortSide::Inside
            } else {
                PortSide::Outside
            }
        }),
        vlan: rng.chance(10).then(|| rng.pick(&[10, 20, 4094])),
    };
    RuleSpec {
        matches: m,
        action: rng.pick(&[Action::Bypass, Action::Proxy, Action::Drop]),
        idle_timeout_secs: None,
        on_stall: None,
        detect: None,
        conn_max: None,
        embryonic_max: None,
        per_client_max: None,
        on_limit: None,
        name: None,
        comment: None,
    }
}

fn random_set(rng: &mut Rng, rules: usize) -> PolicySet {
    let mut set = PolicySet::default();
    for i in 0..rules {
        set.rules.push(Rule {
            id: i as u32 + 1,
            spec: random_rule(rng),
        });
    }
    set.next_id = rules as u32 + 1;
    set
}

fn within(rng: &mut Rng, p: Prefix) -> IpAddr {
    match p.addr {
        IpAddr::V4(a) => {
            let host = if p.len == 32 {
                0
            } else {
                rng.next() as u32 & (u32::MAX >> p.len)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = if p.len == 128 {
                0
            } else {
                (u128::from(rng.next()) << 64 | u128::from(rng.next())) & (u128::MAX >> p.len)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}

fn in_range(rng: &mut Rng, r: PortRange) -> u16 {
    match rng.below(3) {
        0 => r.first,
        1 => r.last,
        _ => r.first + rng.below(u64::from(r.last - r.first) + 1) as u16,
    }
}

fn random_flow(rng: &mut Rng, set: &PolicySet) -> FlowFields {
    let v6 = rng.chance(35);
    let mut f = FlowFields {
        proto: if rng.chance(80) {
            rng.pick(&PROTOS)
        } else {
            rng.below(256) as u8
        },
        src: address(rng, v6),
        dst: address(rng, v6),
        src_port: port(rng),
        dst_port: port(rng),
        ingress: if rng.chance(50) {
            PortSide::Inside
        } else {
            PortSide::Outside
        },
        vlan: rng.pick(&[None, None, Some(10), Some(20), Some(30)]),
    };
    // Aim at a rule most of the time, so matches deep in the list are tested,
    // then perturb a field now and then to land just beside it.
    if !set.rules.is_empty() && rng.chance(70) {
        let m = &set.rules[rng.below(set.rules.len() as u64) as usize]
            .spec
            .matches;
        if let Some(p) = m.proto {
            f.proto = p.0;
        }
        if let Some(p) = m.src {
            f.src = within(rng, p);
        }
        if let Some(p) = m.dst {
            f.dst = within(rng, p);
            if m.src.is_none() && f.src.is_ipv4() != f.dst.is_ipv4() {
                f.src = address(rng, f.dst.is_ipv6());
            }
        }
        if let Some(r) = m.src_port {
            f.src_port = in_range(rng, r);
        }
        if let Some(r) = m.dst_port {
            f.dst_port = in_range(rng, r);
        }
        if let Some(i) = m.ingress {
            f.ingress = i;
        }
        if let Some(v) = m.vlan {
            f.vlan = Some(v);
        }
        if rng.chance(20) {
            match rng.below(4) {
                0 => f.dst_port = f.dst_port.wrapping_add(1),
                1 => f.src_port = f.src_port.wrapping_sub(1),
                2 => f.dst = address(rng, f.dst.is_ipv6()),
                _ => f.vlan = None,
            }
        }
    }
    f
}

fn reference(set: &PolicySet, flow: &FlowFields) -> Option<u32> {
    set.rules
        .iter()
        .position(|r| r.spec.matches(flow))
        .map(|p| p as u32)
}

fn assert_agrees(case: u64, set: &PolicySet, c: &Classifier, flow: &FlowFields) {
    let want = reference(set, flow);
    let got = c.lookup(flow);
    assert_eq!(
        got,
        want,
        "case {case}: flow {flow:?}\nclassifier says {:?}\nreference says {:?}",
        got.map(|i| &set.rules[i as usize]),
        want.map(|i| &set.rules[i as usize])
    );
}

#[test]
fn agrees_with_first_match_on_random_sets() {
    let mut lookups = 0;
    for case in 0..3_000u64 {
        let mut rng = Rng(case);
        // Mostly small sets; some large enough that buckets split (and split
        // again) and the pool's overlap makes long candidate lists.
        let size = match case % 10 {
            0 => rng.below(400) as usize,
            1 | 2 => rng.below(60) as usize,
            _ => rng.below(16) as usize,
        };
        let set = random_set(&mut rng, size);
        let c = Classifier::compile(&set);
        assert_eq!(c.len(), set.rules.len());
        for _ in 0..150 {
            let flow = random_flow(&mut rng, &set);
            assert_agrees(case, &set, &c, &flow);
            lookups += 1;
        }
    }
    assert!(lookups >= 400_000);
}

/// A bypass-style set at the scale the benchmark uses, where the structures
/// are deep: thousands of port and prefix buckets, splits within splits.
#[test]
fn agrees_on_a_large_realistic_set() {
    let mut rng = Rng(7);
    let mut set = PolicySet::default();
    for i in 0..6_000u32 {
        let spec = match i % 6 {
            0..=2 => format!(
                r#"{{"match":{{"proto":"tcp","dst_port":{},"dst":"198.18.{}.0/24"}},"action":"bypass"}}"#,
                10_000 + i % 2_000,
                i % 256
            ),
            3 => format!(
                r#"{{"match":{{"proto":"udp","dst":"10.{}.{}.0/24","src":"198.19.{}.0/24"}},"action":"bypass"}}"#,
                i / 256 % 256,
                i % 256,
                i % 7
            ),
            4 => format!(
                r#"{{"match":{{"proto":"tcp","dst_port":"{}-{}","dst":"10.{}.0.0/16"}},"action":"proxy"}}"#,
                20_000 + i % 100,
                20_000 + i % 100 + 40,
                i % 256
            ),
            _ => format!(
                r#"{{"match":{{"proto":"tcp","dst_port":"1024-65535","src":"2001:2:{:x}::/48"}},"action":"drop"}}"#,
                i
            ),
        };
        set.add(serde_json::from_str(&spec).unwrap()).unwrap();
    }
    set.add(serde_json::from_str(r#"{"action":"proxy"}"#).unwrap())
        .unwrap();
    let c = Classifier::compile(&set);
    for case in 0..3_000u64 {
        let flow = random_flow(&mut rng, &set);
        assert_agrees(case, &set, &c, &flow);
    }
}

#[test]
fn edge_cases() {
    let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
    let rules = [
        // Port 0 and 65535 exactly, and as range ends.
        r#"{"match":{"proto":"udp","dst_port":0},"action":"drop"}"#,
        r#"{"match":{"proto":"udp","dst_port":65535},"action":"drop"}"#,
        r#"{"match":{"proto":"tcp","dst_port":"65500-65535"},"action":"drop"}"#,
        r#"{"match":{"proto":"tcp","src_port":"0-10"},"action":"drop"}"#,
        // An IPv6 /0 must not match an IPv4 flow, nor an IPv4 /0 an IPv6 one.
        r#"{"match":{"proto":"47","dst":"::/0"},"action":"bypass"}"#,
        r#"{"match":{"proto":"47","src":"0.0.0.0/0"},"action":"proxy"}"#,
        r#"{"match":{"vlan":4094},"action":"drop"}"#,
        r#"{"match":{"ingress":"outside","dst":"198.18.0.1"},"action":"drop"}"#,
    ];
    let mut set = PolicySet::default();
    for r in rules {
        set.add(serde_json::from_str(r).unwrap()).unwrap();
    }
    let c = Classifier::compile(&set);
    let base = FlowFields {
        proto: 17,
        src: v4("198.18.0.2"),
        dst: v4("198.18.0.1"),
        src_port: 1000,
        dst_port: 0,
        ingress: PortSide::Inside,
        vlan: None,
    };
    let cases: Vec<(FlowFields, Option<u32>)> = vec![
        (base, Some(0)),
        (
            FlowFields {
                dst_port: 65535,
                ..base
            },
            Some(1),
        ),
        (
            FlowFields {
                dst_port: 1,
                ..base
            },
            None,
        ),
        (
            FlowFields {
                proto: 6,
                dst_port: 65535,
                ..base
            },
            Some(2),
        ),
        (
            FlowFields {
                proto: 6,
                dst_port: 65499,
                src_port: 0,
                ..base
            },
            Some(3),
        ),
        (
            FlowFields {
                proto: 6,
                dst_port: 65499,
                src_port: 11,
                ..base
            },
            None,
        ),
        (FlowFields { proto: 47, ..base }, Some(5)),
        (
            FlowFields {
                proto: 47,
                src: v4("2001:2::1"),
                dst: v4("2001:2::2"),
                ..base
            },
            Some(4),
        ),
        (
            FlowFields {
                proto: 99,
                vlan: Some(4094),
                ..base
            },
            Some(6),
        ),
        (
            FlowFields {
                proto: 99,
                ingress: PortSide::Outside,
                ..base
            },
            Some(7),
        ),
        (
            FlowFields {
                proto: 99,
                ingress: PortSide::Outside,
                dst: v4("198.18.0.3"),
                ..base
            },
            None,
        ),
    ];
    for (i, (flow, want)) in cases.iter().enumerate() {
        assert_eq!(c.lookup(flow), *want, "edge case {i}: {flow:?}");
        assert_eq!(
            reference(&set, flow),
            *want,
            "edge case {i} (reference): {flow:?}"
        );
    }
    assert_eq!(c.lookup_rule(&base).map(|r| r.id), Some(set.rules[0].id));

    // A lone catch-all, and the same set with the catch-all first.
    let mut all = PolicySet::default();
    all.add(serde_json::from_str(r#"{"match":{"dst":"0.0.0.0/0"},"action":"drop"}"#).unwrap())
        .unwrap();
    let c = Classifier::compile(&all);
    assert_eq!(c.lookup(&base), Some(0));
    assert_eq!(
        c.lookup(&FlowFields {
            dst: v4("::1"),
            src: v4("::2"),
            ..base
        }),
        None
    );
}

#[test]
fn many_rules_on_one_port_and_many_prefix_lengths() {
    // Shapes that stress the splits: one hot port shared by thousands of
    // destinations, and every IPv4 and many IPv6 prefix lengths at once.
    let mut rng = Rng(99);
    let mut set = PolicySet::default();
    for i in 0..3_000u32 {
        let v6 = i % 3 == 0;
        let dst = prefix(&mut rng, v6);
        let src = (i % 5 == 0).then(|| prefix(&mut rng, v6));
        set.add(RuleSpec {
            matches: Match {
                proto: Some(Protocol::TCP),
                dst: Some(dst),
                src,
                dst_port: (i % 2 == 0).then_some(PortRange::single(443)),
                ..Match::default()
            },
            action: Action::Bypass,
            idle_timeout_secs: None,
            on_stall: None,
            detect: None,
            conn_max: None,
            embryonic_max: None,
            per_client_max: None,
            on_limit: None,
            name: None,
            comment: None,
        })
        .unwrap();
    }
    let c = Classifier::compile(&set);
    for case in 0..5_000u64 {
        let mut flow = random_flow(&mut rng, &set);
        if case % 2 == 0 {
            flow.dst_port = 443;
        }
        assert_agrees(case, &set, &c, &flow);
    }
}

#[test]
fn overlapping_ranges_beyond_the_port_table_budget() {
    // Staggered ranges of 2-64 ports, more than the port table takes, so some
    // stay in the table and the rest go to the prefix split; a third without
    // a destination, so splits leave long wildcard lists too.
    let mut rng = Rng(1234);
    let mut set = PolicySet::default();
    for i in 0..3_000u32 {
        let first = 1_000 + (i * 7 % 2_000) as u16;
        let width = 1 + rng.below(64) as u16;
        set.add(RuleSpec {
            matches: Match {
                proto: Some(if i % 4 == 0 {
                    Protocol::UDP
                } else {
                    Protocol::TCP
                }),
                dst: (i % 3 != 0).then(|| prefix(&mut rng, i % 5 == 0)),
                dst_port: Some(PortRange {
                    first,
                    last: first + width - 1,
                }),
                src_port: (i % 7 == 0).then(|| port_range(&mut rng)),
                ..Match::default()
            },
            action: Action::Bypass,
            idle_timeout_secs: None,
            on_stall: None,
            detect: None,
            conn_max: None,
            embryonic_max: None,
            per_client_max: None,
            on_limit: None,
            name: None,
            comment: None,
        })
        .unwrap();
    }
    let c = Classifier::compile(&set);
    for case in 0..5_000u64 {
        let mut flow = random_flow(&mut rng, &set);
        if case % 3 == 0 {
            flow.dst_port = 1_000 + rng.below(2_100) as u16;
        }
        assert_agrees(case, &set, &c, &flow);
    }
}
