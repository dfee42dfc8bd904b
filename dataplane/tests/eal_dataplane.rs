//! The whole data plane on a real EAL: two workers, two ring-backed ports
//! with two queues each, frames deliberately arriving on the "wrong" queue so
//! software steering must move them. The EAL initialises once per process, so
//! this file holds one test that checks in stages.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk::{Burst, MbufRing, Mempool, RingPort};
use tollgate::config::Config;
use tollgate::daemon::Dataplane;
use tollgate_control::policy::PolicySet;
use tollgate_core::flow::{FlowKey, FlowTable};
use tollgate_core::policy::CompiledPolicy;
use tollgate_core::synth::{self, Addressing, TcpHeader};
use tollgate_core::wire::tcp::flags;

const FLOWS: u16 = 300;

fn no_rules(config: &Config) -> CompiledPolicy {
    CompiledPolicy::compile(&PolicySet::default(), config.policy_defaults(), 1)
}

struct Rings {
    rx: Vec<Arc<MbufRing>>,
    tx: Vec<Arc<MbufRing>>,
}

fn ring_port(name: &str, queues: usize, tx_slots: u32) -> (RingPort, Rings) {
    let rx: Vec<_> = (0..queues)
        .map(|q| MbufRing::new(&format!("{name}_rx{q}"), 4096).unwrap())
        .collect();
    let tx: Vec<_> = (0..queues)
        .map(|q| MbufRing::new(&format!("{name}_tx{q}"), tx_slots).unwrap())
        .collect();
    (RingPort::new(name, &rx, &tx).unwrap(), Rings { rx, tx })
}

fn inject(pool: &Mempool, ring: &MbufRing, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(dpdk::BURST_SIZE) {
        let mut b = Burst::new();
        for f in chunk {
            let mut m = pool.alloc().expect("pool has room for the test frames");
            m.append(f).unwrap();
            b.push(m).unwrap();
        }
        assert_eq!(ring.enqueue_burst(&mut b), chunk.len());
    }
}

/// Takes every frame transmitted on these rings.
fn collect(rings: &[Arc<MbufRing>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in rings {
        let mut b = Burst::new();
        while r.dequeue_burst(&mut b) > 0 {
            for m in b.drain() {
                out.push(m.data().to_vec());
            }
        }
    }
    out
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One UDP flow owned by each of `workers` under software steering: its frame to the server
/// and its reply.
fn markers(workers: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut owned: Vec<Option<(Vec<u8>, Vec<u8>)>> = vec![None; workers];
    for port in 1000u16.. {
        let src: std::net::SocketAddr = format!("198.18.0.200:{port}").parse().unwrap();
        let dst: std::net::SocketAddr = "198.18.1.200:7".parse().unwrap();
        let (key, _) = FlowKey::from_packet(src.ip(), dst.ip(), 17, src.port(), dst.port());
        let owner = FlowTable::shard_of(key.software_hash(), workers);
        if owned[owner].is_none() {
            let a = Addressing::new(src, dst);
            owned[owner] = Some((
                synth::udp(&a, b"marker"),
                synth::udp(&a.reversed(), b"marker"),
            ));
        }
        if owned.iter().all(Option::is_some) {
            break;
        }
    }
    owned.into_iter().flatten().collect()
}

fn multiset(frames: &[Vec<u8>]) -> HashMap<Vec<u8>, usize> {
    let mut m = HashMap::new();
    for f in frames {
        *m.entry(f.clone()).or_default() += 1;
    }
    m
}

#[test]
fn two_workers_forward_every_frame_once_keep_flows_whole_and_leak_nothing() {
    let _eal = common::eal_without_hugepages("dp-test", 256);

    // A small pool: a leak of even a few mbufs per burst shows.
    let pool = Arc::new(Mempool::pktmbuf("dp_test_pool", 8191, 32, 2176, 0).unwrap());
    let (inside, in_rings) = ring_port("in", 2, 8192);
    let (outside, out_rings) = ring_port("out", 2, 8192);

    let mut config = Config::default();
    config.ports.inside = inside.name.clone();
    config.ports.outside = outside.name.clone();
    config.ports.rx_descriptors = 64;
    config.ports.tx_descriptors = 64;
    config.ports.mbufs = 8191;
    config.ports.mbuf_cache = 32;
    config.workers.cores = vec![0, 1];
    config.flows.capacity = 4 * FLOWS as usize;
    // Half-open synthetic TCP flows: the bump in the wire forwards them; proxying them would
    // wait for servers that do not exist.
    config.policy.default_tcp = tollgate_control::policy::Action::Bypass;
    config.validate(&[]).unwrap();

    let baseline = pool.in_use();
    let mut dp = Dataplane::start(
        &config,
        [inside.id, outside.id],
        pool.clone(),
        no_rules(&config),
    )
    .unwrap();
    assert_eq!(
        dp.steering(),
        dpdk::Steering::Software,
        "ring ports cannot hash"
    );

    // Client to server on the inside port, the replies on the outside port,
    // each on the queue the other direction did not use.
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    for i in 0..FLOWS {
        let a = Addressing::new(
            format!("198.18.0.{}:{}", 1 + i % 3, 20000 + i)
                .parse()
                .unwrap(),
            "198.18.1.2:443".parse().unwrap(),
        );
        to_server.push((
            i as usize % 2,
            synth::tcp(
                &a,
                TcpHeader {
                    flags: flags::SYN,
                    seq: 1,
                    ..Default::default()
                },
                b"",
            ),
        ));
        to_client.push((
            (i as usize + 1) % 2,
            synth::tcp(
                &a.reversed(),
                TcpHeader {
                    flags: flags::SYN | flags::ACK,
                    seq: 9,
                    ack: 2,
                    ..Default::default()
                },
                b"",
            ),
        ));
        to_server.push((
            i as usize % 2,
            synth::tcp(
                &a,
                TcpHeader {
                    flags: flags::ACK,
                    seq: 2,
                    ack: 10,
                    ..Default::default()
                },
                &[i as u8; 100],
            ),
        ));
    }
    let v6 = Addressing::new(
        "[2001:2::1]:5000".parse().unwrap(),
        "[2001:2::2]:53".parse().unwrap(),
    );
    to_server.push((1, synth::udp(&v6, b"query")));
    to_client.push((0, synth::udp(&v6.reversed(), b"answer")));
    // Not IP, and broken IP: both must pass (malformed.action = forward).
    to_server.push((
        0,
        synth::arp_request(synth::CLIENT_MAC, [198, 18, 0, 1], [198, 18, 1, 2]),
    ));
    let mut truncated = synth::tcp(
        &Addressing::new(
            "198.18.0.9:1".parse().unwrap(),
            "198.18.1.2:2".parse().unwrap(),
        ),
        TcpHeader::default(),
        b"",
    );
    truncated[14 + 20 + 12] = 0xf0; // TCP data offset 15 words: past the frame's end
    to_server.push((1, truncated));

    for (q, ring) in in_rings.rx.iter().enumerate() {
        let frames: Vec<_> = to_server
            .iter()
            .filter(|(fq, _)| *fq == q)
            .map(|(_, f)| f.clone())
            .collect();
        inject(&pool, ring, &frames);
    }
    for (q, ring) in out_rings.rx.iter().enumerate() {
        let frames: Vec<_> = to_client
            .iter()
            .filter(|(fq, _)| *fq == q)
            .map(|(_, f)| f.clone())
            .collect();
        inject(&pool, ring, &frames);
    }

    let expect_out = to_server.len();
    let expect_in = to_client.len();
    let mut got_out = Vec::new();
    let mut got_in = Vec::new();
    wait_for("every frame to cross", || {
        got_out.extend(collect(&out_rings.tx));
        got_in.extend(collect(&in_rings.tx));
        let done = got_out.len() >= expect_out && got_in.len() >= expect_in;
        if !done {
            eprintln!(
                "out {}/{expect_out} in {}/{expect_in}\n{}",
                got_out.len(),
                got_in.len(),
                dp.snapshot().render_table()
            );
        }
        done
    });
    // A frame sent twice could still be on its way. Markers follow every path a frame takes:
    // into each queue of each port, to each worker as owner. A worker sends what it decides in
    // order, and rings and handoffs keep it, so once every marker is out, anything the frames
    // before them caused has been sent too.
    let markers = markers(2);
    let to_server_markers: Vec<_> = markers.iter().map(|m| m.0.clone()).collect();
    let to_client_markers: Vec<_> = markers.iter().map(|m| m.1.clone()).collect();
    for ring in &in_rings.rx {
        inject(&pool, ring, &to_server_markers);
    }
    for ring in &out_rings.rx {
        inject(&pool, ring, &to_client_markers);
    }
    // Each way, every marker once per queue.
    let marker_frames = (markers.len() * in_rings.rx.len()) as u64;
    let marked =
        |frames: &[Vec<u8>], marker: &Vec<u8>| frames.iter().filter(|f| *f == marker).count();
    wait_for("every marker to cross", || {
        got_out.extend(collect(&out_rings.tx));
        got_in.extend(collect(&in_rings.tx));
        markers.iter().all(|(to_server, to_client)| {
            marked(&got_out, to_server) == in_rings.rx.len()
                && marked(&got_in, to_client) == out_rings.rx.len()
        })
    });
    got_out.retain(|f| !markers.iter().any(|(m, _)| m == f));
    got_in.retain(|f| !markers.iter().any(|(_, m)| m == f));

    // Each frame left by the other port, once, byte for byte.
    let sent_out: Vec<_> = to_server.iter().map(|(_, f)| f.clone()).collect();
    let sent_in: Vec<_> = to_client.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(multiset(&got_out), multiset(&sent_out));
    assert_eq!(multiset(&got_in), multiset(&sent_in));

    let snap = dp.stop().unwrap();
    // One flow entry per flow (both directions on one worker), never two.
    let flows = FLOWS as u64 + 1 + markers.len() as u64;
    assert_eq!(snap.totals.flows_created, flows, "{}", snap.render_table());
    assert_eq!(snap.totals.flows_active, flows);
    assert_eq!(snap.flows_split_across_workers, 0);
    assert!(
        snap.totals.handoff_out > 0 && snap.totals.handoff_out == snap.totals.handoff_in,
        "{}",
        snap.render_table()
    );
    assert!(
        snap.workers.iter().all(|w| w.flows_active > 0),
        "flows spread over both workers: {}",
        snap.render_table()
    );
    assert_eq!(snap.totals.non_ip, 1);
    assert_eq!(
        snap.malformed["tcp_bad_data_offset"], 1,
        "{:?}",
        snap.malformed
    );
    assert_eq!(snap.totals.malformed_forwarded, 1);
    assert_eq!(snap.drops.values().sum::<u64>(), 0, "{:?}", snap.drops);
    let (expect_in, expect_out) = (
        expect_in as u64 + marker_frames,
        expect_out as u64 + marker_frames,
    );
    assert_eq!(snap.totals.rx_packets, expect_in + expect_out);
    assert_eq!(snap.totals.tx_packets, expect_in + expect_out);
    assert_eq!(snap.ports["inside"].ipackets, expect_out);
    assert_eq!(snap.ports["outside"].opackets, expect_out);

    drop(in_rings);
    drop(out_rings);
    drop(inside);
    drop(outside);
    // Every mbuf is back: in flight ones were freed by their last owner.
    assert_eq!(pool.in_use(), baseline, "mbufs leaked");

    // Stage 2: a TX queue that refuses frames. The outside TX rings hold 31
    // frames each and nobody drains them: the worker retries a bounded number
    // of times, then frees and counts what the driver would not take.
    let (inside, in_rings) = ring_port("in2", 1, 8192);
    let (outside, out_rings) = ring_port("out2", 1, 32);
    config.ports.inside = inside.name.clone();
    config.ports.outside = outside.name.clone();
    config.workers.cores = vec![0];
    let mut dp = Dataplane::start(
        &config,
        [inside.id, outside.id],
        pool.clone(),
        no_rules(&config),
    )
    .unwrap();
    let a = Addressing::new(
        "198.18.0.1:1000".parse().unwrap(),
        "198.18.1.2:80".parse().unwrap(),
    );
    let frames: Vec<_> = (0..500u32)
        .map(|i| {
            synth::tcp(
                &a,
                TcpHeader {
                    flags: flags::ACK,
                    seq: i,
                    ..Default::default()
                },
                b"x",
            )
        })
        .collect();
    inject(&pool, &in_rings.rx[0], &frames);
    wait_for("the worker to take every frame", || {
        let s = dp.snapshot();
        s.totals.rx_packets == 500 && s.totals.tx_packets + s.drops["tx_full"] == 500
    });
    let refused = dp.snapshot();
    assert_eq!(refused.totals.tx_packets, 31, "{}", refused.render_table());
    assert_eq!(refused.drops["tx_full"], 500 - 31);
    assert_eq!(out_rings.tx[0].count(), 31);

    // The pressure ends (the TX ring drains): forwarding resumes, nothing more is dropped.
    assert_eq!(collect(&out_rings.tx).len(), 31);
    inject(&pool, &in_rings.rx[0], &frames[..20]);
    wait_for("forwarding to resume", || {
        dp.snapshot().totals.tx_packets == 31 + 20
    });
    let snap = dp.stop().unwrap();
    assert_eq!(snap.drops["tx_full"], 500 - 31, "{}", snap.render_table());
    assert_eq!(collect(&out_rings.tx), frames[..20].to_vec());
    drop(in_rings);
    drop(out_rings);
    drop(inside);
    drop(outside);
    assert_eq!(
        pool.in_use(),
        baseline,
        "mbufs leaked on the TX-refusal path"
    );
}
