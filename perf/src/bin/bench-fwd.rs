//! `bench-fwd`: how fast tollgate's real worker loop forwards on one core,
//! against plain io-forward on the same devices, over 1 to 1 M flows.
//! Run it as `scripts/bench fwd` (root: it starts a DPDK EAL).
//!
//! # Topology
//!
//! ```text
//!            wire core (Pktgen's role)            |        worker core (the device under test)
//!                                                 |
//!   to-server frames ──► [inside RX ring] ────────┼──► inside port ─┐
//!        ▲                                        |                 │  tollgate's Worker::run
//!        └─ recycle ◄──── [outside TX ring] ◄─────┼─── outside port ◄┘  (or io-forward)
//!   to-client frames ──► [outside RX ring] ───────┼──► outside port ─┐
//!        ▲                                        |                  │
//!        └─ recycle ◄──── [inside TX ring] ◄──────┼─── inside port ◄─┘
//! ```
//!
//! The two ports are ring-PMD devices (`net_ring`), each over one RX and one
//! TX ring. The device under test is tollgate as it ships, started through
//! `Dataplane::start` with one worker pinned to `--workers-core`; the ceiling
//! is [`IoForward`] (rx burst, tx burst, nothing else) pinned to the same core
//! on fresh ring ports over the same rings.
//!
//! The wire thread on `--wire-core` is the traffic generator and sink. Each
//! direction has its own fixed set of mbufs (`--mbufs` in all, like a NIC's
//! descriptor rings, so buffers stay cache-warm as with DDIO): the wire takes
//! what the device sent off a TX ring, overwrites each mbuf with the next
//! flow's prebuilt 64-byte frame (flows 0, 1, ... N-1, 0, ... round-robin,
//! read sequentially from a table of one frame per cache line) and posts it
//! on the RX ring of the port that direction enters by. Both directions of
//! every flow go through, so each flow is one table entry hit from both
//! ports, and flow-table lookups range over all N flows.
//!
//! An RX ring has `--rx-ring` slots and fewer than the lane's mbufs, so the
//! wire can keep it full while the rest wait on the TX side; a TX ring holds
//! every mbuf of its lane, so a transmit can never be refused and no frame is
//! dropped for want of room. Before topping up an RX ring the wire notes
//! whether it found it empty: if the device under test ever catches up with
//! the wire, that says so, and the figure is the wire's rather than the
//! device's. io-forward on ring devices moves pointers only and easily
//! outruns a generator that writes every frame, so the ceiling is usually the
//! wire's rate; the output says when it is.
//!
//! # Measurement
//!
//! Per flow count: io-forward runs, then tollgate, each for `--seconds` after
//! a warm-up (for tollgate: until the flow table holds all N flows, then half
//! a second more). Throughput is what came back off the TX rings over the
//! interval; cycles per packet are TSC cycles of the measured interval (which
//! the pinned worker spends entirely polling) per forwarded packet. After each
//! run every frame the wire sent must have come back, tollgate's drop counters
//! must be zero, and the mempool must be back where it started; the exit
//! status is 1 if any of that fails.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use dpdk::{Eal, MbufRing, Mempool, Port, PortConfig, RingPort};
use tollgate::config::Config;
use tollgate::daemon::Dataplane;
use tollgate::policy::CompiledPolicy;
use tollgate_control::policy::PolicySet;
use tollgate_perf::frames::{FrameTable, Way, MAX_FLOWS};
use tollgate_perf::io_forward::IoForward;
use tollgate_perf::wire::{Lane, Wire, WireHandle, WireStats};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forwarding throughput of tollgate's worker loop on one core, against plain
/// io-forward on the same ring devices (the ceiling), over 1, 1k, 100k and 1M
/// flows of 64-byte IPv4/TCP frames. Prints one line per flow count on
/// stdout; everything else goes to stderr. Exits 1 if a frame was dropped or
/// an mbuf leaked, 2 on a setup error.
#[derive(Parser, Debug)]
#[command(name = "bench-fwd", about, long_about, max_term_width = 100)]
struct Cli {
    /// Flow counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000,1000000")]
    flows: Vec<u32>,

    /// Measured seconds per run (two runs per flow count).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// The core the worker (and io-forward) runs on.
    #[arg(long, default_value_t = 1)]
    workers_core: usize,

    /// The core the traffic generator and sink runs on.
    #[arg(long, default_value_t = 0)]
    wire_core: usize,

    /// Mbufs in circulation, half in each direction.
    #[arg(long, default_value_t = 4096)]
    mbufs: usize,

    /// Slots of each port's RX ring (its RX descriptors).
    #[arg(long, default_value_t = 1024)]
    rx_ring: u32,

    /// Run the EAL without hugepages even when enough are free.
    #[arg(long)]
    no_huge: bool,
}

/// Warm-up after the flow table is full, and for io-forward.
const SETTLE: Duration = Duration::from_millis(500);
/// The longest a warm-up or a wind-down may take before the run is failed.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2 KiB of data room plus headroom.
const DATA_ROOM: u16 = 2048 + 128;
const MBUF_CACHE: u32 = 256;
/// A NIC's worth of descriptor rings, generously.
const MAX_MBUFS: usize = 65_536;
/// Thread names, as /proc shows them (at most 15 bytes).
const WIRE_THREAD: &str = tollgate_perf::wire::THREAD_NAME;
const IOFWD_THREAD: &str = "bench-iofwd";
/// What `Dataplane::start` names its first worker.
const WORKER_THREAD: &str = "tollgate-w0";
/// A measured thread kept off its CPU longer than this share of a slice
/// makes the slice suspect.
const CONTENTION: f64 = 0.01;
/// Measurement granularity.
const SLICE: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench-fwd: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The devices and what circulates through them, shared by every run.
struct Bench {
    pool: Arc<Mempool>,
    /// Indexed by port: 0 inside, 1 outside.
    rx: [Arc<MbufRing>; 2],
    tx: [Arc<MbufRing>; 2],
    to_server: Arc<FrameTable>,
    to_client: Arc<FrameTable>,
    mbufs_per_lane: usize,
    flow_capacity: usize,
    workers_core: usize,
    wire_core: usize,
    seconds: f64,
    runs: u32,
}

struct Measured {
    mpps: f64,
    cycles_per_pkt: f64,
    /// Over the measured interval.
    wire: WireStats,
    /// The share of the interval the device thread and the wire thread spent
    /// runnable but waiting for their CPU.
    waited: [Option<f64>; 2],
    /// Slices measured over, of all.
    slices: (usize, usize),
    /// Too few slices were free of other processes: all were used.
    contended: bool,
}

/// The outcome of one run: its figures and every check that failed.
struct Outcome {
    measured: Measured,
    failures: Vec<String>,
    notes: Vec<String>,
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let started = Instant::now();
    ensure!(
        !cli.flows.is_empty() && cli.flows.iter().all(|&n| (1..MAX_FLOWS).contains(&n)),
        "--flows: give flow counts between 1 and {}",
        MAX_FLOWS - 1
    );
    ensure!(
        cli.seconds > 0.0 && cli.seconds <= 600.0,
        "--seconds: between 0 and 600"
    );
    ensure!(
        cli.workers_core != cli.wire_core,
        "--workers-core and --wire-core must differ: the wire would steal the worker's cycles"
    );
    ensure!(
        cli.rx_ring.is_power_of_two() && (64..=32768).contains(&cli.rx_ring),
        "--rx-ring: a power of two from 64 to 32768"
    );
    let mbufs_per_lane = cli.mbufs / 2;
    ensure!(
        mbufs_per_lane >= cli.rx_ring as usize && cli.mbufs <= MAX_MBUFS,
        "--mbufs: at least twice --rx-ring ({}), so the wire can keep both RX rings full, \
         and at most {MAX_MBUFS}, so the buffers stay in cache as a NIC's do",
        2 * cli.rx_ring
    );
    watchdog(cli);

    // EAL pins the main thread to its lcore's CPU set, and Dataplane::start
    // pins a worker only to cores the calling thread may use: so the main
    // lcore gets every CPU this process has, and each thread pins itself.
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    for (flag, core) in [
        ("--workers-core", cli.workers_core),
        ("--wire-core", cli.wire_core),
    ] {
        ensure!(
            cpus.contains(&core),
            "{flag} {core}: not a CPU this process may use ({cpus:?})"
        );
    }
    let pool_size = ((mbufs_per_lane * 2 + 4 * MBUF_CACHE as usize).next_power_of_two() - 1) as u32;
    let (eal_args, memory) = eal_args(cli, &cpus, pool_size);
    let _eal = Eal::init(&eal_args).context("EAL initialisation (are you root?)")?;
    let pool = Arc::new(
        Mempool::pktmbuf("bench_fwd_pool", pool_size, MBUF_CACHE, DATA_ROOM, 0)
            .context("creating the mbuf pool")?,
    );
    let tx_slots = mbufs_per_lane as u32 + 1;
    let ring = |name: &str, slots: u32| MbufRing::new(name, slots).context("creating a ring");
    let rx = [
        ring("bf_in_rx", cli.rx_ring)?,
        ring("bf_out_rx", cli.rx_ring)?,
    ];
    let tx = [ring("bf_in_tx", tx_slots)?, ring("bf_out_tx", tx_slots)?];

    let max_flows = *cli.flows.iter().max().expect("checked non-empty");
    let t = Instant::now();
    let to_server = Arc::new(FrameTable::build(max_flows, Way::ToServer));
    let to_client = Arc::new(FrameTable::build(max_flows, Way::ToClient));
    eprintln!(
        "bench-fwd: {}, {memory}, TSC {:.3} GHz; worker on core {}, wire on core {}",
        Eal::version(),
        dpdk::tsc_hz() as f64 / 1e9,
        cli.workers_core,
        cli.wire_core,
    );
    eprintln!(
        "bench-fwd: {} mbufs per direction, RX rings {} slots, TX rings {} slots; \
         {} frames per direction built in {:.1} s",
        mbufs_per_lane,
        cli.rx_ring,
        tx_slots.next_power_of_two(),
        max_flows,
        t.elapsed().as_secs_f64()
    );

    let mut bench = Bench {
        pool,
        rx,
        tx,
        to_server,
        to_client,
        mbufs_per_lane,
        flow_capacity: (max_flows as usize).max(Config::default().flows.capacity),
        workers_core: cli.workers_core,
        wire_core: cli.wire_core,
        seconds: cli.seconds,
        runs: 0,
    };

    let mut ok = true;
    for &flows in &cli.flows {
        let ceiling = bench.io_forward(flows)?;
        let tollgate = bench.tollgate(flows)?;
        for note in ceiling.notes.iter().chain(&tollgate.notes) {
            eprintln!("bench-fwd: flows={flows}: {note}");
        }
        for failure in ceiling.failures.iter().chain(&tollgate.failures) {
            eprintln!("bench-fwd: flows={flows}: FAILED: {failure}");
            ok = false;
        }
        let (t, c) = (&tollgate.measured, &ceiling.measured);
        println!(
            "fwd flows={flows} mpps={:.2} ceiling_mpps={:.2} ratio={:.2} cycles_per_pkt={:.0}",
            t.mpps,
            c.mpps,
            t.mpps / c.mpps,
            t.cycles_per_pkt
        );
        std::io::stdout().flush().ok();
    }
    eprintln!(
        "bench-fwd: {} in {:.0} s",
        if ok {
            "done, every check passed"
        } else {
            "done, with FAILED checks"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// EAL arguments, and a description of the memory they choose.
fn eal_args(cli: &Cli, cpus: &[usize], pool_size: u32) -> (Vec<String>, String) {
    let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
    let mut args: Vec<String> = [
        "bench-fwd",
        "--lcores",
        &format!("0@({})", list.join(",")),
        "--file-prefix",
        &format!("tg-bench-fwd-{}", std::process::id()),
        "--no-pci",
        "--no-telemetry",
        "--log-level",
        "warning",
    ]
    .map(String::from)
    .to_vec();
    // The pool plus room for the EAL's own structures; the flow table lives
    // on the ordinary heap, as in the daemon.
    let needed_mib = (u64::from(pool_size) * 2560 / (1 << 20)) + 128;
    let free_mib = free_hugepages_mib();
    if !cli.no_huge && free_mib >= needed_mib {
        args.push("--in-memory".into());
        (args, format!("hugepages ({free_mib} MiB free)"))
    } else {
        args.extend(["--no-huge", "-m", "3072"].map(String::from));
        let why = if cli.no_huge {
            "asked for".to_owned()
        } else {
            format!("{free_mib} MiB of hugepages free, {needed_mib} needed")
        };
        (args, format!("no hugepages ({why})"))
    }
}

/// Free memory in hugepages of the default size, from /proc/meminfo.
fn free_hugepages_mib() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") / 1024
}

/// Ends the process if the whole benchmark overruns its budget: a stuck run
/// must not hold the machine.
fn watchdog(cli: &Cli) {
    let per_point = 2.0 * (cli.seconds + SETTLE.as_secs_f64() + 2.0 * PHASE_LIMIT.as_secs_f64());
    let budget = Duration::from_secs_f64(120.0 + cli.flows.len() as f64 * per_point);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!(
            "bench-fwd: gave up after {} s: a run is stuck",
            budget.as_secs()
        );
        std::process::exit(3);
    });
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_LIMIT;
    while !done() {
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting for {what}",
                PHASE_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The counters that measure a run, read at one instant.
struct Sample {
    at: Instant,
    tsc: u64,
    wire: WireStats,
    /// Schedstat (run, wait) of the device thread and the wire thread.
    sched: [Option<(u64, u64)>; 2],
}

impl Sample {
    fn take(wire: &WireHandle, device: &str) -> Sample {
        Sample {
            at: Instant::now(),
            tsc: dpdk::tsc(),
            wire: wire.stats(),
            sched: [sched_ns(device), sched_ns(WIRE_THREAD)],
        }
    }
}

/// What happened between two samples.
struct Slice {
    seconds: f64,
    cycles: u64,
    wire: WireStats,
    /// The share of the slice each thread spent runnable but off its CPU;
    /// `None` when the kernel does not say.
    waited: [Option<f64>; 2],
}

impl Slice {
    fn between(a: &Sample, b: &Sample) -> Slice {
        let seconds = (b.at - a.at).as_secs_f64();
        let waited = |i: usize| match (a.sched[i], b.sched[i]) {
            (Some((_, w0)), Some((_, w1))) => Some((w1 - w0) as f64 / 1e9 / seconds),
            _ => None,
        };
        Slice {
            seconds,
            cycles: b.tsc - a.tsc,
            wire: b.wire.since(&a.wire),
            waited: [waited(0), waited(1)],
        }
    }

    fn contended(&self) -> bool {
        self.waited.iter().flatten().any(|&w| w > CONTENTION)
    }
}

/// Measures for `seconds`, in slices. The machine may be shared: a slice in
/// which another process kept the device or the wire thread off its core
/// says more about that process than about the device, so such slices are
/// set aside, as long as at least a third of them are clean.
fn measure(wire: &WireHandle, device: &str, seconds: f64, wire_core: usize) -> Measured {
    let count = (seconds / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
    let pause = Duration::from_secs_f64(seconds / count as f64);
    // From the wire's core, so sampling never preempts the device.
    let slices: Vec<Slice> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                core_affinity::set_for_current(core_affinity::CoreId { id: wire_core });
                let mut last = Sample::take(wire, device);
                (0..count)
                    .map(|_| {
                        std::thread::sleep(pause);
                        let now = Sample::take(wire, device);
                        let slice = Slice::between(&last, &now);
                        last = now;
                        slice
                    })
                    .collect()
            })
            .join()
            .expect("the sampling thread does not panic")
    });
    let clean = slices.iter().filter(|s| !s.contended()).count();
    let contended = clean * 3 < count;
    let used: Vec<&Slice> = slices
        .iter()
        .filter(|s| contended || !s.contended())
        .collect();
    let seconds: f64 = used.iter().map(|s| s.seconds).sum();
    let cycles: u64 = used.iter().map(|s| s.cycles).sum();
    let wire_stats = used
        .iter()
        .fold(WireStats::default(), |sum, s| sum.plus(&s.wire));
    let mean_waited = |i: usize| {
        let known: Vec<f64> = used.iter().filter_map(|s| s.waited[i]).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    };
    Measured {
        mpps: wire_stats.collected as f64 / seconds / 1e6,
        cycles_per_pkt: cycles as f64 / wire_stats.collected.max(1) as f64,
        wire: wire_stats,
        waited: [mean_waited(0), mean_waited(1)],
        slices: (used.len(), count),
        contended,
    }
}

/// A thread of this process's (run, wait) nanoseconds from its schedstat:
/// wait is time it was runnable while something else had its CPU.
fn sched_ns(name: &str) -> Option<(u64, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
            return Some((fields.next()??, fields.next()??));
        }
    }
    None
}

/// Notes on other processes taking CPU from the measured threads.
fn contention_notes(m: &Measured, device: &str, notes: &mut Vec<String>) {
    let (used, all) = m.slices;
    if m.contended {
        let waits: Vec<String> = [device, WIRE_THREAD]
            .iter()
            .zip(m.waited)
            .filter_map(|(name, w)| Some(format!("{name} {:.1}%", 100.0 * w?)))
            .collect();
        notes.push(format!(
            "WARNING: other processes kept our threads off their cores for most of the run \
             (waiting for CPU: {}): this figure is low",
            waits.join(", ")
        ));
    } else if used < all {
        notes.push(format!(
            "measured over {used} of {all} slices: in the others, other processes ran on our cores"
        ));
    }
    for (name, waited) in [device, WIRE_THREAD].iter().zip(m.waited) {
        if waited.is_none() {
            notes.push(format!(
                "could not read thread {name}'s schedstat: contention unknown"
            ));
        }
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

impl Bench {
    /// Fresh ring ports over the shared rings: each run configures its own,
    /// and closing a port leaves its rings alone.
    fn ports(&mut self) -> anyhow::Result<[RingPort; 2]> {
        self.runs += 1;
        let n = self.runs;
        Ok([
            RingPort::new(
                &format!("bfin{n}"),
                &[self.rx[0].clone()],
                &[self.tx[0].clone()],
            )?,
            RingPort::new(
                &format!("bfout{n}"),
                &[self.rx[1].clone()],
                &[self.tx[1].clone()],
            )?,
        ])
    }

    fn wire(&self, flows: u32) -> anyhow::Result<WireHandle> {
        Wire {
            lanes: [
                Lane {
                    inject: self.rx[0].clone(),
                    collect: self.tx[1].clone(),
                    frames: self.to_server.clone(),
                },
                Lane {
                    inject: self.rx[1].clone(),
                    collect: self.tx[0].clone(),
                    frames: self.to_client.clone(),
                },
            ],
            flows: flows as usize,
            mbufs_per_lane: self.mbufs_per_lane,
            pool: self.pool.clone(),
            core: Some(self.wire_core),
        }
        .start()
    }

    /// Lets every frame in flight come back, then stops the wire; checks
    /// what a run must leave behind.
    fn wind_down(
        &self,
        wire: WireHandle,
        stop_device: impl FnOnce() -> anyhow::Result<()>,
        baseline: u32,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<WireStats> {
        wire.stop_feeding();
        let back = wait_until("every frame sent to come back", || {
            let s = wire.stats();
            s.collected == s.injected
        });
        stop_device()?;
        let total = wire.finish()?;
        if let Err(e) = back {
            failures.push(format!(
                "{e}: sent {}, came back {}",
                total.injected, total.collected
            ));
        }
        for ring in self.rx.iter().chain(&self.tx) {
            let left = ring.count();
            if left > 0 {
                failures.push(format!("{left} frames left in a ring after the run"));
                let mut b = dpdk::Burst::new();
                while ring.dequeue_burst(&mut b) > 0 {
                    b.clear();
                }
            }
        }
        let in_use = self.pool.in_use();
        if in_use != baseline {
            failures.push(format!(
                "mbuf leak: {in_use} in use after the run, {baseline} before"
            ));
        }
        Ok(total)
    }

    fn io_forward(&mut self, flows: u32) -> anyhow::Result<Outcome> {
        let ports = self.ports()?;
        let cfg = PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: false,
            promiscuous: true,
        };
        let mut configured = Vec::new();
        for p in &ports {
            configured.push(Port::configure(p.id, &p.name, &cfg, &self.pool)?);
        }
        let [mut inside, mut outside]: [Port; 2] = configured
            .try_into()
            .map_err(|_| anyhow::anyhow!("two ports"))?;
        let (mut in_rx, mut in_tx) = inside.take_queues()?;
        let (mut out_rx, mut out_tx) = outside.take_queues()?;
        inside.start()?;
        outside.start()?;
        let baseline = self.pool.in_use();

        let running = Arc::new(AtomicBool::new(true));
        let fwd = IoForward {
            rx: [in_rx.remove(0), out_rx.remove(0)],
            tx: [in_tx.remove(0), out_tx.remove(0)],
            tx_retries: Config::default().ports.tx_retries,
            running: running.clone(),
        };
        let core = self.workers_core;
        let thread = std::thread::Builder::new()
            .name(IOFWD_THREAD.into())
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    eprintln!("bench-fwd: io-forward: could not pin to core {core}");
                }
                let _ = dpdk::register_thread();
                fwd.run()
            })?;

        let wire = self.wire(flows)?;
        std::thread::sleep(SETTLE);
        let measured = measure(&wire, IOFWD_THREAD, self.seconds, self.wire_core);
        let mut failures = Vec::new();
        let mut report = None;
        let total = self.wind_down(
            wire,
            || {
                running.store(false, Ordering::Relaxed);
                report = Some(
                    thread
                        .join()
                        .map_err(|_| anyhow::anyhow!("io-forward panicked"))?,
                );
                inside.stop()?;
                outside.stop()?;
                Ok(())
            },
            baseline,
            &mut failures,
        )?;
        drop((inside, outside, ports));
        let report = report.expect("set when the device stopped");
        if report.dropped > 0 || report.tx_packets != total.injected {
            failures.push(format!(
                "io-forward: sent {} of {} frames, dropped {}",
                report.tx_packets, total.injected, report.dropped
            ));
        }

        let mut notes = vec![format!(
            "io-forward {:.2} Mpps; at the wire's looks its RX rings held {:.0} frames on \
             average and were empty {:.1}% of the time; {:.1}% of its polls were empty",
            measured.mpps,
            measured.wire.mean_occupancy(),
            100.0 * measured.wire.dry_fraction(),
            percent(report.empty_polls, report.polls),
        )];
        contention_notes(&measured, IOFWD_THREAD, &mut notes);
        if measured.wire.dry_fraction() > 0.01 {
            notes.push(
                "io-forward outran the wire thread: the ceiling is the wire's rate, \
                 a lower bound on what io-forward could do"
                    .into(),
            );
        }
        Ok(Outcome {
            measured,
            failures,
            notes,
        })
    }

    fn tollgate(&mut self, flows: u32) -> anyhow::Result<Outcome> {
        let [inside, outside] = self.ports()?;
        let mut config = Config::default();
        config.ports.inside = inside.name.clone();
        config.ports.outside = outside.name.clone();
        config.ports.mbufs = self.pool.size();
        config.ports.mbuf_cache = MBUF_CACHE;
        config.workers.cores = vec![self.workers_core];
        config.flows.capacity = self.flow_capacity;
        config.policy.state_file = None;
        // The forwarding path: synthetic one-way TCP is no connection to proxy, so it is
        // bypassed, as a bypass rule would (`scripts/bench proxy` measures the proxy).
        config.policy.default_tcp = tollgate_control::policy::Action::Bypass;
        config
            .validate(&[])
            .context("the benchmark's tollgate configuration")?;

        let baseline = self.pool.in_use();
        let t = Instant::now();
        // No rules: every flow gets the configured default action, as in a
        // daemon nobody has installed a policy on.
        let policy = CompiledPolicy::compile(&PolicySet::default(), config.policy_defaults(), 1);
        let mut dp = Dataplane::start(&config, [inside.id, outside.id], self.pool.clone(), policy)?;
        let wire = self.wire(flows)?;
        let warm = wait_until("the flow table to hold every flow", || {
            dp.snapshot().totals.flows_active >= u64::from(flows)
        });
        let filled = t.elapsed().as_secs_f64();
        let measured = if warm.is_ok() {
            std::thread::sleep(SETTLE);
            Some(measure(&wire, WORKER_THREAD, self.seconds, self.wire_core))
        } else {
            None
        };
        let mut failures = Vec::new();
        let mut snap = None;
        let total = self.wind_down(
            wire,
            || {
                snap = Some(dp.stop()?);
                Ok(())
            },
            baseline,
            &mut failures,
        )?;
        drop((inside, outside));
        warm?;
        let measured = measured.expect("measured after a warm-up");
        let snap = snap.expect("set when the device stopped");
        let t = &snap.totals;
        let dropped: u64 = snap.drops.values().sum();
        if dropped > 0 {
            failures.push(format!("tollgate dropped frames: {:?}", snap.drops));
        }
        if t.rx_packets != total.injected || t.tx_packets != total.injected {
            failures.push(format!(
                "tollgate received {} and sent {} of {} frames",
                t.rx_packets, t.tx_packets, total.injected
            ));
        }
        let malformed: u64 = snap.malformed.values().sum();
        if malformed > 0 || t.flows_table_full > 0 || t.flows_created != u64::from(flows) {
            failures.push(format!(
                "expected {flows} flows and clean frames: created {}, table full {}, \
                 malformed {malformed}",
                t.flows_created, t.flows_table_full
            ));
        }

        let mut notes = vec![format!(
            "tollgate {:.2} Mpps, {:.0} cycles/packet; flow table filled in {filled:.1} s \
             ({} flows of capacity {}); at the wire's looks its RX rings held {:.0} frames on \
             average and were empty {:.2}% of the time",
            measured.mpps,
            measured.cycles_per_pkt,
            t.flows_active,
            t.flow_capacity,
            measured.wire.mean_occupancy(),
            100.0 * measured.wire.dry_fraction(),
        )];
        contention_notes(&measured, WORKER_THREAD, &mut notes);
        if measured.wire.dry_fraction() > 0.01 {
            notes.push(
                "the wire thread did not keep tollgate's RX rings filled: \
                 the tollgate figure is the wire's rate, a lower bound"
                    .into(),
            );
        }
        Ok(Outcome {
            measured,
            failures,
            notes,
        })
    }
}
