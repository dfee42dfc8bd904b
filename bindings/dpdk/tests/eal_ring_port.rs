//! The safe layer against a real EAL on ring-backed ports. The EAL can be
//! initialised once per process, so this file holds a single test.

use dpdk::{Burst, Eal, MbufRing, Mempool, Port, PortConfig, RingPort, Steering, BURST_SIZE};

fn frame(i: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08; // IPv4 ethertype, so it looks like what ports carry
    f[63] = i;
    f
}

#[test]
fn ring_ports_move_owned_mbufs_and_nothing_leaks() {
    // --no-huge cannot be combined with --in-memory; a per-process file
    // prefix keeps concurrent test processes apart instead.
    let prefix = format!("tg-test-{}", std::process::id());
    let _eal = Eal::init([
        "eal-test",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:warning",
    ])
    .expect("EAL init");
    assert!(
        Eal::init(["again"]).is_err(),
        "a second init must be an error, not a crash"
    );

    let pool = Mempool::pktmbuf("test_pool", 255, 0, 2176, 0).expect("pool");
    let rx_ring = MbufRing::new("test_rx", 64).unwrap();
    let tx_ring = MbufRing::new("test_tx", 32).unwrap(); // 31 usable slots
    let dev = RingPort::new(
        "test0",
        std::slice::from_ref(&rx_ring),
        std::slice::from_ref(&tx_ring),
    )
    .unwrap();
    assert_eq!(dev.name, "net_ring_test0");
    assert_eq!(Port::lookup("net_ring_test0").unwrap(), dev.id);
    assert!(Port::lookup("net_nonexistent9").is_err());

    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 64,
        tx_descriptors: 64,
        rss: true,
        promiscuous: true,
    };
    let mut port = Port::configure(dev.id, &dev.name, &cfg, &pool).expect("configure");
    // The ring PMD cannot hash; one queue needs no spreading either.
    assert_eq!(port.steering(), Steering::Software);
    let (mut rxq, mut txq) = port.take_queues().unwrap();
    assert!(port.take_queues().is_err(), "queues are handed out once");
    port.start().unwrap();
    assert!(port.link().up);

    let baseline = pool.in_use();
    // Frames "arrive": put mbufs on the RX ring.
    let mut inject = Burst::new();
    for i in 0..10u8 {
        let mut m = pool.alloc().expect("alloc");
        m.append(&frame(i)).unwrap();
        inject.push(m).unwrap();
    }
    assert_eq!(rx_ring.enqueue_burst(&mut inject), 10);
    assert!(inject.is_empty());

    let mut burst = Burst::new();
    assert_eq!(rxq[0].rx_burst(&mut burst), 10);
    for (i, m) in burst.as_slice().iter().enumerate() {
        assert_eq!(m.pkt_len(), 64);
        assert_eq!(m.data()[63], i as u8, "frames keep their order and bytes");
        assert_eq!(m.rss_hash(), None);
        assert_eq!(m.refcnt(), 1);
    }
    assert_eq!(txq[0].tx_burst(&mut burst), 10);
    assert!(burst.is_empty());
    assert_eq!(tx_ring.count(), 10);

    let stats = port.stats().unwrap();
    assert_eq!(stats.ipackets, 10);
    assert_eq!(stats.opackets, 10);

    // TX refusing frames: fill the TX ring so the driver takes only a prefix;
    // the rest must stay in the burst, owned, in order.
    let mut fill = Burst::new();
    for i in 0..BURST_SIZE as u8 {
        let mut m = pool.alloc().unwrap();
        m.append(&frame(100 + i)).unwrap();
        fill.push(m).unwrap();
    }
    let free_slots = 31 - tx_ring.count() as usize;
    let sent = txq[0].tx_burst(&mut fill);
    assert!(sent < BURST_SIZE);
    assert_eq!(sent, free_slots.min(BURST_SIZE));
    assert_eq!(fill.len(), BURST_SIZE - sent);
    assert_eq!(fill.as_slice()[0].data()[63], 100 + sent as u8);
    drop(fill); // frees what TX refused

    // Drain the TX ring back to the pool; every mbuf comes home.
    let mut out = Burst::new();
    while tx_ring.dequeue_burst(&mut out) > 0 {
        out.clear();
    }
    assert_eq!(pool.in_use(), baseline, "no mbuf leaked");

    // Exhaust the pool: alloc fails cleanly and recovers once mbufs return.
    let mut held = Vec::new();
    while let Some(m) = pool.alloc() {
        held.push(m);
    }
    assert_eq!(held.len() as u32, pool.size());
    assert!(pool.alloc().is_none());
    held.clear();
    assert!(pool.alloc().is_some());

    // A single-producer/single-consumer ring between two threads.
    let (mut producer, mut consumer) = MbufRing::spsc("test_spsc", 64).unwrap();
    let pool = std::sync::Arc::new(pool);
    let p2 = pool.clone();
    std::thread::spawn(move || {
        for i in 0..20u8 {
            let mut m = p2.alloc().unwrap();
            m.append(&frame(i)).unwrap();
            producer.enqueue(m).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut got = Burst::new();
    assert_eq!(consumer.dequeue_burst(&mut got), 20);
    assert!(got
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, m)| m.data()[63] == i as u8));
    drop(got);
    assert_eq!(pool.in_use(), baseline);

    port.stop().unwrap();
}
