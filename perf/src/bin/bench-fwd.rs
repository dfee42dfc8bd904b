//! `bench-fwd`: how fast tollgate's real worker loop forwards, on one core or
//! several, against plain io-forward on the same devices, over 1 to 1 M flows.
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
//! TX ring per queue. The device under test is tollgate as it ships, started
//! through `Dataplane::start` with W workers (`--workers`), worker i pinned to
//! the i-th of `--worker-cores` and polling queue i of both ports; the ceiling
//! is [`IoForward`] (rx burst, tx burst, nothing else), one thread per queue
//! pair pinned to the same cores, on fresh ring ports over the same rings.
//!
//! The wire thread on `--wire-core` is the traffic generator and sink. Each
//! direction has its own fixed set of mbufs (`--mbufs` in all, like a NIC's
//! descriptor rings, so buffers stay cache-warm as with DDIO): the wire takes
//! what the device sent off the TX rings, overwrites each mbuf with the next
//! flow's prebuilt 64-byte frame (flows 0, 1, ... N-1, 0, ... round-robin,
//! read sequentially from a table of one frame per cache line) and posts it
//! on the RX ring of the port that direction enters by. Both directions of
//! every flow go through, so each flow is one table entry hit from both
//! ports, and flow-table lookups range over all N flows.
//!
//! # Several workers
//!
//! With W queues per port, the wire puts each frame on the RX queue a NIC's
//! RSS would: the Toeplitz hash of its addresses and ports under the default
//! key most NICs ship with, through a 128-entry redirection table filled
//! round-robin over the queues. That key is not symmetric, and the ring PMD
//! cannot hash at all, so tollgate steers in software, as it does in
//! production on any port without symmetric RSS: a worker hands each frame
//! whose flow another worker owns to that worker over a ring, so both
//! directions of a flow meet in one flow table. With W workers about
//! (W-1)/W of the frames take that detour; `handoff` reports the share. The
//! dataplane's split audit (`flows_split_across_workers`) must stay at 0.
//!
//! The port's `--rx-ring` slots are split evenly over its RX queues, so the
//! same mbufs keep them all full and the total in flight stays below what a
//! handoff ring holds: a worker kept off its core then makes the others wait,
//! never drop.
//!
//! An RX ring has fewer slots than the lane's mbufs, so the wire can keep it
//! full while the rest wait on the TX side; a TX ring holds every mbuf of its
//! lane, so a transmit can never be refused and no frame is dropped for want
//! of room. Before topping up an RX ring the wire notes whether it found it
//! empty: if the device under test ever catches up with the wire, that says
//! so, and the figure is the wire's rather than the device's. io-forward on
//! ring devices moves pointers only and easily outruns a generator that
//! writes every frame, so the ceiling is usually the wire's rate; the output
//! says when it is.
//!
//! # Measurement
//!
//! Per worker count and flow count: io-forward runs, then read-forward, then
//! tollgate, each for `--seconds` after a warm-up (for tollgate: until the
//! flow table holds all N flows, then half a second more). Read-forward is
//! io-forward that also loads each frame's EtherType, with the worker's
//! prefetching: on ring devices, where io-forward never touches a frame, it
//! is the floor of any worker that reads its frames, and a `floor:` line on
//! stderr says what it leaves of ratio 0.5. Throughput is what came back off the
//! TX rings over the interval. With the default `--workers 1`, cycles per
//! packet are TSC cycles of the measured interval (which the pinned worker
//! spends entirely polling) per forwarded packet, and each line reads
//! `fwd flows=N mpps=X ceiling_mpps=Y ratio=Z cycles_per_pkt=C`. Given other
//! worker counts, each line reads
//! `fwd workers=W flows=N mpps=X per_worker_mpps=[..] ceiling_mpps=Y ratio=Z
//! cycles_per_pkt=C handoff=H split_flows=S`: per-worker rates are the frames
//! each worker transmitted by its own counters over the whole interval,
//! cycles are what the worker threads spent on a CPU (their schedstat, at
//! the TSC's rate) per forwarded packet, so cores a worker shares count only
//! for the time it had them. After each run every frame the wire sent must
//! have come back, tollgate's drop counters must be zero, every flow must
//! have been created once and on one worker only, and the mempool must be
//! back where it started; the exit status is 1 if any of that fails.

#![forbid(unsafe_code)]

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
use tollgate_control::policy::PolicySet;
use tollgate_control::WorkerStats;
use tollgate_core::policy::CompiledPolicy;
use tollgate_perf::frames::{FrameTable, Way, MAX_FLOWS};
use tollgate_perf::io_forward::{IoForward, IoForwardReport};
use tollgate_perf::wire::{self, Lane, Wire, WireHandle, WireStats};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forwarding throughput of tollgate's worker loop on one core or several,
/// against plain io-forward on the same ring devices (the ceiling) and
/// read-forward (io-forward that also reads each frame's EtherType: the
/// floor), over 1, 1k, 100k and 1M flows of 64-byte IPv4/TCP frames. Prints one line per
/// worker count and flow count on stdout; everything else goes to stderr.
/// Exits 1 if a frame was dropped, an mbuf leaked or a flow was split across
/// workers, 2 on a setup error.
#[derive(Parser, Debug)]
#[command(name = "bench-fwd", about, long_about, max_term_width = 100)]
struct Cli {
    /// Flow counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000,1000000")]
    flows: Vec<u32>,

    /// Worker counts to measure, in order (each with as many queue pairs per
    /// port). Anything but `1` alone prints the per-worker line format.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    workers: Vec<usize>,

    /// Measured seconds per run (three runs per worker count and flow count:
    /// io-forward, read-forward, tollgate).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// The cores worker i (and io-forward's thread i) runs on, in order
    /// [default: every CPU but the wire's, ascending, then the wire's].
    #[arg(long, visible_alias = "workers-core", value_delimiter = ',')]
    worker_cores: Vec<usize>,

    /// The core the traffic generator and sink runs on.
    #[arg(long, default_value_t = 0)]
    wire_core: usize,

    /// Mbufs in circulation, half in each direction.
    #[arg(long, default_value_t = 4096)]
    mbufs: usize,

    /// Slots of each port's RX rings (its RX descriptors), split evenly over
    /// its RX queues.
    #[arg(long, default_value_t = 1024)]
    rx_ring: u32,

    /// Idle workers (and io-forward's threads) sleep this long after 1024
    /// empty polls in a row, as tollgate's `workers.idle_sleep_us`
    /// [default: 0 when every thread has a core of its own, 20 when the
    /// workers share cores with the wire, as the lab runs tollgate where it
    /// is short of cores].
    #[arg(long)]
    idle_sleep_us: Option<u64>,

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
/// What one worker-to-worker handoff ring of the dataplane holds. With more
/// frames than that in circulation, a worker kept off its core could let the
/// ring from another worker overflow, and the run would measure drops.
const HANDOFF_RING: usize = 4095;
/// Idle sleep where the workers share cores with the wire: a busy-polling
/// worker would otherwise hold the shared core for whole scheduler slices
/// while the wire waits to refill its queues.
const SHARED_IDLE_SLEEP_US: u64 = 20;
/// Fewest slots an RX queue's ring may have after the split.
const MIN_RX_RING: u32 = 32;
/// Thread names, as /proc shows them (at most 15 bytes).
const WIRE_THREAD: &str = wire::THREAD_NAME;
/// A measured thread kept off its CPU longer than this share of a slice
/// makes the slice suspect.
const CONTENTION: f64 = 0.01;
/// Measurement granularity.
const SLICE: Duration = Duration::from_millis(250);
/// The share of the wire's looks that may find an RX ring empty before the
/// device under test counts as having outrun the wire.
const OUTRAN: f64 = 0.01;

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

/// What `Dataplane::start` names worker `i`'s thread.
fn worker_thread(i: usize) -> String {
    format!("tollgate-w{i}")
}

fn iofwd_thread(i: usize) -> String {
    format!("bench-iofwd{i}")
}

/// The devices and what circulates through them, shared by every run.
struct Bench {
    pool: Arc<Mempool>,
    to_server: Arc<FrameTable>,
    to_client: Arc<FrameTable>,
    mbufs_per_lane: usize,
    /// Slots of each port's RX rings together.
    rx_ring: u32,
    /// Slots of each TX ring: the whole lane fits in any one of them.
    tx_slots: u32,
    flow_capacity: usize,
    /// The largest flow count, for the RSS tables.
    max_flows: u32,
    worker_cores: Vec<usize>,
    wire_core: usize,
    seconds: f64,
    idle_sleep_us: Option<u64>,
    runs: u32,
    queues: Queues,
}

/// The rings of the ports as configured for one worker count.
struct Queues {
    workers: usize,
    /// Indexed by port (0 inside, 1 outside), then by queue.
    rx: [Vec<Arc<MbufRing>>; 2],
    tx: [Vec<Arc<MbufRing>>; 2],
    /// Slots of each RX ring.
    rx_slots: u32,
    /// Each flow's RX queue per port, as the NIC's RSS picks it; `None` with
    /// one queue.
    rss: [Option<Arc<Vec<u8>>>; 2],
    /// The workers and the wire share CPUs.
    shared: bool,
    /// Of tollgate's workers and io-forward's threads, in microseconds.
    idle_sleep_us: u64,
}

/// The counters of one worker that say where its frames went.
#[derive(Debug, Clone, Copy, Default)]
struct WorkerCount {
    /// Frames it received from the ports.
    rx: u64,
    /// Frames it transmitted, its own and those handed to it.
    tx: u64,
    /// Frames it handed to the worker that owns their flow.
    handoff_out: u64,
    handoff_in: u64,
}

impl WorkerCount {
    fn of(w: &WorkerStats) -> WorkerCount {
        WorkerCount {
            rx: w.rx_packets,
            tx: w.tx_packets,
            handoff_out: w.handoff_out,
            handoff_in: w.handoff_in,
        }
    }

    fn since(&self, earlier: &WorkerCount) -> WorkerCount {
        WorkerCount {
            rx: self.rx - earlier.rx,
            tx: self.tx - earlier.tx,
            handoff_out: self.handoff_out - earlier.handoff_out,
            handoff_in: self.handoff_in - earlier.handoff_in,
        }
    }
}

/// Reads every worker's counters as last published.
type WorkerProbe<'a> = dyn Fn() -> Vec<WorkerCount> + Sync + 'a;

struct Measured {
    mpps: f64,
    /// TSC cycles of the interval per forwarded packet.
    cycles_per_pkt: f64,
    /// Cycles the device threads spent on a CPU per forwarded packet; `None`
    /// when the kernel does not say.
    cpu_cycles_per_pkt: Option<f64>,
    /// Over the measured interval.
    wire: WireStats,
    /// The share of the interval each device thread, then the wire thread,
    /// spent runnable but waiting for its CPU.
    waited: Vec<Option<f64>>,
    /// Slices measured over, of all.
    slices: (usize, usize),
    /// Too few slices were free of other processes: all were used.
    contended: bool,
    /// Per worker over the whole interval, and its length in seconds.
    per_worker: Option<(Vec<WorkerCount>, f64)>,
}

impl Measured {
    fn per_worker_mpps(&self) -> Vec<f64> {
        match &self.per_worker {
            Some((counts, seconds)) => counts.iter().map(|c| c.tx as f64 / seconds / 1e6).collect(),
            None => Vec::new(),
        }
    }

    /// The share of the frames received from the ports that a worker handed
    /// to another.
    fn handoff(&self) -> f64 {
        let Some((counts, _)) = &self.per_worker else {
            return 0.0;
        };
        let rx: u64 = counts.iter().map(|c| c.rx).sum();
        let out: u64 = counts.iter().map(|c| c.handoff_out).sum();
        out as f64 / rx.max(1) as f64
    }
}

/// The outcome of one run: its figures and every check that failed.
struct Outcome {
    measured: Measured,
    failures: Vec<String>,
    notes: Vec<String>,
    /// The dataplane's split audit at the end of the run (tollgate only).
    split_flows: u64,
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
        cli.idle_sleep_us.is_none_or(|us| us <= 1_000_000),
        "--idle-sleep-us: at most one second"
    );
    ensure!(
        cli.rx_ring.is_power_of_two() && (64..=32768).contains(&cli.rx_ring),
        "--rx-ring: a power of two from 64 to 32768"
    );
    let mbufs_per_lane = cli.mbufs / 2;
    ensure!(
        mbufs_per_lane >= cli.rx_ring as usize && cli.mbufs <= MAX_MBUFS,
        "--mbufs: at least twice --rx-ring ({}), so the wire can keep both ports' RX rings \
         full, and at most {MAX_MBUFS}, so the buffers stay in cache as a NIC's do",
        2 * cli.rx_ring
    );

    // EAL pins the main thread to its lcore's CPU set, and Dataplane::start
    // pins a worker only to cores the calling thread may use: so the main
    // lcore gets every CPU this process has, and each thread pins itself.
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ensure!(
        cpus.contains(&cli.wire_core),
        "--wire-core {}: not a CPU this process may use ({cpus:?})",
        cli.wire_core
    );
    let max_workers = cli.workers.iter().copied().max().unwrap_or(0);
    ensure!(
        !cli.workers.is_empty() && cli.workers.iter().all(|&w| w >= 1),
        "--workers: give worker counts of 1 or more"
    );
    ensure!(
        max_workers <= cpus.len() && max_workers <= 64,
        "--workers {max_workers}: a worker needs a CPU of its own, and this process may use \
         {} ({cpus:?}; tollgate takes at most 64 workers)",
        cpus.len()
    );
    ensure!(
        max_workers == 1 || cli.mbufs <= HANDOFF_RING + 1,
        "--mbufs: at most {} with several workers: a handoff ring between two workers holds \
         {HANDOFF_RING} frames, and a worker kept off its core must not make it overflow",
        HANDOFF_RING + 1
    );
    ensure!(
        cli.rx_ring / max_workers as u32 >= MIN_RX_RING,
        "--rx-ring {}: split over {max_workers} RX queues leaves fewer than {MIN_RX_RING} \
         slots each",
        cli.rx_ring
    );
    let worker_cores = if cli.worker_cores.is_empty() {
        let mut cores: Vec<usize> = cpus
            .iter()
            .copied()
            .filter(|&c| c != cli.wire_core)
            .collect();
        cores.push(cli.wire_core);
        cores
    } else {
        cli.worker_cores.clone()
    };
    ensure!(
        worker_cores.len() >= max_workers,
        "--worker-cores: {max_workers} workers need {max_workers} cores, {} given",
        worker_cores.len()
    );
    for (i, &core) in worker_cores.iter().enumerate() {
        ensure!(
            cpus.contains(&core),
            "--worker-cores: {core} is not a CPU this process may use ({cpus:?})"
        );
        ensure!(
            !worker_cores[..i].contains(&core),
            "--worker-cores: core {core} is listed twice: each worker polls a core of its own"
        );
    }
    watchdog(cli);

    let pool_size = pool_size(mbufs_per_lane, cli.rx_ring, max_workers);
    let (eal_args, memory) = eal_args(cli, &cpus, pool_size);
    let _eal = Eal::init(&eal_args).context("EAL initialisation (are you root?)")?;
    let pool = Arc::new(
        Mempool::pktmbuf("bench_fwd_pool", pool_size, MBUF_CACHE, DATA_ROOM, 0)
            .context("creating the mbuf pool")?,
    );
    let tx_slots = mbufs_per_lane as u32 + 1;

    let max_flows = *cli.flows.iter().max().expect("checked non-empty");
    let t = Instant::now();
    let to_server = Arc::new(FrameTable::build(max_flows, Way::ToServer));
    let to_client = Arc::new(FrameTable::build(max_flows, Way::ToClient));
    eprintln!(
        "bench-fwd: {}, {memory}, TSC {:.3} GHz; {} on core{} {}, wire on core {}",
        Eal::version(),
        dpdk::tsc_hz() as f64 / 1e9,
        if max_workers == 1 {
            "worker"
        } else {
            "workers"
        },
        if max_workers == 1 { "" } else { "s" },
        list(&worker_cores[..max_workers]),
        cli.wire_core,
    );
    eprintln!(
        "bench-fwd: {} mbufs per direction, RX rings {} slots per port, TX rings {} slots; \
         {} frames per direction built in {:.1} s",
        mbufs_per_lane,
        cli.rx_ring,
        tx_slots.next_power_of_two(),
        max_flows,
        t.elapsed().as_secs_f64()
    );

    // Tables sized exactly for the flows would overflow on the worker that
    // draws a few more than its share.
    let headroom = if max_workers > 1 {
        max_flows as usize / 8
    } else {
        0
    };
    let mut bench = Bench {
        pool,
        to_server,
        to_client,
        mbufs_per_lane,
        rx_ring: cli.rx_ring,
        tx_slots,
        flow_capacity: (max_flows as usize + headroom).max(Config::default().flows.capacity),
        max_flows,
        worker_cores,
        wire_core: cli.wire_core,
        seconds: cli.seconds,
        idle_sleep_us: cli.idle_sleep_us,
        runs: 0,
        queues: Queues::empty(),
    };

    let per_worker_lines = cli.workers != [1];
    let mut ok = true;
    for &workers in &cli.workers {
        bench.set_workers(workers, cpus.len())?;
        for &flows in &cli.flows {
            let ceiling = bench.io_forward(flows, false)?;
            let floor = bench.io_forward(flows, true)?;
            let tollgate = bench.tollgate(flows)?;
            let at = if per_worker_lines {
                format!("workers={workers} flows={flows}")
            } else {
                format!("flows={flows}")
            };
            let (t, c, f) = (&tollgate.measured, &ceiling.measured, &floor.measured);
            let floor_note = floor_note(c, f, workers);
            for note in ceiling
                .notes
                .iter()
                .chain(&floor.notes)
                .chain(&tollgate.notes)
            {
                eprintln!("bench-fwd: {at}: {note}");
            }
            eprintln!("bench-fwd: {at}: {floor_note}");
            let failures = ceiling.failures.iter().chain(&floor.failures);
            for failure in failures.chain(&tollgate.failures) {
                eprintln!("bench-fwd: {at}: FAILED: {failure}");
                ok = false;
            }
            if per_worker_lines {
                let per_worker: Vec<String> = t
                    .per_worker_mpps()
                    .iter()
                    .map(|m| format!("{m:.2}"))
                    .collect();
                let cycles = t
                    .cpu_cycles_per_pkt
                    .unwrap_or(t.cycles_per_pkt * workers as f64);
                println!(
                    "fwd workers={workers} flows={flows} mpps={:.2} per_worker_mpps=[{}] \
                     ceiling_mpps={:.2} ratio={:.2} cycles_per_pkt={cycles:.0} handoff={:.2} \
                     split_flows={}",
                    t.mpps,
                    per_worker.join(","),
                    c.mpps,
                    t.mpps / c.mpps,
                    t.handoff(),
                    tollgate.split_flows,
                );
            } else {
                println!(
                    "fwd flows={flows} mpps={:.2} ceiling_mpps={:.2} ratio={:.2} cycles_per_pkt={:.0}",
                    t.mpps,
                    c.mpps,
                    t.mpps / c.mpps,
                    t.cycles_per_pkt
                );
            }
            std::io::stdout().flush().ok();
        }
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

/// What read-forward (`f`) says of the ratio: how much of the ceiling (`c`)
/// a worker that only reads its frames reaches, and, on one worker, how many
/// of the cycles per packet ratio 0.5 allows that reading takes.
fn floor_note(c: &Measured, f: &Measured, workers: usize) -> String {
    let mut note = format!(
        "floor: read-forward (io-forward that also loads each frame's EtherType) {:.2} Mpps, \
         ratio {:.2} to the ceiling",
        f.mpps,
        f.mpps / c.mpps
    );
    if workers == 1 {
        // A ceiling the wire held down understates what 0.5 asks; a floor that
        // waited for the wire overstates what reading costs.
        let (at_least, at_most) = if outran(c) {
            ("at least ", "at most ")
        } else {
            ("", "")
        };
        let half = c.mpps / 2.0;
        // TSC cycles per packet at that rate: the floor ran at f.mpps for
        // f.cycles_per_pkt each, so the TSC ticks at their product.
        let allowed = f.cycles_per_pkt * f.mpps / half;
        note.push_str(&format!(
            "; ratio 0.5 is {at_least}{half:.2} Mpps, {at_most}{allowed:.0} cycles/packet for all \
             a worker does, of which reading the frames takes {}{:.0}",
            if outran(f) { "at most " } else { "" },
            f.cycles_per_pkt,
        ));
    }
    note
}

/// The device under test caught up with the wire: its rate is the wire's.
fn outran(m: &Measured) -> bool {
    m.wire.dry_fraction() > OUTRAN
}

fn list(items: &[usize]) -> String {
    items
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Mbufs for the circulating frames and every thread's mempool cache, and
/// at least what tollgate's configuration check asks of a pool for the
/// largest worker count (descriptors of every queue, caches, bursts).
fn pool_size(mbufs_per_lane: usize, rx_ring: u32, max_workers: usize) -> u32 {
    let cache = MBUF_CACHE as usize;
    let circulating = mbufs_per_lane * 2 + (4 + 2 * (max_workers - 1)) * cache;
    let config_check = 4 * rx_ring as usize + max_workers * (cache + 8 * dpdk::BURST_SIZE);
    (circulating.max(config_check).next_power_of_two() - 1) as u32
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
    let points = cli.flows.len() * cli.workers.len();
    let budget = Duration::from_secs_f64(120.0 + points as f64 * per_point);
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
    /// Schedstat (run, wait) of each device thread, then the wire thread.
    sched: Vec<Option<(u64, u64)>>,
    workers: Vec<WorkerCount>,
}

impl Sample {
    fn take(wire: &WireHandle, devices: &[String], probe: Option<&WorkerProbe<'_>>) -> Sample {
        let mut sched: Vec<_> = devices.iter().map(|d| sched_ns(d)).collect();
        sched.push(sched_ns(WIRE_THREAD));
        Sample {
            at: Instant::now(),
            tsc: dpdk::tsc(),
            wire: wire.stats(),
            sched,
            workers: probe.map(|p| p()).unwrap_or_default(),
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
    waited: Vec<Option<f64>>,
    /// Nanoseconds each device thread spent on a CPU.
    ran: Vec<Option<u64>>,
}

impl Slice {
    fn between(a: &Sample, b: &Sample) -> Slice {
        let seconds = (b.at - a.at).as_secs_f64();
        let pairs = || a.sched.iter().zip(&b.sched);
        let waited = pairs()
            .map(|pair| match pair {
                (Some((_, w0)), Some((_, w1))) => {
                    Some(w1.saturating_sub(*w0) as f64 / 1e9 / seconds)
                }
                _ => None,
            })
            .collect();
        let devices = a.sched.len() - 1;
        let ran = pairs()
            .take(devices)
            .map(|pair| match pair {
                (Some((r0, _)), Some((r1, _))) => Some(r1.saturating_sub(*r0)),
                _ => None,
            })
            .collect();
        Slice {
            seconds,
            cycles: b.tsc - a.tsc,
            wire: b.wire.since(&a.wire),
            waited,
            ran,
        }
    }

    fn contended(&self) -> bool {
        self.waited.iter().flatten().any(|&w| w > CONTENTION)
    }
}

/// Measures for `seconds`, in slices. The machine may be shared: a slice in
/// which another process kept a device thread or the wire thread off its
/// core says more about that process than about the device, so such slices
/// are set aside, as long as at least a third of them are clean.
fn measure(
    wire: &WireHandle,
    devices: &[String],
    seconds: f64,
    wire_core: usize,
    probe: Option<&WorkerProbe<'_>>,
) -> Measured {
    let count = (seconds / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
    let pause = Duration::from_secs_f64(seconds / count as f64);
    // From the wire's core, so sampling never preempts the device.
    let (slices, per_worker): (Vec<Slice>, _) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                core_affinity::set_for_current(core_affinity::CoreId { id: wire_core });
                let mut last = Sample::take(wire, devices, probe);
                let (start, start_workers) = (last.at, last.workers.clone());
                let mut slices = Vec::with_capacity(count);
                for _ in 0..count {
                    std::thread::sleep(pause);
                    let now = Sample::take(wire, devices, probe);
                    slices.push(Slice::between(&last, &now));
                    last = now;
                }
                // Workers publish their counters every 100 ms: over the whole
                // interval that lag is small, over one slice it is not.
                let per_worker = probe.map(|_| {
                    let counts = last
                        .workers
                        .iter()
                        .zip(&start_workers)
                        .map(|(now, then)| now.since(then))
                        .collect();
                    (counts, (last.at - start).as_secs_f64())
                });
                (slices, per_worker)
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
    let threads = devices.len() + 1;
    let mean_waited = |i: usize| {
        let known: Vec<f64> = used.iter().filter_map(|s| s.waited[i]).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    };
    let ran_ns: Option<u64> = used
        .iter()
        .flat_map(|s| s.ran.iter())
        .copied()
        .sum::<Option<u64>>();
    let collected = wire_stats.collected.max(1) as f64;
    Measured {
        mpps: wire_stats.collected as f64 / seconds / 1e6,
        cycles_per_pkt: cycles as f64 / collected,
        cpu_cycles_per_pkt: ran_ns.map(|ns| ns as f64 * dpdk::tsc_hz() as f64 / 1e9 / collected),
        wire: wire_stats,
        waited: (0..threads).map(mean_waited).collect(),
        slices: (used.len(), count),
        contended,
        per_worker,
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

/// Notes on other processes, or our own threads sharing a CPU, taking CPU
/// from the measured threads.
fn contention_notes(m: &Measured, devices: &[String], shared: bool, notes: &mut Vec<String>) {
    let (used, all) = m.slices;
    let names: Vec<&str> = devices
        .iter()
        .map(String::as_str)
        .chain([WIRE_THREAD])
        .collect();
    if m.contended {
        let waits: Vec<String> = names
            .iter()
            .zip(&m.waited)
            .filter_map(|(name, w)| Some(format!("{name} {:.1}%", 100.0 * (*w)?)))
            .collect();
        notes.push(if shared {
            format!(
                "our threads waited for their shared CPUs (waiting for CPU: {}): \
                 this figure shows contention for cores",
                waits.join(", ")
            )
        } else {
            format!(
                "WARNING: other processes kept our threads off their cores for most of the run \
                 (waiting for CPU: {}): this figure is low",
                waits.join(", ")
            )
        });
    } else if used < all {
        notes.push(format!(
            "measured over {used} of {all} slices: in the others, other processes ran on our cores"
        ));
    }
    for (name, waited) in names.iter().zip(&m.waited) {
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

fn mpps_list(values: impl IntoIterator<Item = f64>) -> String {
    let v: Vec<String> = values.into_iter().map(|m| format!("{m:.2}")).collect();
    format!("[{}]", v.join(", "))
}

impl Queues {
    fn empty() -> Queues {
        Queues {
            workers: 0,
            rx: [Vec::new(), Vec::new()],
            tx: [Vec::new(), Vec::new()],
            rx_slots: 0,
            rss: [None, None],
            shared: false,
            idle_sleep_us: 0,
        }
    }
}

impl Bench {
    /// Rings for `workers` queue pairs per port, and each flow's RX queue.
    fn set_workers(&mut self, workers: usize, cpus: usize) -> anyhow::Result<()> {
        self.queues = Queues::empty();
        // A power of two, as the dataplane's configuration wants descriptors.
        let per_queue = self.rx_ring / workers as u32;
        let rx_slots = 1 << (31 - per_queue.leading_zeros());
        let ring =
            |name: String, slots: u32| MbufRing::new(&name, slots).context("creating a ring");
        let mut rx = [Vec::new(), Vec::new()];
        let mut tx = [Vec::new(), Vec::new()];
        for (port, name) in ["in", "out"].iter().enumerate() {
            for q in 0..workers {
                rx[port].push(ring(format!("bf{workers}_{name}_rx{q}"), rx_slots)?);
                tx[port].push(ring(format!("bf{workers}_{name}_tx{q}"), self.tx_slots)?);
            }
        }
        let rss = if workers > 1 {
            let t = Instant::now();
            let flows = self.max_flows as usize;
            let tables = [
                Arc::new(wire::rss_queues(&self.to_server, flows, workers)),
                Arc::new(wire::rss_queues(&self.to_client, flows, workers)),
            ];
            let same = tables[0]
                .iter()
                .zip(tables[1].iter())
                .filter(|(a, b)| a == b)
                .count();
            eprintln!(
                "bench-fwd: workers={workers}: frames reach {workers} RX queues per port \
                 ({rx_slots} slots each) as a NIC's RSS spreads them (Toeplitz hash, the \
                 default key, {}-entry redirection table); the key is not symmetric: {:.0}% of \
                 flows reach the same queue number both ways, so tollgate steers in software \
                 (tables built in {:.1} s)",
                wire::RETA_SIZE,
                percent(same as u64, flows as u64),
                t.elapsed().as_secs_f64()
            );
            tables.map(Some)
        } else {
            [None, None]
        };
        let cores = &self.worker_cores[..workers];
        let shared = workers + 1 > cpus || cores.contains(&self.wire_core);
        let idle_sleep_us =
            self.idle_sleep_us
                .unwrap_or(if shared { SHARED_IDLE_SLEEP_US } else { 0 });
        if shared {
            let sharing: Vec<String> = cores
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c == self.wire_core)
                .map(|(i, c)| format!("worker {i} shares core {c} with the wire thread"))
                .collect();
            eprintln!(
                "bench-fwd: WARNING: workers={workers}: {workers} worker(s) and the wire thread \
                 need {} CPUs, this process may use {cpus}: {}; idle workers sleep {idle_sleep_us} \
                 us (--idle-sleep-us) and the wire yields when its queues are full; the figures \
                 show contention for cores, not how tollgate scales",
                workers + 1,
                if sharing.is_empty() {
                    "they share cores".to_owned()
                } else {
                    sharing.join(", ")
                },
            );
        }
        self.queues = Queues {
            workers,
            rx,
            tx,
            rx_slots,
            rss,
            shared,
            idle_sleep_us,
        };
        Ok(())
    }

    /// Fresh ring ports over the current rings: each run configures its own,
    /// and closing a port leaves its rings alone.
    fn ports(&mut self) -> anyhow::Result<[RingPort; 2]> {
        self.runs += 1;
        let n = self.runs;
        let q = &self.queues;
        Ok([
            RingPort::new(&format!("bfin{n}"), &q.rx[0], &q.tx[0])?,
            RingPort::new(&format!("bfout{n}"), &q.rx[1], &q.tx[1])?,
        ])
    }

    fn wire(&self, flows: u32) -> anyhow::Result<WireHandle> {
        let q = &self.queues;
        Wire {
            lanes: [
                Lane {
                    inject: q.rx[0].clone(),
                    collect: q.tx[1].clone(),
                    frames: self.to_server.clone(),
                    rss: q.rss[0].clone(),
                },
                Lane {
                    inject: q.rx[1].clone(),
                    collect: q.tx[0].clone(),
                    frames: self.to_client.clone(),
                    rss: q.rss[1].clone(),
                },
            ],
            flows: flows as usize,
            mbufs_per_lane: self.mbufs_per_lane,
            pool: self.pool.clone(),
            core: Some(self.wire_core),
            shares_core: q.shared,
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
        let q = &self.queues;
        for ring in q.rx.iter().chain(&q.tx).flatten() {
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

    /// io-forward, or with `reads_frames` read-forward ([`IoForward`]).
    fn io_forward(&mut self, flows: u32, reads_frames: bool) -> anyhow::Result<Outcome> {
        let what = if reads_frames {
            "read-forward"
        } else {
            "io-forward"
        };
        let workers = self.queues.workers;
        let ports = self.ports()?;
        let cfg = PortConfig {
            rx_queues: workers as u16,
            tx_queues: workers as u16,
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
        let (in_rx, in_tx) = inside.take_queues()?;
        let (out_rx, out_tx) = outside.take_queues()?;
        inside.start()?;
        outside.start()?;
        let baseline = self.pool.in_use();

        let running = Arc::new(AtomicBool::new(true));
        let names: Vec<String> = (0..workers).map(iofwd_thread).collect();
        let mut threads = Vec::with_capacity(workers);
        let queue_pairs = in_rx
            .into_iter()
            .zip(in_tx)
            .zip(out_rx.into_iter().zip(out_tx));
        for (i, ((in_rxq, in_txq), (out_rxq, out_txq))) in queue_pairs.enumerate() {
            let fwd = IoForward {
                rx: [in_rxq, out_rxq],
                tx: [in_txq, out_txq],
                tx_retries: Config::default().ports.tx_retries,
                idle_sleep: (self.queues.idle_sleep_us > 0)
                    .then(|| Duration::from_micros(self.queues.idle_sleep_us)),
                reads_frames,
                running: running.clone(),
            };
            let core = self.worker_cores[i];
            threads.push(
                std::thread::Builder::new()
                    .name(names[i].clone())
                    .spawn(move || {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            eprintln!("bench-fwd: {what}: could not pin to core {core}");
                        }
                        let _ = dpdk::register_thread();
                        fwd.run()
                    })?,
            );
        }

        let wire = self.wire(flows)?;
        std::thread::sleep(SETTLE);
        let measured = measure(&wire, &names, self.seconds, self.wire_core, None);
        let mut failures = Vec::new();
        let mut reports = Vec::new();
        let total = self.wind_down(
            wire,
            || {
                running.store(false, Ordering::Relaxed);
                for thread in threads {
                    reports.push(
                        thread
                            .join()
                            .map_err(|_| anyhow::anyhow!("{what} panicked"))?,
                    );
                }
                inside.stop()?;
                outside.stop()?;
                Ok(())
            },
            baseline,
            &mut failures,
        )?;
        drop((inside, outside, ports));
        let report = reports
            .iter()
            .fold(IoForwardReport::default(), |sum, r| IoForwardReport {
                rx_packets: sum.rx_packets + r.rx_packets,
                tx_packets: sum.tx_packets + r.tx_packets,
                dropped: sum.dropped + r.dropped,
                polls: sum.polls + r.polls,
                empty_polls: sum.empty_polls + r.empty_polls,
            });
        if report.dropped > 0 || report.tx_packets != total.injected {
            failures.push(format!(
                "{what}: sent {} of {} frames, dropped {}",
                report.tx_packets, total.injected, report.dropped
            ));
        }

        let mut notes = vec![format!(
            "{what} {:.2} Mpps; at the wire's looks its RX rings held {:.0} frames on \
             average and were empty {:.1}% of the time; {:.1}% of its polls were empty",
            measured.mpps,
            measured.wire.mean_occupancy(),
            100.0 * measured.wire.dry_fraction(),
            percent(report.empty_polls, report.polls),
        )];
        contention_notes(&measured, &names, self.queues.shared, &mut notes);
        if outran(&measured) {
            notes.push(format!(
                "{what} outran the wire thread: its figure is the wire's rate, a lower bound \
                 on what {what} could do"
            ));
        }
        Ok(Outcome {
            measured,
            failures,
            notes,
            split_flows: 0,
        })
    }

    fn tollgate(&mut self, flows: u32) -> anyhow::Result<Outcome> {
        let workers = self.queues.workers;
        let [inside, outside] = self.ports()?;
        let mut config = Config::default();
        config.ports.inside = inside.name.clone();
        config.ports.outside = outside.name.clone();
        config.ports.mbufs = self.pool.size();
        config.ports.mbuf_cache = MBUF_CACHE;
        // The ring PMD ignores descriptor counts; these are what its rings hold.
        config.ports.rx_descriptors = self.queues.rx_slots as u16;
        config.ports.tx_descriptors = self.queues.rx_slots as u16;
        config.workers.cores = self.worker_cores[..workers].to_vec();
        config.workers.idle_sleep_us = self.queues.idle_sleep_us;
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
        let steering = dp.steering();
        let wire = self.wire(flows)?;
        let warm = wait_until("the flow table to hold every flow", || {
            dp.snapshot().totals.flows_active >= u64::from(flows)
        });
        let filled = t.elapsed().as_secs_f64();
        let names: Vec<String> = (0..workers).map(worker_thread).collect();
        let measured = if warm.is_ok() {
            std::thread::sleep(SETTLE);
            let dp = &dp;
            let probe = move || -> Vec<WorkerCount> {
                dp.snapshot_now()
                    .workers
                    .iter()
                    .map(WorkerCount::of)
                    .collect()
            };
            Some(measure(
                &wire,
                &names,
                self.seconds,
                self.wire_core,
                Some(&probe),
            ))
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
        if snap.flows_split_across_workers > 0 {
            failures.push(format!(
                "{} flows were split across workers: both directions of a flow must meet on \
                 one worker",
                snap.flows_split_across_workers
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
        if workers > 1 {
            let seconds = measured.per_worker.as_ref().map_or(1.0, |(_, s)| *s);
            let counts = measured
                .per_worker
                .as_ref()
                .map(|(c, _)| c.as_slice())
                .unwrap_or_default();
            let rate = |f: fn(&WorkerCount) -> u64| {
                mpps_list(counts.iter().map(|c| f(c) as f64 / seconds / 1e6))
            };
            let flows_per_worker: Vec<String> = snap
                .workers
                .iter()
                .map(|w| w.flows_created.to_string())
                .collect();
            notes.push(format!(
                "steering {steering}; per worker, Mpps: sent {}, received from the ports {}, \
                 handed to another worker {}, taken from one {}; flows created [{}]; \
                 {:.1} CPU cycles per packet over all workers, {} flows split across workers{}",
                rate(|c| c.tx),
                rate(|c| c.rx),
                rate(|c| c.handoff_out),
                rate(|c| c.handoff_in),
                flows_per_worker.join(", "),
                measured.cpu_cycles_per_pkt.unwrap_or(f64::NAN),
                snap.flows_split_across_workers,
                if snap.split_audit_unchecked > 0 {
                    format!(
                        " ({} new flows left unchecked: the audit was full)",
                        snap.split_audit_unchecked
                    )
                } else {
                    String::new()
                },
            ));
        }
        contention_notes(&measured, &names, self.queues.shared, &mut notes);
        if outran(&measured) {
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
            split_flows: snap.flows_split_across_workers,
        })
    }
}
