//! RSS on a real EAL: a null device (`net_null`, which keeps a redirection table and a hash key
//! as a NIC does) configured for symmetric RSS over several queues takes the redirection table
//! tollgate programs, and the port says what it hashes with, so that software can compute the
//! queue a NIC would pick. The EAL can be initialised once per process, so this file holds a
//! single test.

use dpdk::{Eal, Mempool, Port, PortConfig, Steering, SYMMETRIC_RSS_KEY};

#[test]
fn a_port_under_symmetric_rss_reports_the_key_and_redirection_table_it_was_given() {
    let prefix = format!("tg-rss-test-{}", std::process::id());
    let _eal = Eal::init([
        "rss-test",
        "--no-huge",
        "-m",
        "128",
        "--no-pci",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:warning",
    ])
    .expect("EAL init");
    let pool = Mempool::pktmbuf("rss_test_pool", 1023, 0, 2176, 0).expect("pool");
    let info = Port::info(Port::lookup("net_null0").unwrap()).unwrap();
    assert!(info.reta_size > 0, "net_null keeps a redirection table");

    for (name, queues) in [("net_null0", 3u16), ("net_null1", 1)] {
        let id = Port::lookup(name).unwrap();
        let cfg = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: 64,
            tx_descriptors: 64,
            rss: true,
            promiscuous: false,
        };
        let mut port = Port::configure(id, name, &cfg, &pool).expect("configure");
        if queues == 1 {
            // One queue needs no spreading, and nothing is programmed.
            assert_eq!(port.steering(), Steering::Software);
            assert!(port.rss().is_none());
            continue;
        }
        assert_eq!(port.steering(), Steering::SymmetricRss);
        let rss = port.rss().expect("an RSS setup").clone();
        let reta = rss.reta.expect("the driver shows its redirection table");
        assert_eq!(reta.len(), usize::from(info.reta_size));
        for (i, &queue) in reta.iter().enumerate() {
            assert_eq!(usize::from(queue), i % usize::from(queues), "entry {i}");
        }
        assert!(rss.key.len() >= 40, "long enough for IPv6 and ports");
        assert!(rss
            .key
            .chunks(2)
            .all(|pair| pair == &SYMMETRIC_RSS_KEY[..pair.len()]));
        assert_ne!(rss.flow_types, 0);
        port.start().unwrap();
        port.stop().unwrap();
    }
}
