//! The shim's mbuf functions against a real EAL (the unit tests in lib.rs
//! cover what needs none). The EAL starts once per process, so one test.

#![allow(clippy::undocumented_unsafe_blocks)] // raw FFI throughout; the contract is DPDK's

use std::ffi::{c_char, CString};

use dpdk_sys::*;

/// Linux's value; this crate has no libc dependency to name it.
const EOVERFLOW: i32 = 75;

fn eal_init() {
    let prefix = format!("tg-sys-test-{}", std::process::id());
    let args: Vec<CString> = [
        "shim-test",
        "--no-huge",
        "-m",
        "64",
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--log-level",
        "lib.eal:warning",
    ]
    .iter()
    .map(|a| CString::new(*a).unwrap())
    .collect();
    // The EAL keeps pointers into argv for the life of the process.
    let args = Box::leak(args.into_boxed_slice());
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    argv.push(std::ptr::null_mut());
    let argv = Box::leak(argv.into_boxed_slice());
    let ret = unsafe { rte_eal_init(args.len() as i32, argv.as_mut_ptr()) };
    assert!(ret >= 0, "rte_eal_init failed: {}", unsafe { tg_errno() });
}

unsafe fn fill(m: *mut rte_mbuf, bytes: &[u8]) {
    let tail = unsafe { tg_pktmbuf_append(m, bytes.len() as u16) };
    assert!(!tail.is_null());
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), tail as *mut u8, bytes.len()) };
}

#[test]
fn refcounts_and_chains_behave_as_dpdk_documents() {
    eal_init();
    let name = CString::new("sys_pool").unwrap();
    let pool = unsafe { rte_pktmbuf_pool_create(name.as_ptr(), 15, 0, 0, 2176, 0) };
    assert!(!pool.is_null());
    let start = unsafe { rte_mempool_avail_count(pool) };

    unsafe {
        let head = tg_pktmbuf_alloc(pool);
        let tail = tg_pktmbuf_alloc(pool);
        assert!(!head.is_null() && !tail.is_null());
        fill(head, &[1; 14]);
        fill(tail, &[2; 100]);

        // Update returns the new count; the last free returns the mbuf.
        assert_eq!(tg_mbuf_refcnt_read(tail), 1);
        assert_eq!(tg_mbuf_refcnt_update(tail, 1), 2);
        assert_eq!(tg_mbuf_refcnt_read(tail), 2);
        assert_eq!(tg_mbuf_refcnt_update(tail, -1), 1);

        assert_eq!(tg_pktmbuf_chain(head, tail), 0);
        assert_eq!((*head).nb_segs, 2);
        assert_eq!((*head).pkt_len, 114);
        assert_eq!((*head).next, tail);
        assert_eq!((*tail).pkt_len, 100);

        // The segment limit is enforced, and a refused tail stays unlinked.
        let extra = tg_pktmbuf_alloc(pool);
        (*extra).nb_segs = u16::MAX;
        assert_eq!(tg_pktmbuf_chain(head, extra), -EOVERFLOW);
        assert_eq!((*head).nb_segs, 2);
        assert!((*tail).next.is_null());
        (*extra).nb_segs = 1;
        tg_pktmbuf_free(extra);

        tg_pktmbuf_free(head);
        assert_eq!(rte_mempool_avail_count(pool), start);
        // Removes this process's runtime files under /var/run/dpdk.
        rte_eal_cleanup();
    }
}
