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
