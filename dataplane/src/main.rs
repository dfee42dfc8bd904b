//! `tollgate`: the data-plane daemon.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use dpdk::{Eal, Mempool, Port};
use tollgate::config::{device_name, parse_core_list, Config, FrameAction, LogFormat, LogLevel};
use tollgate::control_socket::{ControlPlane, ToMainThread};
use tollgate::daemon::Dataplane;
use tollgate::exporter::{self, MetricsEndpoint};
use tollgate::{log, snapshot};
use tollgate_control::server::{ControlServer, SocketAccess};
use tollgate_control::Prometheus;
use tollgate_core::pipeline::PortSide;
use tracing::{info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tollgate: a DPDK data plane for a stateful middlebox. It sits between two
/// ports as a transparent bump in the wire: frames received on one port leave
/// on the other, every flow tracked by the worker core that owns it. TCP flows
/// are proxied by default (the worker terminates the client's connection and
/// opens its own to the server, transparently; [proxy] in the config), and
/// flows named by policy (tollgatectl) pass through statelessly.
///
/// Settings come from the TOML file given with --config (see
/// dataplane/tollgate.example.toml); flags override it. Runs as root (or with
/// the capabilities DPDK needs). SIGTERM or SIGINT drains it (proxied
/// connections get --drain-timeout to finish while new flows pass through
/// unproxied), then it prints final counters and exits 0; a second signal
/// stops at once.
#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about,
    long_about,
    max_term_width = 100,
    args_override_self = true
)]
struct Cli {
    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Inside port (faces clients): a PCI address (0000:3b:00.0) or a DPDK
    /// virtual device string (net_af_packet0,iface=eth1,qpairs=2). [ports.inside]
    #[arg(long, value_name = "DEVICE")]
    inside: Option<String>,

    /// Outside port (faces servers), as for --inside. [ports.outside]
    #[arg(long, value_name = "DEVICE")]
    outside: Option<String>,

    /// Worker cores, one worker pinned to each: "1,2" or "2-5". [workers.cores]
    #[arg(long, value_name = "LIST", value_parser = |s: &str| parse_core_list(s).map(CoreList))]
    cores: Option<CoreList>,

    /// Microseconds a worker sleeps after each empty poll once 1024 polls in
    /// a row have found nothing (until traffic comes back); 0 polls without
    /// pause. [workers.idle_sleep_us]
    #[arg(long, value_name = "US")]
    idle_sleep_us: Option<u64>,

    /// Flows tracked at once over all workers. [flows.capacity]
    #[arg(long, value_name = "N")]
    flow_capacity: Option<usize>,

    /// A new flow when the table is full: forward (untracked) or drop. [flows.on_full]
    #[arg(long, value_name = "ACTION")]
    on_table_full: Option<FrameAction>,

    /// Idle timeout of established TCP flows, seconds. [flows.tcp_established_timeout_secs]
    #[arg(long, value_name = "SECS")]
    tcp_timeout: Option<u64>,

    /// Idle timeout of UDP flows, seconds. [flows.udp_timeout_secs]
    #[arg(long, value_name = "SECS")]
    udp_timeout: Option<u64>,

    /// Frames that fail parsing: forward or drop (counted by reason either
    /// way). [malformed.action]
    #[arg(long, value_name = "ACTION")]
    malformed: Option<FrameAction>,

    /// Packet buffers in the pool shared by both ports. [ports.mbufs]
    #[arg(long, value_name = "N")]
    mbufs: Option<u32>,

    /// Run without hugepages (needs --memory). [eal.no_huge]
    #[arg(long)]
    no_huge: bool,

    /// EAL memory in MiB (-m). [eal.memory_mb]
    #[arg(long, value_name = "MB")]
    memory: Option<u32>,

    /// DPDK file prefix, to run several DPDK processes on one host. [eal.file_prefix]
    #[arg(long, value_name = "NAME")]
    file_prefix: Option<String>,

    /// An extra EAL argument, passed through; repeat for more. [eal.args]
    #[arg(long = "eal-arg", value_name = "ARG", allow_hyphen_values = true)]
    eal_args: Vec<String>,

    /// On SIGTERM/SIGINT, seconds proxied connections get to finish while new flows pass
    /// through unproxied; 0 stops at once. [daemon.drain_timeout_secs]
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<u64>,

    /// Log level: error, warn, info (the default), debug or trace. [log.level]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    /// Log format on standard error: text (the default) or json. [log.format]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Write the process id here once forwarding; removed at exit. [daemon.pid_file]
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,

    /// Write a JSON counters snapshot here every --stats-interval and at exit. [stats.file]
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,

    /// Seconds between stats file writes and Prometheus refreshes. [stats.interval_secs]
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<u64>,

    /// Serve the counters in Prometheus' text format at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9101); "" turns it off. [stats.prometheus_listen]
    #[arg(long, value_name = "ADDR")]
    prometheus_listen: Option<String>,

    /// The control socket for tollgatectl; "" disables it. Its connection limits and
    /// timeouts, which always leave root a way in, are keys of [control]. [control.socket]
    #[arg(long, value_name = "PATH")]
    control_socket: Option<std::ffi::OsString>,

    /// Group whose members may use the control socket besides root. [control.group]
    #[arg(long, value_name = "NAME")]
    control_group: Option<String>,

    /// Where the policy is saved and restored from; "" keeps it in memory
    /// only. [policy.state_file]
    #[arg(long, value_name = "PATH")]
    state_file: Option<std::ffi::OsString>,

    /// Check the configuration (and the saved policy) and exit, 0 if valid,
    /// without touching DPDK: the ports' PCI devices and interfaces and the
    /// control group must exist.
    #[arg(long)]
    check: bool,
}

/// A worker core list as one flag value (clap would otherwise read a `Vec`
/// as repeated flags).
#[derive(Debug, Clone)]
struct CoreList(Vec<usize>);

impl Cli {
    fn apply(self, c: &mut Config) {
        if let Some(v) = self.inside {
            c.ports.inside = v;
        }
        if let Some(v) = self.outside {
            c.ports.outside = v;
        }
        if let Some(CoreList(v)) = self.cores {
            c.workers.cores = v;
        }
        if let Some(v) = self.idle_sleep_us {
            c.workers.idle_sleep_us = v;
        }
        if let Some(v) = self.flow_capacity {
            c.flows.capacity = v;
        }
        if let Some(v) = self.on_table_full {
            c.flows.on_full = v;
        }
        if let Some(v) = self.tcp_timeout {
            c.flows.tcp_established_timeout_secs = v;
        }
        if let Some(v) = self.udp_timeout {
            c.flows.udp_timeout_secs = v;
        }
        if let Some(v) = self.malformed {
            c.malformed.action = v;
        }
        if let Some(v) = self.mbufs {
            c.ports.mbufs = v;
        }
        if self.no_huge {
            c.eal.no_huge = true;
        }
        if let Some(v) = self.memory {
            c.eal.memory_mb = v;
        }
        if let Some(v) = self.file_prefix {
            c.eal.file_prefix = v;
        }
        c.eal.args.extend(self.eal_args);
        if let Some(v) = self.pid_file {
            c.daemon.pid_file = Some(v);
        }
        if let Some(v) = self.log_level {
            c.log.level = v;
        }
        if let Some(v) = self.log_format {
            c.log.format = v;
        }
        if let Some(v) = self.drain_timeout {
            c.daemon.drain_timeout_secs = v;
        }
        if let Some(v) = self.stats_file {
            c.stats.file = Some(v);
        }
        if let Some(v) = self.stats_interval {
            c.stats.interval_secs = v;
        }
        if let Some(v) = self.prometheus_listen {
            c.stats.prometheus_listen = v;
        }
        if let Some(v) = self.control_socket {
            c.control.socket = PathBuf::from(v);
        }
        if let Some(v) = self.control_group {
            c.control.group = v;
        }
        if let Some(v) = self.state_file {
            c.policy.state_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => {}
        Err(e) => {
            // One line: the chain of causes, outermost first.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("tollgate: error: {}", msg.join(": "));
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let check_only = cli.check;
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    cli.apply(&mut config);
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    config.validate(&available)?;
    config.check_host(std::path::Path::new("/sys"))?;
    log::init(&config.log);
    let mut control =
        ControlPlane::restore(config.policy_defaults(), config.policy.state_file.clone())?;
    if check_only {
        println!(
            "tollgate: configuration is valid; {} policy rules{}",
            control.policy_set().rules.len(),
            config
                .policy
                .state_file
                .as_ref()
                .map(|f| format!(" in {}", f.display()))
                .unwrap_or_default()
        );
        return Ok(());
    }
    // Bind before touching DPDK: a second daemon on the same socket should
    // fail here, not after taking the ports.
    let server = if config.control.socket.as_os_str().is_empty() {
        None
    } else {
        let access = SocketAccess {
            mode: 0o660,
            group: (!config.control.group.is_empty()).then(|| config.control.group.clone()),
        };
        Some(
            ControlServer::bind(&config.control.socket, &access)
                .map_err(|e| {
                    anyhow::anyhow!("control.socket {}: {e}", config.control.socket.display())
                })?
                .with_limits(config.control.limits()),
        )
    };

    let metrics = match config.stats.prometheus_addr() {
        Some(addr) => Some(
            MetricsEndpoint::bind(addr)
                .map_err(|e| anyhow::anyhow!("stats.prometheus_listen {addr}: {e}"))?,
        ),
        None => None,
    };

    // Signals first: a SIGTERM during start-up must still stop us cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }

    let eal_args = config.eal_args("tollgate");
    let eal = Eal::init(&eal_args).map_err(|e| {
        anyhow::anyhow!(
            "DPDK EAL initialisation failed ({e}); EAL arguments were: {}",
            eal_args[1..].join(" ")
        )
    })?;

    let pool = Arc::new(Mempool::pktmbuf(
        "tollgate_mbufs",
        config.ports.mbufs,
        config.ports.mbuf_cache,
        dpdk::sys::consts::MBUF_DEFAULT_BUF_SIZE,
        -1,
    )?);
    let mut ids = [0u16; 2];
    for side in PortSide::BOTH {
        let dev = if side == PortSide::Inside {
            &config.ports.inside
        } else {
            &config.ports.outside
        };
        ids[side.index()] = Port::lookup(device_name(dev))
            .map_err(|e| anyhow::anyhow!("ports.{}: {e}", side.name()))?;
    }
    let mut dataplane = Dataplane::start(&config, ids, pool, control.compiled())?;
    if config.eal.packet_capture {
        if config.eal.no_huge {
            info!("packet capture is off: dpdk-dumpcap maps tollgate's memory, which --no-huge keeps private");
        } else {
            match eal.enable_packet_capture() {
                Ok(()) => info!(
                    "packet capture on: dpdk-dumpcap --file-prefix {} -i {} (or -i {})",
                    config.eal.file_prefix,
                    device_name(&config.ports.inside),
                    device_name(&config.ports.outside)
                ),
                Err(e) => warn!("packet capture unavailable: {e}"),
            }
        }
    }
    // The control plane (this thread) answers operators and confirms policy
    // changes; on a core of its own it does so in microseconds. Sharing every
    // core with busy-polling workers, each step waits for a scheduler slice.
    // DPDK's EAL init narrowed this thread to the first worker's core; give
    // it a core of its own when there is one, else every core it had before.
    let spare: Vec<usize> = available
        .iter()
        .copied()
        .filter(|c| !config.workers.cores.contains(c))
        .collect();
    if let Some(&core) = spare.first() {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    } else {
        let mut all = nix::sched::CpuSet::new();
        for &c in &available {
            let _ = all.set(c);
        }
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &all);
        if config.workers.idle_sleep_us == 0 {
            warn!(
                "every CPU runs a busy-polling worker; the control plane and the rest of the host share them (policy changes take milliseconds to confirm). Leave a core free, or set workers.idle_sleep_us."
            );
        }
    }
    let (request_tx, request_rx) = crossbeam::channel::bounded(64);
    let server = server.map(|s| {
        s.with_log(|line| warn!("{}", line.strip_prefix("tollgate: ").unwrap_or(line)))
            .serve(Arc::new(ToMainThread {
                requests: request_tx,
            }))
    });
    for side in PortSide::BOTH {
        let p = dataplane.port(side);
        let link = p.link();
        let info = Port::info(p.id()).map(|i| i.driver).unwrap_or_default();
        info!(
            "{} port {} (driver {info}, port id {}): link {} {} Mb/s",
            side.name(),
            p.name(),
            p.id(),
            if link.up { "up" } else { "down" },
            link.speed_mbps
        );
    }
    info!(
        "forwarding between inside and outside with {} worker(s) on cores {:?}, steering {}, {}",
        config.workers.cores.len(),
        config.workers.cores,
        dataplane.steering(),
        Eal::version()
    );
    if let Some(s) = &server {
        control.count_socket(s.counters());
        info!(
            "control socket {} ({} policy rules restored)",
            s.path().display(),
            control.policy_set().rules.len()
        );
    }
    // The telemetry thread answers from the snapshot of the last stats interval.
    let latest = Arc::new(Mutex::new(control.stats(&dataplane)));
    match exporter::register_telemetry(latest.clone()) {
        Ok(()) => info!(
            "DPDK telemetry: /tollgate/stats, /tollgate/drops, /tollgate/malformed, /tollgate/proxy, /tollgate/rules (dpdk-telemetry.py -f {})",
            config.eal.file_prefix
        ),
        Err(e) => warn!("DPDK telemetry commands not registered: {e}"),
    }
    if let Some(m) = &metrics {
        m.publish(Prometheus(&control.stats(&dataplane)).to_string());
        info!("Prometheus counters at http://{}/metrics", m.addr());
    }
    if let Some(pid_file) = &config.daemon.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("daemon.pid_file {}: {e}", pid_file.display()))?;
    }

    let interval = Duration::from_secs(config.stats.interval_secs);
    let mut last_stats = Instant::now();
    let mut links = PortSide::BOTH.map(|side| dataplane.port(side).link().up);
    let mut unmaps = dpdk::deferred_unmaps();
    // What the log last reported on: each interval logs what moved since.
    let mut logged = control.stats(&dataplane);
    let drain_timeout = Duration::from_secs(config.daemon.drain_timeout_secs);
    let mut drain_until: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let open = dataplane.snapshot_now().proxy.connections_open;
            if drain_until.is_some() || drain_timeout.is_zero() || open == 0 {
                break;
            }
            // Before the line that announces it: a flow that starts after the line is
            // logged passes through.
            dataplane.drain();
            info!(
                "draining: {open} proxied connection(s) get up to {} s to finish; new flows pass through unproxied, bypassed ones keep forwarding; a second SIGTERM or SIGINT stops at once",
                drain_timeout.as_secs()
            );
            drain_until = Some(Instant::now() + drain_timeout);
            // The next signal sets it again: the way to cut the drain short.
            stop.store(false, Ordering::Relaxed);
        }
        if let Some(until) = drain_until {
            let open = dataplane.snapshot_now().proxy.connections_open;
            if open == 0 {
                info!("drained: every proxied connection has finished");
                break;
            }
            if Instant::now() >= until {
                warn!("drain timeout: {open} proxied connection(s) still open are dropped");
                break;
            }
        }
        if let Ok((request, uid, reply)) = request_rx.recv_timeout(Duration::from_millis(50)) {
            let _ = reply.send(control.handle(request, uid, &dataplane));
        }
        dataplane.poll_audit();
        for side in PortSide::BOTH {
            let up = dataplane.port(side).link().up;
            if up != links[side.index()] {
                links[side.index()] = up;
                if up {
                    info!("{}: link up", side.name());
                } else {
                    warn!("{}: link down: nothing arrives on it until it is up again (on memif: its peer left, and frames it had queued and tollgate had not yet received went with its rings)", side.name());
                }
            }
        }
        let now = dpdk::deferred_unmaps();
        if now != unmaps {
            info!(
                "the interrupt thread unmapped port memory after the workers left their bursts: {} time(s), the longest wait {} us",
                now.count,
                now.longest_wait.as_micros()
            );
            unmaps = now;
        }
        for (worker, notices) in dataplane.take_notices() {
            log::notices(worker, &notices);
        }
        if last_stats.elapsed() >= interval {
            last_stats = Instant::now();
            let snapshot = control.stats(&dataplane);
            log::counter_changes(&logged, &snapshot);
            logged.clone_from(&snapshot);
            if let Some(file) = &config.stats.file {
                if let Err(e) = snapshot::write_file(file, &snapshot) {
                    warn!("stats.file {}: {e}", file.display());
                }
            }
            if let Some(m) = &metrics {
                m.publish(Prometheus(&snapshot).to_string());
            }
            if let Ok(mut l) = latest.lock() {
                *l = snapshot;
            }
        }
    }

    info!("stopping");
    if let Some(s) = server {
        s.shutdown();
    }
    let mut final_stats = dataplane.stop()?;
    for (worker, notices) in dataplane.take_notices() {
        log::notices(worker, &notices);
    }
    log::counter_changes(&logged, &final_stats);
    // After stop: the workers' last published counters are their final ones.
    let last = control.stats(&dataplane);
    final_stats.rules = last.rules;
    final_stats.control_socket = last.control_socket;
    eprint!("{}", final_stats.render_table());
    if let Some(file) = &config.stats.file {
        snapshot::write_file(file, &final_stats)
            .map_err(|e| anyhow::anyhow!("stats.file {}: {e}", file.display()))?;
    }
    if let Some(pid_file) = &config.daemon.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    // The ports close before the EAL cleans up, which removes the virtual devices under them.
    drop(dataplane);
    drop(eal);
    info!("stopped");
    Ok(())
}
