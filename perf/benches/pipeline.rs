//! A worker's per-frame work without the ports: the three stages its shard runs over each
//! burst of 32 (`Shard::prepare`, `prefetch_entry`, `dispatch`) on 64-byte IPv4/TCP frames of 1, 1k,
//! 100k and 1M established flows, in a table sized as the daemon's default. bench-fwd measures
//! the same work between ring ports, where another core writes every frame and the figures
//! move with how the VM places its two vCPUs; here the frames sit in this core's memory, so
//! the figures compare builds. Each iteration is one burst: the time per frame is the
//! reported time over 32 (criterion's throughput line gives frames per second).
//! Figures in `perf/RESULTS.md`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate::config::Config;
use tollgate::daemon::{flow_table_config, proxy_settings};
use tollgate_control::policy::{Action, PolicySet};
use tollgate_core::pipeline::{Pipeline, PipelineConfig, PortSide, Prepared};
use tollgate_core::policy::CompiledPolicy;
use tollgate_core::proxy::{FrameSink, ProxyTable};
use tollgate_core::shard::{Dispatch, Shard};
use tollgate_core::tcp::inspect::SignatureInspector;
use tollgate_core::tcp::payload::TestBytes;
use tollgate_perf::frames::{FrameTable, Way};

const BURST: usize = 32;
const NOW_MS: u64 = 1_000;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A worker's shard as the daemon builds it from its default configuration.
fn shard() -> Shard<TestBytes> {
    let mut config = Config::default();
    // As in bench-fwd: one-way synthetic TCP is bypassed, as a bypass rule would.
    config.policy.default_tcp = Action::Bypass;
    let policy = CompiledPolicy::compile(&PolicySet::default(), config.policy_defaults(), 1);
    let pipeline = Pipeline::new(
        PipelineConfig {
            flows: flow_table_config(&config),
            malformed: config.malformed.action,
            on_table_full: config.flows.on_full,
            audit_new_flows: false,
            reassembly: config.reassembly.enabled,
            rss: None,
            on_midstream: config.proxy.on_midstream,
        },
        Arc::new(policy),
    );
    let proxies = ProxyTable::new(
        proxy_settings(&config),
        Arc::new(SignatureInspector::new(&[]).expect("no signatures")),
        [1; 16],
    );
    Shard::new(pipeline, proxies)
}

/// Where the proxy's own frames would go: nowhere (these flows are bypassed).
struct Discard;

impl FrameSink<TestBytes> for Discard {
    fn send(&mut self, _: PortSide, headers: &[u8], _: Option<&TestBytes>) -> bool {
        black_box(headers);
        true
    }
}

/// One burst through the worker's three stages; what the shard gives back goes to
/// `black_box`, as the worker's TX burst would take it.
#[inline(always)]
fn burst(shard: &mut Shard<TestBytes>, frames: &mut FrameTable, first: usize) {
    let mut prepared = [Prepared::NONE; BURST];
    for (i, p) in prepared.iter_mut().enumerate() {
        let frame = frames.frame((first + i) % frames.len());
        *p = shard.prepare(frame, PortSide::Inside, None, None);
    }
    for p in &mut prepared {
        shard.prefetch_entry(p);
    }
    for (i, p) in prepared.iter().enumerate() {
        let n = frames.len();
        let frame = frames.frame_mut((first + i) % n);
        black_box(shard.dispatch(frame, p, NOW_MS, &mut Discard));
    }
}

fn stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_burst");
    group.throughput(Throughput::Elements(BURST as u64));
    for flows in [1u32, 1_000, 100_000, 1_000_000] {
        let mut frames = FrameTable::build(flows, Way::ToServer);
        let mut shard = shard();
        for i in (0..frames.len()).step_by(BURST) {
            burst(&mut shard, &mut frames, i);
        }
        assert_eq!(shard.pipeline().flows().len(), flows as usize);
        assert!(matches!(
            shard.handle(frames.frame_mut(0), PortSide::Inside, NOW_MS, &mut Discard),
            Dispatch::Forward(_, PortSide::Outside)
        ));
        let mut next = 0;
        group.bench_function(format!("{flows}_flows"), |b| {
            b.iter(|| {
                burst(&mut shard, &mut frames, next);
                next = (next + BURST) % frames.len();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = stages
}
criterion_main!(benches);
