//! The compiled classifier: `Classifier::lookup` for a new flow against 10, 1k
//! and 10k rules of a realistic bypass policy, for flows that hit rules early,
//! late, through each structure, and that miss; plus `Classifier::compile` at
//! 10k rules. Also prints each set's memory estimate.
//!
//! The policy mix (by position, interleaved): 50% bypass rules on one
//! destination port and a /24 destination each (`tcp dst_port P dst D`, 5,000
//! distinct ports), 10% udp rules on 16-port ranges, 20% destination prefix
//! rules without a port (/32 and /24), 10% source-prefix rules with a wide
//! port range (1024-65535), 10% esp (IPv6 /48) and gre (source /24) rules;
//! then a `tcp` catch-all with `proxy` and a final catch-all.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_control::policy::Classifier;
use tollgate_control::policy::{Action, FlowFields, Match, PolicySet, PortSide, RuleSpec};

/// A rule from its match fields in `tollgatectl` notation, "" for any.
fn rule(proto: &str, src: &str, dst: &str, dst_port: &str, action: Action) -> RuleSpec {
    let field = |text: &str| (!text.is_empty()).then_some(text.to_owned());
    RuleSpec {
        matches: Match {
            proto: field(proto).map(|p| p.parse().unwrap()),
            src: field(src).map(|p| p.parse().unwrap()),
            dst: field(dst).map(|p| p.parse().unwrap()),
            dst_port: field(dst_port).map(|p| p.parse().unwrap()),
            ..Match::default()
        },
        action,
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

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn policy(rules: u32) -> PolicySet {
    use Action::{Bypass, Proxy};
    let mut set = PolicySet::default();
    let body = rules.saturating_sub(2);
    for i in 0..body {
        let (hi, lo) = ((i >> 8) as u8, i as u8);
        let spec = match i % 10 {
            0..=4 => {
                let port = (10_000 + i % 5_000).to_string();
                rule("tcp", "", &format!("10.{hi}.{lo}.0/24"), &port, Bypass)
            }
            5 => {
                let first = 20_000 + i % 3_000;
                let ports = format!("{first}-{}", first + 15);
                rule("udp", "", &format!("10.{hi}.{lo}.7"), &ports, Bypass)
            }
            6 => rule(
                "tcp",
                "",
                &format!("172.{}.{hi}.{lo}", 16 + i % 16),
                "",
                Bypass,
            ),
            7 => rule("tcp", "", &format!("100.{hi}.{lo}.0/24"), "", Bypass),
            8 => rule(
                "tcp",
                &format!("198.18.{hi}.{lo}"),
                "",
                "1024-65535",
                Bypass,
            ),
            _ if i / 10 % 2 == 0 => rule("esp", "", &format!("2001:2:{i:x}::/48"), "", Bypass),
            _ => rule("47", &format!("198.19.{hi}.0/24"), "", "", Bypass),
        };
        set.add(spec).unwrap();
    }
    set.add(rule("tcp", "", "", "", Proxy)).unwrap();
    set.add(rule("", "", "", "", Bypass)).unwrap();
    set
}

fn tcp(src: IpAddr, dst: IpAddr, dst_port: u16) -> FlowFields {
    FlowFields {
        proto: 6,
        src,
        dst,
        src_port: 40_000,
        dst_port,
        ingress: PortSide::Inside,
        vlan: None,
    }
}

/// `per_kind` flows aimed at rules of each kind, spread over the set, plus
/// misses that fall through to the tcp catch-all and to the final one.
fn flows(rules: u32, per_kind: u32) -> Vec<(&'static str, Vec<FlowFields>)> {
    let body = rules.saturating_sub(2).max(1);
    let pick = |kind: u32| -> Vec<u32> {
        (0..per_kind)
            .map(|k| (k * 7919 % body) / 10 * 10 + kind)
            .filter(|&i| i < body)
            .collect()
    };
    let split = |i: u32| ((i >> 8) as u8, i as u8);
    let port_rule = pick(0)
        .into_iter()
        .map(|i| {
            let (hi, lo) = split(i);
            tcp(
                v4(203, 0, 113, 9),
                v4(10, hi, lo, 99),
                10_000 + (i % 5_000) as u16,
            )
        })
        .collect();
    let range_rule = pick(5)
        .into_iter()
        .map(|i| {
            let (hi, lo) = split(i);
            FlowFields {
                proto: 17,
                ..tcp(
                    v4(203, 0, 113, 9),
                    v4(10, hi, lo, 7),
                    20_008 + (i % 3_000) as u16,
                )
            }
        })
        .collect();
    let prefix_rule = pick(6)
        .into_iter()
        .chain(pick(7))
        .map(|i| {
            let (hi, lo) = split(i);
            if i % 10 == 6 {
                tcp(
                    v4(203, 0, 113, 9),
                    v4(172, 16 + (i % 16) as u8, hi, lo),
                    443,
                )
            } else {
                tcp(v4(203, 0, 113, 9), v4(100, hi, lo, 1), 443)
            }
        })
        .collect();
    let src_rule = pick(8)
        .into_iter()
        .map(|i| {
            let (hi, lo) = split(i);
            tcp(v4(198, 18, hi, lo), v4(192, 0, 2, 1), 8443)
        })
        .collect();
    let esp_rule = pick(9)
        .into_iter()
        .filter(|i| i / 10 % 2 == 0)
        .map(|i| FlowFields {
            proto: 50,
            src_port: 0,
            dst_port: 0,
            ..tcp(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 2, i as u16, 0, 0, 0, 0, 1)),
                0,
            )
        })
        .collect();
    // Right port, wrong destination; and a port no rule names.
    let tcp_miss = (0..per_kind)
        .map(|k| {
            if k % 2 == 0 {
                tcp(
                    v4(203, 0, 113, 9),
                    v4(192, 0, 2, k as u8),
                    10_000 + k as u16,
                )
            } else {
                tcp(v4(203, 0, 113, 9), v4(192, 0, 2, k as u8), 80)
            }
        })
        .collect();
    let other_miss = (0..per_kind)
        .map(|k| FlowFields {
            proto: 1,
            src_port: 0,
            dst_port: 0,
            ..tcp(v4(203, 0, 113, k as u8), v4(192, 0, 2, 1), 0)
        })
        .collect();
    vec![
        ("hit_dst_port", port_rule),
        ("hit_udp_range", range_rule),
        ("hit_dst_prefix", prefix_rule),
        ("hit_src_wide_ports", src_rule),
        ("hit_esp_v6", esp_rule),
        ("miss_tcp_catch_all", tcp_miss),
        ("miss_icmp_catch_all", other_miss),
    ]
}

fn lookup(c: &mut Criterion) {
    for rules in [10u32, 1_000, 10_000] {
        let set = policy(rules);
        let classifier = Classifier::compile(&set);
        eprintln!(
            "classifier: {rules} rules, about {} KiB on the heap",
            classifier.heap_bytes() / 1024
        );
        let mut group = c.benchmark_group(format!("classifier_lookup/{rules}_rules"));
        group.sample_size(20);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        // Kinds the smallest set has no rule of are left out there.
        let mut cases: Vec<_> = flows(rules, 64)
            .into_iter()
            .filter(|(_, f)| !f.is_empty())
            .collect();
        // Every kind at once over ~4k flows, interleaved: less of the index
        // stays in L1 than when 64 flows repeat.
        let mut mixed: Vec<FlowFields> =
            flows(rules, 600).into_iter().flat_map(|(_, f)| f).collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for i in (1..mixed.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            mixed.swap(i, (state % (i as u64 + 1)) as usize);
        }
        cases.push(("mixed_4k_flows", mixed));
        for (name, flows) in cases {
            // The benchmark is only worth its name if the flows hit what it
            // says they hit.
            for f in &flows {
                let want = set
                    .rules
                    .iter()
                    .position(|r| r.spec.matches(f))
                    .map(|p| p as u32);
                assert_eq!(classifier.lookup(f), want, "{name}: {f:?}");
            }
            let mut next = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    let f = &flows[next % flows.len()];
                    next += 1;
                    black_box(classifier.lookup(black_box(f)))
                })
            });
        }
        group.finish();
    }
}

fn compile(c: &mut Criterion) {
    let set = policy(10_000);
    let start = Instant::now();
    let classifier = Classifier::compile(&set);
    eprintln!(
        "classifier: compiled 10000 rules once in {:?}",
        start.elapsed()
    );
    drop(classifier);
    let mut group = c.benchmark_group("classifier_compile");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("10000_rules", |b| {
        b.iter_with_large_drop(|| Classifier::compile(black_box(&set)))
    });
    group.finish();
}

criterion_group!(benches, lookup, compile);
criterion_main!(benches);
