//! Links the daemon so DPDK's drivers unmap through `dpdk`'s `munmap`, which holds the EAL's
//! interrupt thread until the workers are between bursts (see `dpdk::Poller`): without it,
//! a memif peer that leaves gets its rings unmapped under a worker's receive burst.

fn main() {
    // Into the dynamic symbol table, where the drivers (loaded with dlopen) look first.
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=munmap");
    // And linked in at all: nothing in the executable names it.
    println!("cargo:rustc-link-arg-bins=-Wl,--undefined=munmap");
}
