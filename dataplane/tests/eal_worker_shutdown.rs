//! A worker stopping with frames other workers handed it still in its rings: it forwards and
//! counts them before it returns, rather than leave them to be freed with the rings. One
//! worker on ring ports, its incoming handoff ring filled by the test, which stands in for
//! another worker that has handed over its last frames. Its own process: the EAL initialises
//! once per process.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use dpdk::{Burst, MbufRing, Mempool, Port, PortConfig, RingPort};
use tollgate::config::Config;
use tollgate::daemon::{flow_table_config, proxy_settings};
use tollgate::worker::{HandoffsDone, Worker, WorkerReport};
use tollgate_control::policy::PolicySet;
use tollgate_core::pipeline::{Pipeline, PipelineConfig};
use tollgate_core::policy::{CompiledPolicy, PolicyBoard};
use tollgate_core::proxy::ProxyTable;
use tollgate_core::shard::Shard;
use tollgate_core::synth::{self, Addressing};
use tollgate_core::tcp::inspect::SignatureInspector;

const FRAMES: usize = 100;

#[test]
fn a_stopping_worker_forwards_and_counts_what_was_handed_to_it() {
    let _eal = common::eal_without_hugepages("shutdown-test", 128);
    let pool = Arc::new(Mempool::pktmbuf("shutdown_pool", 2047, 0, 2176, 0).unwrap());
    let rings = |name: &str| {
        let rx = MbufRing::new(&format!("{name}_rx"), 1024).unwrap();
        let tx = MbufRing::new(&format!("{name}_tx"), 1024).unwrap();
        let port = RingPort::new(name, &[rx], std::slice::from_ref(&tx)).unwrap();
        (port, tx)
    };
    let (inside, _) = rings("in");
    let (outside, outside_tx) = rings("out");

    let mut config = Config::default();
    config.workers.cores = vec![0];
    let port_config = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 64,
        tx_descriptors: 64,
        rss: false,
        promiscuous: true,
    };
    let mut queues = Vec::new();
    let mut ports = Vec::new();
    for ring_port in [&inside, &outside] {
        let mut port = Port::configure(ring_port.id, &ring_port.name, &port_config, &pool).unwrap();
        let (mut rx, mut tx) = port.take_queues().unwrap();
        queues.push((rx.remove(0), tx.remove(0)));
        port.start().unwrap();
        ports.push(port);
    }
    let [(in_rx, in_tx), (out_rx, out_tx)]: [_; 2] = queues.try_into().ok().unwrap();

    // What another worker handed over just before it stopped: UDP frames, which are
    // forwarded (bypassed) by default, from the inside port.
    let baseline = pool.in_use();
    let (mut producer, consumer) = MbufRing::spsc("handoff_1to0", 1024).unwrap();
    let addressing = Addressing::new(
        "198.18.0.1:5000".parse().unwrap(),
        "198.18.1.2:4500".parse().unwrap(),
    );
    for i in 0..FRAMES {
        let mut m = pool.alloc().unwrap();
        m.append(&synth::udp(&addressing, &[i as u8; 64])).unwrap();
        producer.enqueue(m).ok().unwrap();
    }

    let policy = CompiledPolicy::compile(&PolicySet::default(), config.policy_defaults(), 1);
    let board = Arc::new(PolicyBoard::new(policy, 1));
    let (_commands, command_rx) = crossbeam::channel::bounded(1);
    let worker = Worker {
        id: 0,
        core: None,
        shard: Shard::new(
            Pipeline::new(
                PipelineConfig {
                    flows: flow_table_config(&config),
                    malformed: config.malformed.action,
                    on_table_full: config.flows.on_full,
                    audit_new_flows: false,
                    reassembly: config.reassembly.enabled,
                    rss: None,
                    on_midstream: config.proxy.on_midstream,
                },
                board.current(),
            ),
            ProxyTable::new(
                proxy_settings(&config),
                Arc::new(SignatureInspector::new(&[]).unwrap()),
                [1; 16],
            ),
        ),
        rx: [in_rx, out_rx],
        tx: [in_tx, out_tx],
        port_ids: [inside.id, outside.id],
        steer: None,
        use_nic_hash: false,
        handoff_out: vec![None, None],
        handoff_in: vec![consumer],
        // The test is the other worker, done handing over.
        handoffs_done: Arc::new(HandoffsDone::new(1)),
        tx_retries: 4,
        idle_sleep: None,
        // Stopped before it polls once: all it does is what a worker does at shutdown.
        running: Arc::new(AtomicBool::new(false)),
        draining: Arc::new(AtomicBool::new(false)),
        report: Arc::new(Mutex::new(WorkerReport::default())),
        audit: None,
        policy: board,
        commands: command_rx,
        pool: pool.clone(),
        tx_multi_seg: false,
        fragments: tollgate_core::ip_reassembly::FragmentTable::new(
            config.reassembly.table_config(),
        ),
        large_pool: None,
    };
    let report = worker.run();
    let c = &report.counters;
    assert_eq!(
        (c.handoff_in, c.tx_packets),
        (FRAMES as u64, FRAMES as u64),
        "every frame handed over is taken and forwarded"
    );
    assert_eq!(c.drops.iter().sum::<u64>(), 0, "{c:?}");
    let mut sent = 0;
    let mut b = Burst::new();
    while outside_tx.dequeue_burst(&mut b) > 0 {
        sent += b.len();
        b.clear();
    }
    assert_eq!(sent, FRAMES, "on the outside port");
    assert_eq!(pool.in_use(), baseline, "no mbuf left behind");
    for mut port in ports {
        port.stop().unwrap();
    }
}
