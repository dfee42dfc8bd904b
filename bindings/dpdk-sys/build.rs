//! Generates bindings to the system DPDK and builds the fast-path shim.
//!
//! Every flag `pkg-config --cflags libdpdk` prints goes to both clang (bindgen)
//! and the C compiler: Debian's libdpdk.pc carries `-include rte_config.h` and
//! `-march=...`, without which the headers describe a different build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_DPDK: &str = "22.11";

fn fail(message: &str) -> ! {
    // One line a person can act on; cargo prints it under the build script's stderr.
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    std::process::exit(1);
}

fn dpdk_cflags() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("pkg-config could not be run ({e}): run `sudo scripts/setup` to install DPDK and its build tools")));
    if !out.status.success() {
        fail("DPDK (libdpdk) not found by pkg-config: run `sudo scripts/setup` to install DPDK 22.11 (dpdk, libdpdk-dev)");
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let library = pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .cargo_metadata(true)
        .probe("libdpdk")
        .unwrap_or_else(|_| {
            fail("DPDK >= 22.11 (libdpdk) not found by pkg-config: run `sudo scripts/setup` to install it (dpdk, libdpdk-dev)")
        });
    // The ring PMD's constructor API (rte_eth_from_rings) is not part of
    // libdpdk.pc's default link line; tests and benchmarks need it.
    println!("cargo:rustc-link-lib=rte_net_ring");
    println!("cargo:version={}", library.version);

    let cflags = dpdk_cflags();

    let mut shim = cc::Build::new();
    shim.file("shim/shim.c").include("shim").opt_level(3);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.flag_if_supported("-Wno-unused-parameter");
    shim.compile("tollgate_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .allowlist_function("rte_(eal|eth|pktmbuf|mempool|lcore|socket|ring|thread|dev|vdev|pdump|version|strerror|get_tsc|get_main_lcore|delay|exit|log).*")
        .allowlist_function("rte_tel(emetry)?_.*")
        .allowlist_function("tg_.*")
        .allowlist_type("rte_(mbuf|eth|mempool|ring|ether).*")
        .allowlist_var("RTE_(ETH|MBUF|PKTMBUF|MAX|LCORE|RING|MEMPOOL|ETHER)_.*")
        .allowlist_var("TG_.*")
        // Packed-and-aligned headers trip rustc (E0587/E0588); nothing here
        // reads their fields through bindgen.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on the DPDK headers: {e}")));

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("writing bindings: {e}")));
}
