//! The flow table's per-packet work: `FlowTable::observe` hitting flows that
//! exist, in a table holding 1, 1k, 100k and 1M of them (the table itself
//! sized as the daemon's default, for 1 Mi flows, so only occupancy changes;
//! plus 100k flows in a table sized for 100k, to show what the spread over
//! a large table costs); and building the key and its hash from a parsed
//! packet.
//! Figures in `perf/RESULTS.md`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::config::Config;
use tollgate_core::flow::{FlowKey, FlowTable, FlowTableConfig, PacketMeta};
use tollgate_core::wire::tcp::flags;
use tollgate_perf::frames::flow;

const NOW_MS: u64 = 1_000;

// The daemon's allocator, which also decides how the table's memory is
// backed (mimalloc asks for transparent huge pages for large blocks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flow's packet towards the server, as the worker hands it to the table.
fn packet(i: u32) -> PacketMeta {
    let a = flow(i);
    let (key, orientation) =
        FlowKey::from_packet(a.src.ip(), a.dst.ip(), 6, a.src.port(), a.dst.port());
    PacketMeta {
        key,
        orientation,
        hash: key.software_hash(),
        len: 60,
        tcp_flags: Some(flags::ACK),
        ingress: tollgate_core::pipeline::PortSide::Inside,
    }
}

/// SplitMix64: a fixed, dependency-free shuffle.
fn shuffle<T>(items: &mut [T]) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

fn observe(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_observe_hit");
    let daemon = Config::default().flows.capacity;
    // The last case puts 100k flows in a table sized for them: the same
    // entries, packed into a tenth of the memory.
    for (flows, capacity) in [
        (1u32, daemon),
        (1_000, daemon),
        (100_000, daemon),
        (1_000_000, daemon),
        (100_000, 100_000),
    ] {
        let mut table = FlowTable::new(FlowTableConfig {
            capacity,
            ..FlowTableConfig::default()
        });
        // Shuffled, then read in order: the packets' own array streams
        // through the cache, and the table sees the flows in random order.
        let mut packets: Vec<PacketMeta> = (0..flows).map(packet).collect();
        shuffle(&mut packets);
        for p in &packets {
            table.observe(p, NOW_MS);
        }
        assert_eq!(table.len(), flows as usize);
        let name = if capacity == daemon {
            format!("{flows}_flows")
        } else {
            format!("{flows}_flows_in_a_{capacity}_table")
        };
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let p = &packets[next];
                next += 1;
                if next == packets.len() {
                    next = 0;
                }
                // The hit's entry, so the lookup cannot be optimised away.
                match table.observe(black_box(p), NOW_MS) {
                    tollgate_core::flow::Observation::Existing(e) => e.last_seen_ms(),
                    other => panic!("flow {next} should exist: {other:?}"),
                }
            })
        });
    }
    group.finish();
}

fn key(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_key");
    let v4 = flow(12_345);
    let v6: [(IpAddr, u16); 2] = [
        ("2001:2::1".parse().unwrap(), 40_000),
        ("2001:2::2".parse().unwrap(), 443),
    ];
    for (name, (src, sport), (dst, dport)) in [
        (
            "ipv4",
            (v4.src.ip(), v4.src.port()),
            (v4.dst.ip(), v4.dst.port()),
        ),
        ("ipv6", v6[0], v6[1]),
    ] {
        group.bench_function(format!("from_packet+software_hash/{name}"), |b| {
            b.iter(|| {
                let (key, orientation) = FlowKey::from_packet(
                    black_box(src),
                    black_box(dst),
                    black_box(6),
                    black_box(sport),
                    black_box(dport),
                );
                (key.software_hash(), orientation)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = observe, key
}
criterion_main!(benches);
