//! Zero-copy payload against a real EAL: slices share a received mbuf by
//! reference count, frames carry them behind new headers, and every mbuf
//! comes home. The EAL can be initialised once per process, so this file
//! holds a single test.

use std::sync::Arc;

use dpdk::{Burst, ChainError, Eal, Mbuf, MbufRing, Mempool, Port, PortConfig, RingPort};

/// A received frame: 54 bytes of Ethernet/IPv4/TCP header, then payload.
fn received(pool: &Mempool, payload_len: usize) -> Mbuf {
    let mut m = Mbuf::alloc(pool).expect("alloc");
    let bytes: Vec<u8> = (0..54 + payload_len).map(|i| i as u8).collect();
    m.append(&bytes).unwrap();
    m
}

fn header(pool: &Mempool, tag: u8) -> Mbuf {
    let mut m = Mbuf::alloc(pool).expect("alloc");
    let h = m.append_uninit(54).expect("room for a header");
    assert!(h.iter().all(|&b| b == 0), "appended bytes come zeroed");
    h.fill(tag);
    m
}

fn ring_port(
    name: &str,
    rx: &Arc<MbufRing>,
    tx: &Arc<MbufRing>,
    pool: &Mempool,
) -> (RingPort, Port) {
    let dev = RingPort::new(name, std::slice::from_ref(rx), std::slice::from_ref(tx)).unwrap();
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 64,
        tx_descriptors: 64,
        rss: false,
        promiscuous: true,
    };
    let port = Port::configure(dev.id, &dev.name, &cfg, pool).expect("configure");
    (dev, port)
}

#[test]
fn slices_share_received_mbufs_and_nothing_leaks() {
    let prefix = format!("tg-slice-test-{}", std::process::id());
    let _eal = Eal::init([
        "eal-slice-test",
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

    // No per-lcore cache, so available() is exact after every step.
    let pool = Mempool::pktmbuf("slice_pool", 63, 0, 2176, 0).expect("pool");
    // Indirect mbufs carry no bytes of their own: a pool without data room.
    let indirect = Mempool::pktmbuf("slice_indirect", 7, 0, 0, 0).expect("indirect pool");
    let start = (pool.available(), indirect.available());
    let settled = |what: &str| {
        assert_eq!(
            (pool.available(), indirect.available()),
            start,
            "mbufs leaked after {what}"
        );
    };

    // Out of range: the mbuf comes back intact.
    let m = received(&pool, 100);
    let m = m.into_slice(54, 101).expect_err("past data_len");
    let m = m
        .into_slice(usize::MAX, 2)
        .expect_err("offset + len overflows");
    assert_eq!(m.pkt_len(), 154);
    assert_eq!(m.data()[153], 153);

    // Refcounts rise with clone, slice and chain, and fall as each goes.
    let payload = m.into_slice(54, 100).expect("in range");
    assert_eq!(payload.len(), 100);
    assert!(!payload.is_empty());
    assert_eq!(
        payload.bytes(),
        &(54..154).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    assert_eq!(payload.mbuf_refcnt(), 1);
    let copy = payload.clone();
    assert_eq!(payload.mbuf_refcnt(), 2);
    let part = payload.slice(10, 30);
    assert_eq!(payload.mbuf_refcnt(), 3);
    assert_eq!(part.bytes(), &payload.bytes()[10..30]);
    assert_eq!(part.slice(5, 5).len(), 0, "empty sub-slices are fine");
    assert!(part.slice(20, 20).is_empty());
    assert_eq!(payload.mbuf_refcnt(), 3, "temporary sub-slices released");
    let debug = format!("{part:?}");
    assert!(
        debug.contains("len: 20") && debug.contains("refcnt: 3"),
        "{debug}"
    );
    // The expected panic would print a message and backtrace; silence it.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out_of_range = std::panic::catch_unwind(|| part.slice(10, 21));
    std::panic::set_hook(hook);
    assert!(out_of_range.is_err(), "slice past the end panics");
    assert_eq!(
        payload.mbuf_refcnt(),
        3,
        "a refused sub-slice takes no reference"
    );

    // Header mbuf + the slice chained zero-copy: header bytes, then exactly
    // the slice's bytes.
    let mut frame = header(&pool, 0xee);
    let pool_before_chain = pool.available();
    frame.chain_slice(&part, &indirect).expect("chain");
    assert_eq!(
        pool.available(),
        pool_before_chain,
        "no data mbuf for the segment"
    );
    assert_eq!(indirect.available(), start.1 - 1, "one indirect mbuf");
    assert_eq!(
        payload.mbuf_refcnt(),
        4,
        "the indirect segment holds a reference"
    );
    assert_eq!(frame.segments(), 2);
    assert_eq!(frame.pkt_len(), 54 + 20);
    let mut expected = vec![0xee; 54];
    expected.extend_from_slice(part.bytes());
    assert_eq!(frame.to_vec(), expected);
    let segs: Vec<&[u8]> = frame.segment_bytes().collect();
    assert_eq!(segs, [&expected[..54], part.bytes()]);

    // The last segment shares the payload's buffer; its tailroom is other
    // slices' bytes, so appends must refuse rather than write there.
    assert_eq!(frame.append(&[1, 2, 3]), Err(3));
    assert!(frame.append_uninit(1).is_none());
    assert_eq!(frame.append_slice_copy(&part), Err(20));
    assert_eq!(payload.bytes()[30..33], [84, 85, 86], "payload untouched");

    // An empty slice adds no segment.
    frame.chain_slice(&payload.slice(0, 0), &indirect).unwrap();
    assert_eq!(frame.segments(), 2);

    // A second chained slice, from a clone, on the same frame.
    frame.chain_slice(&copy.slice(90, 100), &indirect).unwrap();
    assert_eq!(frame.segments(), 3);
    assert_eq!(payload.mbuf_refcnt(), 5);
    expected.extend_from_slice(&payload.bytes()[90..100]);
    assert_eq!(frame.to_vec(), expected);

    // The copy fallback: one segment, no reference taken.
    let mut flat = header(&pool, 0xee);
    flat.append_slice_copy(&part).unwrap();
    flat.append_slice_copy(&copy.slice(90, 100)).unwrap();
    assert_eq!(flat.segments(), 1);
    assert_eq!(flat.to_vec(), expected);
    assert_eq!(payload.mbuf_refcnt(), 5);
    drop(flat);

    // Through a net_ring port pair: A's TX ring is B's RX ring.
    let a_rx = MbufRing::new("slice_a_rx", 64).unwrap();
    let a_to_b = MbufRing::new("slice_a_to_b", 64).unwrap();
    let b_tx = MbufRing::new("slice_b_tx", 64).unwrap();
    let (dev_a, mut port_a) = ring_port("slice_a", &a_rx, &a_to_b, &pool);
    let (_dev_b, mut port_b) = ring_port("slice_b", &a_to_b, &b_tx, &pool);
    let info = Port::info(dev_a.id).unwrap();
    println!(
        "{}: tx_offload_capa {:#x}, multi-segment TX {}",
        info.driver,
        info.tx_offloads,
        port_a.tx_multi_seg()
    );
    assert!(
        port_a.tx_multi_seg(),
        "net_ring reports RTE_ETH_TX_OFFLOAD_MULTI_SEGS"
    );
    assert!(port_b.tx_multi_seg());
    let (_, mut txq_a) = port_a.take_queues().unwrap();
    let (mut rxq_b, _) = port_b.take_queues().unwrap();
    port_a.start().unwrap();
    port_b.start().unwrap();

    let mut burst = Burst::new();
    burst.push(frame).unwrap();
    assert_eq!(txq_a[0].tx_burst(&mut burst), 1);
    assert!(burst.is_empty());
    assert_eq!(rxq_b[0].rx_burst(&mut burst), 1);
    let got = &burst.as_slice()[0];
    assert_eq!(got.segments(), 3);
    assert_eq!(got.pkt_len() as usize, expected.len());
    assert_eq!(got.to_vec(), expected);
    assert_eq!(payload.mbuf_refcnt(), 5, "in flight, still referenced");
    burst.clear(); // "after TX": the frame is freed, its segments let go
    assert_eq!(payload.mbuf_refcnt(), 3);
    assert_eq!(indirect.available(), start.1);

    drop(part);
    assert_eq!(payload.mbuf_refcnt(), 2);
    drop(copy);
    assert_eq!(payload.mbuf_refcnt(), 1);
    let in_use = pool.available();
    drop(payload);
    assert_eq!(
        pool.available(),
        in_use + 1,
        "the last reference frees the mbuf"
    );
    settled("slices, chains and a ring round trip");

    // A slice outliving the frames built from it, and the reverse.
    let payload = received(&pool, 40).into_slice(54, 40).unwrap();
    let mut frame = header(&pool, 1);
    frame.chain_slice(&payload, &indirect).unwrap();
    drop(payload);
    assert_eq!(
        frame.to_vec()[54..],
        (54..94).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    drop(frame);
    settled("dropping the slice before its frame");

    // Exhausted pool: chain fails cleanly, frame and slice unchanged.
    let payload = received(&pool, 40).into_slice(54, 40).unwrap();
    let mut frame = header(&pool, 2);
    let mut held = Vec::new();
    while let Some(m) = indirect.alloc() {
        held.push(m);
    }
    assert_eq!(
        frame.chain_slice(&payload, &indirect),
        Err(ChainError::PoolEmpty)
    );
    assert_eq!((frame.segments(), frame.pkt_len()), (1, 54));
    assert_eq!(payload.mbuf_refcnt(), 1);
    held.clear();
    frame
        .chain_slice(&payload, &indirect)
        .expect("chains once mbufs return");

    // Segment limit: refused before anything is allocated. Building 65535
    // real segments would take quadratic time, so the count is set by hand.
    // SAFETY: the frame is ours and nothing walks the chain while its
    // count is wrong; chain_slice reads nb_segs and returns at once.
    unsafe { (*frame.as_ptr()).nb_segs = u16::MAX };
    assert_eq!(
        frame.chain_slice(&payload, &indirect),
        Err(ChainError::TooManySegments)
    );
    // SAFETY: restores the true count before the frame is used again.
    unsafe { (*frame.as_ptr()).nb_segs = 2 };
    assert_eq!(payload.mbuf_refcnt(), 2);
    assert_eq!(indirect.available(), start.1 - 1);
    drop((frame, payload));
    settled("chain failures");

    // into_slice of a multi-segment frame keeps the first segment only and
    // frees the rest at once.
    let mut two = received(&pool, 10);
    let tail = received(&pool, 0).into_slice(0, 54).unwrap();
    two.chain_slice(&tail, &indirect).unwrap();
    drop(tail);
    let first = two.into_slice(0, 64).unwrap();
    assert_eq!(first.mbuf_refcnt(), 1);
    assert_eq!(
        indirect.available(),
        start.1,
        "the chained segment was freed"
    );
    assert_eq!(
        first.bytes(),
        &(0..64).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    drop(first);
    settled("slicing a chained frame");

    // Slices move between threads; the last drop anywhere frees the mbuf.
    let payload = received(&pool, 100).into_slice(54, 100).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = payload.slice(i * 25, i * 25 + 25);
            std::thread::spawn(move || {
                let c = s.clone();
                assert_eq!(c.bytes()[0], (54 + i * 25) as u8);
            })
        })
        .collect();
    drop(payload);
    for h in handles {
        h.join().unwrap();
    }
    settled("slices dropped on other threads");

    port_a.stop().unwrap();
    port_b.stop().unwrap();
}
