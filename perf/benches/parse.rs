//! `parse_frame`, the one parse every frame gets, on the frame shapes a
//! worker sees most: IPv4/TCP, IPv6/UDP, and IPv4/TCP behind an 802.1Q tag.
//! Figures in `perf/RESULTS.md`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_core::synth::{self, Addressing, TcpHeader};
use tollgate_core::wire::parse_frame;
use tollgate_core::wire::tcp::flags;

fn frames() -> [(&'static str, Vec<u8>); 3] {
    let v4 = Addressing::new(
        "198.18.0.1:40000".parse().unwrap(),
        "198.19.0.2:443".parse().unwrap(),
    );
    let v6 = Addressing::new(
        "[2001:2::1]:5000".parse().unwrap(),
        "[2001:2::2]:53".parse().unwrap(),
    );
    let vlan = Addressing {
        vlan: Some(100),
        ..v4
    };
    let ack = TcpHeader {
        seq: 1_000,
        ack: 5_000,
        flags: flags::ACK,
        window: 0,
    };
    [
        ("ipv4_tcp", synth::tcp(&v4, ack, b"")),
        ("ipv6_udp", synth::udp(&v6, b"query")),
        ("vlan_ipv4_tcp", synth::tcp(&vlan, ack, b"")),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_frame");
    for (name, frame) in frames() {
        assert!(parse_frame(&frame).unwrap().ip.is_some(), "{name}");
        group.bench_function(name, |b| b.iter(|| parse_frame(black_box(&frame))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = parse
}
criterion_main!(benches);
