//! What the EAL integration tests share.

use dpdk::Eal;

/// The EAL on virtual devices alone, in `memory_mb` of ordinary memory (no hugepages), under a
/// file prefix of its own: `tg-<name>-<pid>`, so that no two test processes, nor a tollgate
/// running on the machine, share one.
pub fn eal_without_hugepages(name: &str, memory_mb: u32) -> Eal {
    let prefix = format!("tg-{name}-{}", std::process::id());
    let memory = memory_mb.to_string();
    Eal::init([
        name,
        "--no-huge",
        "-m",
        &memory,
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:warning",
    ])
    .unwrap()
}

/// Whether `frame` is an IPv4 fragment of the datagram identified by `id`: how a test picks its
/// own fragments out of what a port sent, among the segments and ACKs its proxied flows may
/// still be sending.
#[allow(dead_code)]
pub fn ipv4_fragment_of(frame: &[u8], id: u16) -> bool {
    frame.len() > 34
        && u16::from_be_bytes([frame[12], frame[13]]) == 0x0800
        && u16::from_be_bytes([frame[18], frame[19]]) == id
        && u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff != 0
}

/// A ring port's queues as the test sees them: it enqueues on `rx` what the port receives, and
/// dequeues from `tx` what the port sent.
#[allow(dead_code)]
pub struct Rings {
    pub rx: Vec<std::sync::Arc<dpdk::MbufRing>>,
    pub tx: Vec<std::sync::Arc<dpdk::MbufRing>>,
}

/// A `net_ring` port of `queues` queue pairs, 1024 slots each way.
#[allow(dead_code)]
pub fn ring_port(name: &str, queues: usize) -> (dpdk::RingPort, Rings) {
    let ring =
        |dir: &str, q: usize| dpdk::MbufRing::new(&format!("{name}_{dir}{q}"), 1024).unwrap();
    let rx: Vec<_> = (0..queues).map(|q| ring("rx", q)).collect();
    let tx: Vec<_> = (0..queues).map(|q| ring("tx", q)).collect();
    (
        dpdk::RingPort::new(name, &rx, &tx).unwrap(),
        Rings { rx, tx },
    )
}

/// Collects what the port sends on any queue until `done` says it has what it needs (10 s at
/// most), and returns all of it.
#[allow(dead_code)]
pub fn wait_for(
    what: &str,
    rings: &Rings,
    mut done: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    loop {
        for r in &rings.tx {
            let mut b = dpdk::Burst::new();
            while r.dequeue_burst(&mut b) > 0 {
                // The proxy's data segments are chains: headers, then the payload.
                got.extend(b.drain().map(|m| m.to_vec()));
            }
        }
        if done(&got) {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The first of `frames` that is a TCP segment carrying `flags`.
#[allow(dead_code)]
pub fn with_flags(
    frames: &[Vec<u8>],
    flags: tollgate_core::tcp::segment::TcpFlags,
) -> Option<tollgate_core::proxy::Inbound> {
    frames
        .iter()
        .filter_map(|f| tollgate_core::proxy::Inbound::read(f).ok())
        .find(|s| s.header.flags.contains(flags))
}
