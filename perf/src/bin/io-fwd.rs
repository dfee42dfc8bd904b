//! `io-fwd`: plain io-forward (testpmd's `io` mode) between two DPDK ports,
//! with tollgate's worker layout and idle policy: one pinned thread per core,
//! each owning one RX and one TX queue on both ports, sleeping
//! `--idle-sleep-us` after 1024 empty polls in a row as tollgate's workers do
//! with `--idle-sleep-us`. `scripts/bench proxy` runs it on the lab's two
//! `net_af_packet` devices in place of tollgate, beside `dpdk-testpmd`:
//! on a machine where the forwarding cores are also the endpoints' cores,
//! a forwarder that busy-polls a whole CPU (testpmd) takes it from the
//! endpoints, and the ceiling is the one that does not.
//!
//! Runs until SIGTERM/SIGINT (the default action ends it; the EAL is started
//! `--in-memory`, so nothing is left behind) or `--max-seconds`. Every
//! `--report-seconds` it prints the frames forwarded and dropped on stderr.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use dpdk::{Burst, Eal, Mempool, Poller, Port, PortConfig, RxQueue, TxQueue};

/// Plain io-forward between two DPDK ports, one pinned thread per core,
/// idle threads sleeping as tollgate's workers do.
#[derive(Parser, Debug)]
#[command(name = "io-fwd", about, long_about, max_term_width = 100)]
struct Cli {
    /// First port, as a DPDK device string (net_af_packet0,iface=tg-cl,qpairs=2).
    #[arg(long)]
    inside: String,
    /// Second port.
    #[arg(long)]
    outside: String,
    /// Forwarding cores, comma-separated; one thread and one queue pair per port each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    cores: Vec<usize>,
    /// Microseconds an idle thread sleeps after 1024 empty polls; 0 polls without pause.
    #[arg(long, default_value_t = 0)]
    idle_sleep_us: u64,
    /// Offers of refused frames before dropping them (tollgate's ports.tx_retries).
    #[arg(long, default_value_t = 8)]
    tx_retries: u32,
    /// Packet buffers in the pool.
    #[arg(long, default_value_t = 16383)]
    mbufs: u32,
    /// RX and TX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    descriptors: u16,
    /// Run the EAL without hugepages (with --memory MiB).
    #[arg(long)]
    no_huge: bool,
    /// EAL memory in MiB with --no-huge.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Seconds between counter lines on stderr.
    #[arg(long, default_value_t = 5)]
    report_seconds: u64,
}

const IDLE_POLLS_BEFORE_SLEEP: u32 = 1024;
/// `RTE_MBUF_DEFAULT_BUF_SIZE`.
const DATA_ROOM: u16 = 2048 + 128;
const MBUF_CACHE: u32 = 256;

#[derive(Default)]
struct Counters {
    rx: AtomicU64,
    tx: AtomicU64,
    dropped: AtomicU64,
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("io-fwd: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn device_name(dev: &str) -> &str {
    dev.split(',').next().unwrap_or("").trim()
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    ensure!(
        !cli.cores.is_empty() && cli.cores.len() <= 64,
        "--cores: 1 to 64 cores"
    );
    ensure!(cli.report_seconds > 0, "--report-seconds: at least 1");
    let mut eal_args = vec![
        "io-fwd".to_string(),
        "-l".into(),
        cli.cores[0].to_string(),
        "--in-memory".into(),
        "--no-pci".into(),
        "--vdev".into(),
        cli.inside.clone(),
        "--vdev".into(),
        cli.outside.clone(),
    ];
    if cli.no_huge {
        eal_args.extend(["--no-huge".into(), "-m".into(), cli.memory.to_string()]);
    }
    let _eal = Eal::init(&eal_args).context("EAL initialisation (are you root?)")?;
    let pool = Mempool::pktmbuf("io_fwd_pool", cli.mbufs, MBUF_CACHE, DATA_ROOM, 0)
        .context("creating the mbuf pool")?;
    let queues = u16::try_from(cli.cores.len()).context("too many cores")?;
    let cfg = PortConfig {
        rx_queues: queues,
        tx_queues: queues,
        rx_descriptors: cli.descriptors,
        tx_descriptors: cli.descriptors,
        rss: false,
        promiscuous: true,
    };
    let mut ports = Vec::new();
    for dev in [&cli.inside, &cli.outside] {
        let name = device_name(dev);
        let id = Port::lookup(name)?;
        ports.push(Port::configure(id, name, &cfg, &pool).with_context(|| format!("port {name}"))?);
    }
    let (in_rx, in_tx) = ports[0].take_queues()?;
    let (out_rx, out_tx) = ports[1].take_queues()?;
    for p in &mut ports {
        p.start()?;
    }
    let counters = Arc::new(Counters::default());
    let idle_sleep = (cli.idle_sleep_us > 0).then(|| Duration::from_micros(cli.idle_sleep_us));
    let mut queues: Vec<_> = in_rx
        .into_iter()
        .zip(in_tx)
        .zip(out_rx.into_iter().zip(out_tx))
        .map(|((a, b), (c, d))| ([a, c], [b, d]))
        .collect();
    for (i, &core) in cli.cores.iter().enumerate().rev() {
        let (rx, tx) = queues.pop().context("a queue pair per core")?;
        let counters = Arc::clone(&counters);
        let tx_retries = cli.tx_retries;
        thread::Builder::new()
            .name(format!("io-fwd-{i}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    eprintln!("io-fwd: thread {i}: could not pin to core {core}");
                }
                if let Err(e) = dpdk::register_thread() {
                    eprintln!("io-fwd: thread {i}: {e}; running without a mempool cache");
                }
                forward(rx, tx, tx_retries, idle_sleep, &counters);
            })
            .context("spawning a forwarding thread")?;
    }
    eprintln!(
        "io-fwd: forwarding {} <-> {} on cores {:?}, idle sleep {} us",
        device_name(&cli.inside),
        device_name(&cli.outside),
        cli.cores,
        cli.idle_sleep_us
    );
    let start = Instant::now();
    let limit = Duration::from_secs(cli.max_seconds);
    while start.elapsed() < limit {
        thread::sleep(
            Duration::from_secs(cli.report_seconds).min(limit.saturating_sub(start.elapsed())),
        );
        eprintln!(
            "io-fwd: {:.0} s: rx {} tx {} dropped {}",
            start.elapsed().as_secs_f64(),
            counters.rx.load(Ordering::Relaxed),
            counters.tx.load(Ordering::Relaxed),
            counters.dropped.load(Ordering::Relaxed)
        );
    }
    eprintln!("io-fwd: --max-seconds {} reached, exiting", cli.max_seconds);
    // The forwarding threads still own queues: end the process without tearing the EAL down.
    std::process::exit(0);
}

/// One thread's loop: frames from `rx[0]` leave by `tx[1]` and the reverse.
fn forward(
    mut rx: [RxQueue; 2],
    mut tx: [TxQueue; 2],
    tx_retries: u32,
    idle_sleep: Option<Duration>,
    counters: &Counters,
) {
    let mut burst = Burst::new();
    let mut idle_polls = 0u32;
    let (mut n_rx, mut n_tx, mut n_drop) = (0u64, 0u64, 0u64);
    // A memif peer that leaves gets its rings unmapped only between this loop's bursts.
    let poller = Poller::register();
    loop {
        poller.quiescent();
        let mut work = 0;
        for side in 0..2 {
            let n = rx[side].rx_burst(&mut burst);
            if n == 0 {
                continue;
            }
            work += n;
            n_rx += n as u64;
            let txq = &mut tx[1 - side];
            let mut attempts = 0;
            loop {
                n_tx += txq.tx_burst(&mut burst) as u64;
                if burst.is_empty() {
                    break;
                }
                if attempts == tx_retries {
                    n_drop += burst.len() as u64;
                    burst.clear();
                    break;
                }
                attempts += 1;
            }
        }
        if work == 0 {
            idle_polls = idle_polls.saturating_add(1);
            if let Some(pause) = idle_sleep {
                if idle_polls >= IDLE_POLLS_BEFORE_SLEEP {
                    // Publish before sleeping: the counters stay current while idle.
                    counters
                        .rx
                        .fetch_add(std::mem::take(&mut n_rx), Ordering::Relaxed);
                    counters
                        .tx
                        .fetch_add(std::mem::take(&mut n_tx), Ordering::Relaxed);
                    counters
                        .dropped
                        .fetch_add(std::mem::take(&mut n_drop), Ordering::Relaxed);
                    thread::sleep(pause);
                }
            }
        } else {
            idle_polls = 0;
            if n_rx >= 4096 {
                counters
                    .rx
                    .fetch_add(std::mem::take(&mut n_rx), Ordering::Relaxed);
                counters
                    .tx
                    .fetch_add(std::mem::take(&mut n_tx), Ordering::Relaxed);
                counters
                    .dropped
                    .fetch_add(std::mem::take(&mut n_drop), Ordering::Relaxed);
            }
        }
    }
}
