//! IP fragments of a proxied TCP flow on a real EAL: two workers under software steering, ring
//! ports. The client's data segment arrives as IPv4 and as IPv6 fragments, out of order and on
//! the queue its flow does not use, so the fragments meet on the worker their addresses pick,
//! which hands them to the flow's worker; the proxy relays the segment's bytes exactly. A flow
//! that is not proxied has its fragments forwarded as they came. The EAL initialises once per
//! process, so this file holds one test.

mod common;

use common::{ring_port, wait_for, with_flags};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk::{Burst, MbufRing, Mempool};
use tollgate::config::Config;
use tollgate::daemon::Dataplane;
use tollgate_control::policy::PolicySet;
use tollgate_core::flow::{FlowKey, FlowTable};
use tollgate_core::policy::CompiledPolicy;
use tollgate_core::proxy::Inbound;
use tollgate_core::synth::{self, Addressing, TcpHeader};
use tollgate_core::tcp::segment::TcpFlags;
use tollgate_core::wire::tcp::flags;

const WORKERS: usize = 2;

fn inject(pool: &Mempool, ring: &MbufRing, frames: &[Vec<u8>]) {
    let mut b = Burst::new();
    for f in frames {
        let mut m = pool.alloc().unwrap();
        m.append(f).unwrap();
        b.push(m).unwrap();
    }
    assert_eq!(ring.enqueue_burst(&mut b), frames.len());
}

/// A client port whose flow's worker is not the one its addresses pick for fragments.
fn client_port(client: &str, server: SocketAddr) -> SocketAddr {
    for port in 40000u16.. {
        let c: SocketAddr = format!("{client}:{port}").parse().unwrap();
        let (flow, _) = FlowKey::from_packet(c.ip(), server.ip(), 6, port, server.port());
        let (l3, _) = FlowKey::from_packet(c.ip(), server.ip(), 6, 0, 0);
        if FlowTable::shard_of(flow.software_hash(), WORKERS)
            != FlowTable::shard_of(l3.software_hash(), WORKERS)
        {
            return c;
        }
    }
    unreachable!()
}

#[test]
fn a_proxied_segment_in_ip_fragments_reaches_the_server_byte_exact() {
    let _eal = common::eal_without_hugepages("frag-test", 256);
    let pool = Arc::new(Mempool::pktmbuf("frag_test_pool", 4095, 32, 2176, 0).unwrap());
    let (inside, in_rings) = ring_port("in", WORKERS);
    let (outside, out_rings) = ring_port("out", WORKERS);
    let mut config = Config::default();
    config.ports.inside = inside.name.clone();
    config.ports.outside = outside.name.clone();
    config.ports.rx_descriptors = 64;
    config.ports.tx_descriptors = 64;
    config.ports.mbufs = 4095;
    config.ports.mbuf_cache = 32;
    config.workers.cores = vec![0, 1];
    config.validate(&[]).unwrap();
    let policy = CompiledPolicy::compile(&PolicySet::default(), config.policy_defaults(), 1);
    let mut dp = Dataplane::start(&config, [inside.id, outside.id], pool.clone(), policy).unwrap();

    let families = [
        ("198.18.0.1", "198.18.1.2:8080"),
        ("[2001:db8::1]", "[2001:db8:1::2]:8080"),
    ];
    for (round, (client, server)) in families.into_iter().enumerate() {
        let server: SocketAddr = server.parse().unwrap();
        let a = Addressing::new(client_port(client, server), server);
        let tcp = |a: &Addressing, flags, seq: u32, ack: u32, payload: &[u8]| {
            synth::tcp(
                a,
                TcpHeader {
                    flags,
                    seq,
                    ack,
                    window: 65535,
                },
                payload,
            )
        };
        // The handshake, through the proxy.
        inject(&pool, &in_rings.rx[0], &[tcp(&a, flags::SYN, 100, 0, b"")]);
        let to_server = wait_for("the SYN to the server", &out_rings, |f| {
            with_flags(f, TcpFlags::SYN).is_some()
        });
        let syn = with_flags(&to_server, TcpFlags::SYN).unwrap();
        let syn_ack = tcp(
            &a.reversed(),
            flags::SYN | flags::ACK,
            5000,
            syn.header.seq.0.wrapping_add(1),
            b"",
        );
        inject(&pool, &out_rings.rx[1], &[syn_ack]);
        let to_client = wait_for("the SYN-ACK to the client", &in_rings, |f| {
            with_flags(f, TcpFlags::SYN | TcpFlags::ACK).is_some()
        });
        let client_isn = with_flags(&to_client, TcpFlags::SYN | TcpFlags::ACK)
            .unwrap()
            .header
            .seq
            .0;
        inject(
            &pool,
            &in_rings.rx[0],
            &[tcp(&a, flags::ACK, 101, client_isn + 1, b"")],
        );

        // 2000 bytes of data in three fragments, last first, on the other queue.
        let payload: Vec<u8> = (0..2000u32)
            .map(|i| (i * 13 + round as u32) as u8)
            .collect();
        let segment = tcp(&a, flags::ACK, 101, client_isn + 1, &payload);
        let mut fragments = synth::fragments(&segment, 800, 77 + round as u32);
        assert_eq!(fragments.len(), 3);
        fragments.reverse();
        inject(&pool, &in_rings.rx[1], &fragments);

        // The server receives the bytes, in segments of the proxy's own making.
        let server_isn = syn.header.seq.0.wrapping_add(1);
        let mut relayed = vec![None; payload.len()];
        wait_for("the data at the server", &out_rings, |frames| {
            for f in frames {
                let Ok(s) = Inbound::read(f) else { continue };
                let at = s.header.seq.0.wrapping_sub(server_isn) as usize;
                for (i, b) in f[s.payload_offset..][..s.payload_len].iter().enumerate() {
                    if let Some(slot) = relayed.get_mut(at + i) {
                        *slot = Some(*b);
                    }
                }
            }
            relayed.iter().all(Option::is_some)
        });
        let relayed: Vec<u8> = relayed.into_iter().map(Option::unwrap).collect();
        assert!(
            relayed == payload,
            "the server got the bytes the client sent"
        );
        // And the client hears them acknowledged.
        wait_for("the client's ACK", &in_rings, |frames| {
            frames
                .iter()
                .filter_map(|f| Inbound::read(f).ok())
                .any(|s| s.header.ack.0 == 101 + payload.len() as u32)
        });
    }

    // A flow picked up mid-stream is not proxied (`proxy.on_midstream = "bypass"`): its
    // fragments leave as they came, once all are there.
    let server: SocketAddr = "198.18.1.2:8081".parse().unwrap();
    let a = Addressing::new(client_port("198.18.0.1", server), server);
    let segment = synth::tcp(
        &a,
        TcpHeader {
            flags: flags::ACK,
            seq: 7,
            ack: 9,
            window: 512,
        },
        &[5; 1780],
    );
    let mut fragments = synth::fragments(&segment, 600, 99);
    fragments.swap(0, 2);
    inject(&pool, &in_rings.rx[0], &fragments);
    assert_eq!(fragments.len(), 3);
    // Only this datagram's fragments: the proxied flows above may still send the server a
    // retransmission or an ACK meanwhile.
    let passed = wait_for("the fragments at the server", &out_rings, |f| {
        f.iter().filter(|f| common::ipv4_fragment_of(f, 99)).count() >= 3
    });
    let mut passed: Vec<Vec<u8>> = passed
        .into_iter()
        .filter(|f| common::ipv4_fragment_of(f, 99))
        .collect();
    passed.sort();
    fragments.sort();
    assert!(passed == fragments, "the original fragments, unchanged");

    let deadline = Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap = dp.snapshot_now();
        if snap.reassembly.reassembled == 3 || Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = snap.reassembly;
    assert_eq!((r.fragments, r.reassembled), (9, 3), "{r:?}");
    assert_eq!(snap.drops["fragment"], 0);
    assert_eq!(snap.drops["proxy_unusable"], 0);
    assert_eq!(snap.proxy.connections_established, 2);
    assert_eq!(snap.proxy.midstream_passthrough, 1);
    assert!(
        snap.totals.handoff_out >= 3,
        "fragments moved between workers"
    );
    dp.stop().unwrap();
}
