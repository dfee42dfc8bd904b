//! The control socket's counters are current: a stats (or policy list) reply includes every
//! frame the workers had taken before the request, not what they last published on their own.
//! So a check that causes something and then reads the counters once sees it, and a counter
//! that reads 0 after the traffic it is about really is 0. On a real EAL with two workers and
//! ring ports; the EAL initialises once per process, so this file holds one test.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk::{Burst, Mempool};
use serde_json::{json, Value};
use tollgate::config::Config;
use tollgate::control_socket::ControlPlane;
use tollgate::daemon::Dataplane;
use tollgate_control::protocol::{Request, Response};
use tollgate_core::synth::{self, Addressing};

const FRAMES: u64 = 20;

fn ask(control: &mut ControlPlane, dp: &Dataplane, request: Value) -> Value {
    let request: Request = serde_json::from_value(request).unwrap();
    let reply: Response = control.handle(request, 0, dp);
    assert!(reply.ok, "{reply:?}");
    reply.result.unwrap_or(Value::Null)
}

#[test]
fn a_frame_a_worker_has_taken_is_in_the_very_next_stats_reply() {
    let _eal = common::eal_without_hugepages("stats-test", 256);
    let pool = Arc::new(Mempool::pktmbuf("stats_test_pool", 4095, 32, 2176, 0).unwrap());
    let (inside, in_rings) = common::ring_port("sin", 2);
    let (outside, out_rings) = common::ring_port("sout", 2);

    let mut config = Config::default();
    config.ports.inside = inside.name.clone();
    config.ports.outside = outside.name.clone();
    config.ports.rx_descriptors = 64;
    config.ports.tx_descriptors = 64;
    config.ports.mbufs = 4095;
    config.ports.mbuf_cache = 32;
    config.workers.cores = vec![0, 1];
    config.validate(&[]).unwrap();

    let mut control = ControlPlane::restore(config.policy_defaults(), None).unwrap();
    let mut dp = Dataplane::start(
        &config,
        [inside.id, outside.id],
        pool.clone(),
        control.compiled(),
    )
    .unwrap();
    let rule = ask(
        &mut control,
        &dp,
        json!({"version": 1, "op": "policy.add",
               "rule": {"match": {"proto": "udp", "dst_port": 53}, "action": "bypass", "name": "dns"}}),
    );
    assert_eq!(rule["id"], 1);

    for i in 1..=FRAMES {
        // A new flow each time, on either queue: over the test both workers take frames, their
        // own and each other's.
        let a = Addressing::new(
            format!("198.18.0.1:{}", 40000 + i).parse().unwrap(),
            "198.18.1.2:53".parse().unwrap(),
        );
        let frame = synth::udp(&a, b"query");
        let mut m = pool.alloc().unwrap();
        m.append(&frame).unwrap();
        let mut b = Burst::new();
        b.push(m).unwrap();
        assert_eq!(in_rings.rx[i as usize % 2].enqueue_burst(&mut b), 1);

        // Once the frame has left by the outside port, its worker has counted it.
        let deadline = Instant::now() + Duration::from_secs(10);
        'crossed: loop {
            for ring in &out_rings.tx {
                let mut b = Burst::new();
                if ring.dequeue_burst(&mut b) > 0 {
                    assert_eq!(b.as_slice()[0].data(), &frame[..]);
                    break 'crossed;
                }
            }
            assert!(Instant::now() < deadline, "frame {i} never crossed");
            std::thread::yield_now();
        }

        let stats = ask(&mut control, &dp, json!({"version": 1, "op": "stats"}));
        let totals = &stats["totals"];
        assert_eq!(totals["rx_packets"], i, "after frame {i}: {totals}");
        assert_eq!(totals["tx_packets"], i, "after frame {i}: {totals}");
        assert_eq!(totals["flows_created"], i, "after frame {i}: {totals}");
        assert_eq!(stats["rules"][0]["packets"], i, "after frame {i}: {stats}");
        let list = ask(
            &mut control,
            &dp,
            json!({"version": 1, "op": "policy.list"}),
        );
        assert_eq!(
            list["rules"][0]["hits"]["flows"], i,
            "after frame {i}: {list}"
        );
    }
    let snap = dp.stop().unwrap();
    assert!(
        snap.workers.iter().all(|w| w.rx_packets > 0),
        "both workers took frames: {}",
        snap.render_table()
    );
}
