//! Multi-segment TX on net_af_packet, the driver tollgate runs on veths in
//! development: a header mbuf with a zero-copy payload segment leaves one
//! veth and arrives on its peer as one frame, header then payload.
//!
//! The veth pair lives in a network namespace of this test's own (the
//! thread unshares before creating anything), so no traffic reaches the
//! host's interfaces and the pair vanishes with the process. Needs root;
//! without it the test says so and passes.

use std::process::Command;
use std::time::{Duration, Instant};

use dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig};

/// IEEE 802 local experimental ethertype: nothing else on the link uses it
/// (the kernel's own IPv6 chatter on a fresh veth is filtered out by it).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

fn port(name: &str, pool: &Mempool) -> Port {
    let id = Port::lookup(name).expect("af_packet vdev probed");
    let info = Port::info(id).unwrap();
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 128,
        tx_descriptors: 128,
        rss: false,
        promiscuous: true,
    };
    let port = Port::configure(id, name, &cfg, pool).expect("configure");
    println!(
        "{name} ({}): tx_offload_capa {:#x}, multi-segment TX {}",
        info.driver,
        info.tx_offloads,
        port.tx_multi_seg()
    );
    port
}

#[test]
fn af_packet_sends_chained_frames_whole() {
    // SAFETY: unshare changes only this thread's network namespace; every
    // thread and process it starts from here (ip, the EAL's) inherits it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "skipped: cannot create a network namespace ({}); run as root",
            std::io::Error::last_os_error()
        );
        return;
    }
    ip(&[
        "link", "add", "tgms0", "type", "veth", "peer", "name", "tgms1",
    ]);
    ip(&["link", "set", "dev", "tgms0", "up"]);
    ip(&["link", "set", "dev", "tgms1", "up"]);

    let prefix = format!("tg-afp-test-{}", std::process::id());
    let _eal = Eal::init([
        "eal-afp-test",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:warning",
        "--vdev",
        "net_af_packet0,iface=tgms0",
        "--vdev",
        "net_af_packet1,iface=tgms1",
    ])
    .expect("EAL init");

    let pool = Mempool::pktmbuf("afp_pool", 255, 0, 2176, 0).expect("pool");
    let indirect = Mempool::pktmbuf("afp_indirect", 15, 0, 0, 0).expect("indirect pool");
    let mut a = port("net_af_packet0", &pool);
    let mut b = port("net_af_packet1", &pool);
    assert!(
        a.tx_multi_seg() && b.tx_multi_seg(),
        "net_af_packet reports RTE_ETH_TX_OFFLOAD_MULTI_SEGS"
    );
    let (_, mut txq) = a.take_queues().unwrap();
    let (mut rxq, _) = b.take_queues().unwrap();
    a.start().unwrap();
    b.start().unwrap();
    let start = pool.available();

    // Payload that "arrived" in some other frame, kept in its mbuf.
    let mut arrived = Mbuf::alloc(&pool).unwrap();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    arrived.append(&bytes).unwrap();
    let payload = arrived.into_slice(54, 900).unwrap();

    let mut frame = Mbuf::alloc(&pool).unwrap();
    let h = frame.append_uninit(14).unwrap();
    h[..6].fill(0xff);
    h[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    h[12..].copy_from_slice(&ETHERTYPE);
    let mut expected = frame.to_vec();
    frame.chain_slice(&payload, &indirect).unwrap();
    expected.extend_from_slice(payload.bytes());
    assert_eq!(frame.segments(), 2);
    assert_eq!(payload.mbuf_refcnt(), 2);

    let mut burst = Burst::new();
    burst.push(frame).unwrap();
    assert_eq!(txq[0].tx_burst(&mut burst), 1);
    // net_af_packet copies every segment into the socket's ring and frees
    // the frame at once: the payload's reference comes back.
    assert_eq!(payload.mbuf_refcnt(), 1);
    assert_eq!(indirect.available(), 15);

    // The kernel passes the frame across the veth pair on its own schedule: waited for, with
    // a bound only a broken path reaches.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "the frame had not reached the peer veth after 30 s"
        );
        let mut rx = Burst::new();
        rxq[0].rx_burst(&mut rx);
        if let Some(m) = rx
            .as_slice()
            .iter()
            .find(|m| m.data().get(12..14) == Some(&ETHERTYPE[..]))
        {
            break m.to_vec();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(got.len(), 14 + 900);
    assert_eq!(
        got, expected,
        "header followed by exactly the slice's bytes"
    );

    drop(payload);
    assert_eq!(pool.available(), start, "no mbuf leaked");
    a.stop().unwrap();
    b.stop().unwrap();
}
