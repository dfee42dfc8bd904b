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
