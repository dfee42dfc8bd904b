//! Bringing the data plane up on two DPDK ports and taking it down again:
//! queues, steering, worker threads, the split audit and counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam::channel::{bounded, Receiver, Sender};
use dpdk::{LcoreTask, MbufRing, Mempool, Port, PortConfig, RssSetup, Steering};

use tollgate_control::{LimitCounters, MempoolStats, PortCounters, StatsSnapshot};
use tollgate_core::policy::stall_of;
use tollgate_core::proxy::{ProxySettings, ProxyTable};
use tollgate_core::tcp::inspect::SignatureInspector;
use tollgate_core::tcp::proxy::ProxyConfig;
use tollgate_core::tcp::reassembly::ReassemblyLimits;

use crate::config::Config;
use crate::snapshot::{latch_port_counters, port_counters, snapshot, SnapshotInputs};
use crate::worker::{HandoffsDone, Worker, WorkerCommand, WorkerReport};
use tollgate_control::protocol::RuleHits;
use tollgate_core::flow::{FlowKey, FlowTableConfig, FlowTimeouts};
use tollgate_core::ip_reassembly::FragmentTable;
use tollgate_core::notice::Notices;
use tollgate_core::pipeline::{Pipeline, PipelineConfig, PortSide, RssQueue, Steer};
use tollgate_core::policy::{CompiledPolicy, PolicyBoard};
use tollgate_core::rss::{HashInput, RssSteering};
use tollgate_core::shard::Shard;
use tollgate_core::steering::SplitAudit;

/// Commands waiting per worker; a full queue means the worker is stuck, and
/// the control plane says so rather than wait.
const COMMAND_QUEUE: usize = 8;

/// Slots in each worker-to-worker handoff ring.
const HANDOFF_RING_SLOTS: u32 = 4096;

/// Where a worker runs: on its EAL lcore, or, when the EAL was started without one for it (a
/// test, a benchmark), on a thread of ours registered with DPDK.
enum WorkerTask {
    Lcore(LcoreTask<WorkerReport>),
    Thread(JoinHandle<WorkerReport>),
}

impl WorkerTask {
    fn join(self) -> std::thread::Result<WorkerReport> {
        match self {
            WorkerTask::Lcore(task) => task.join(),
            WorkerTask::Thread(thread) => thread.join(),
        }
    }
}

struct RunningWorker {
    id: usize,
    core: Option<usize>,
    thread: Option<WorkerTask>,
    report: Arc<Mutex<WorkerReport>>,
    commands: Sender<WorkerCommand>,
}

/// The running data plane.
pub struct Dataplane {
    ports: [Port; 2],
    workers: Vec<RunningWorker>,
    running: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    audit_rx: Receiver<(u16, Vec<FlowKey>)>,
    audit: SplitAudit,
    steering: Steering,
    pool: Arc<Mempool>,
    started: Instant,
    board: Arc<PolicyBoard>,
    signature_names: Vec<String>,
    /// Each port's counters as reported so far ([`latch_port_counters`]).
    ports_seen: Mutex<[PortCounters; 2]>,
}

/// One worker's share of the proxy configuration.
pub fn proxy_settings(config: &Config) -> ProxySettings {
    let p = &config.proxy;
    let workers = config.workers.cores.len().max(1);
    let buffer = p.buffer_kib * 1024;
    let mut flow = ProxyConfig {
        buffer,
        mss: p.mss,
        ecn: p.ecn,
        ..ProxyConfig::default()
    };
    flow.endpoint.reassembly = ReassemblyLimits {
        max_segments: p.out_of_order_segments,
        max_bytes: buffer,
        timeout_ms: (p.out_of_order_timeout_ms > 0).then_some(p.out_of_order_timeout_ms),
    };
    flow.stall.action = stall_of(p.on_stall);
    ProxySettings {
        flow,
        max_flows: p.max_flows.div_ceil(workers),
        max_embryonic: p.max_embryonic,
        max_embryonic_per_source: p.max_embryonic_per_source,
        on_midstream: p.on_midstream,
        buffer_budget: (p.memory_budget_mib << 20) / workers,
        on_flow_limit: p.on_flow_limit,
        on_memory_budget: p.on_memory_budget,
        on_buffer_shortage: p.on_buffer_shortage,
        detect_ports: p.detect_ipsec_over_tcp_ports.clone(),
    }
}

/// A worker's SYN-cookie secret: from the kernel's random source, never shared or stored.
fn cookie_secret() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut secret = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

pub fn flow_table_config(config: &Config) -> FlowTableConfig {
    let f = &config.flows;
    let workers = config.workers.cores.len().max(1);
    FlowTableConfig {
        capacity: f.capacity.div_ceil(workers),
        timeouts: FlowTimeouts {
            tcp_embryonic_ms: f.tcp_embryonic_timeout_secs * 1000,
            tcp_unreplied_ms: f.tcp_unreplied_timeout_secs * 1000,
            tcp_established_ms: f.tcp_established_timeout_secs * 1000,
            tcp_closing_ms: f.tcp_closing_timeout_secs * 1000,
            tcp_closed_ms: f.tcp_closed_timeout_secs * 1000,
            udp_ms: f.udp_timeout_secs * 1000,
            other_ms: f.other_timeout_secs * 1000,
        },
        ..FlowTableConfig::default()
    }
}

impl Dataplane {
    /// The pool for reassembled datagrams longer than a packet buffer holds. Without it (off, or
    /// no memory for it), those are dropped and counted as too big; a warning says so.
    fn large_buffers(config: &Config) -> Option<Arc<Mempool>> {
        let r = &config.reassembly;
        if !r.enabled || r.large_buffers == 0 {
            return None;
        }
        // Room for the link-layer header (two VLAN tags) and DPDK's headroom, within an mbuf's
        // 16-bit length.
        let room = (r.max_datagram_len + 22 + dpdk::sys::consts::PKTMBUF_HEADROOM as usize)
            .min(usize::from(u16::MAX)) as u16;
        match Mempool::pktmbuf("tollgate_large", r.large_buffers, 0, room, -1) {
            Ok(pool) => Some(Arc::new(pool)),
            Err(e) => {
                tracing::warn!(
                "reassembly: no pool of {} large buffers ({e}): datagrams longer than a packet \
                 buffer will be dropped (reassembly too_big); lower reassembly.large_buffers or \
                 give the EAL more memory",
                r.large_buffers
            );
                None
            }
        }
    }

    /// What reassembly needs of the ports' symmetric RSS: both must hash TCP alike, and software
    /// must know their redirection table. None, with a warning, when it cannot be told where
    /// the NIC sends a reassembled datagram's flow.
    fn rss_steering(setups: [Option<&RssSetup>; 2]) -> Option<Arc<RssSteering>> {
        let [Some(inside), Some(outside)] = setups else {
            return None;
        };
        // What hashing TCP uses: a key longer than the longest input (IPv6 addresses and ports,
        // 36 bytes) and its 32-bit window changes nothing, nor do flow types other than TCP's.
        let model = |setup: &RssSetup| {
            let (tcp4, tcp6) = rss_inputs(setup.flow_types);
            let key = setup
                .key
                .iter()
                .copied()
                .take(RssSteering::KEY_USED)
                .collect();
            RssSteering::new(key, tcp4, tcp6, setup.reta.clone()?)
        };
        let why = match (model(inside), model(outside)) {
            (Some(a), Some(b)) if a == b => return Some(Arc::new(a)),
            (Some(_), Some(_)) => "the two ports' RSS differ",
            _ => "a driver neither takes a redirection table nor shows its own",
        };
        tracing::warn!(
            "reassembly: off under symmetric RSS ({why}): TCP fragments pass as they are, and \
             those of proxied flows are dropped (proxy_unusable); set ports.rss = false to \
             steer in software"
        );
        None
    }

    /// Configures both ports with one queue pair per worker, picks the
    /// steering, starts the ports and the pinned worker threads.
    pub fn start(
        config: &Config,
        port_ids: [u16; 2],
        pool: Arc<Mempool>,
        policy: CompiledPolicy,
    ) -> anyhow::Result<Dataplane> {
        Self::start_with_rss(config, port_ids, pool, policy, None)
    }

    /// [`Dataplane::start`], taking both ports to hash as `assumed` says whatever they report:
    /// for ports that cannot hash (ring ports in tests) fed frames whose RSS hash and queue
    /// were set as a NIC with that setup would set them.
    pub fn start_with_rss(
        config: &Config,
        port_ids: [u16; 2],
        pool: Arc<Mempool>,
        policy: CompiledPolicy,
        assumed: Option<RssSetup>,
    ) -> anyhow::Result<Dataplane> {
        let workers = config.workers.cores.len();
        let queues = u16::try_from(workers).context("too many workers")?;
        let port_cfg = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: config.ports.rx_descriptors,
            tx_descriptors: config.ports.tx_descriptors,
            rss: config.ports.rss,
            promiscuous: true,
        };
        let large = Self::large_buffers(config);
        let names = [&config.ports.inside, &config.ports.outside];
        let mut ports = Vec::with_capacity(2);
        for side in PortSide::BOTH {
            let name = crate::config::device_name(names[side.index()]);
            let port = Port::configure(port_ids[side.index()], name, &port_cfg, &pool)
                .with_context(|| format!("ports.{}: {name}", side.name()))?;
            ports.push(port);
        }
        let [mut inside, mut outside]: [Port; 2] =
            ports.try_into().map_err(|_| anyhow::anyhow!("two ports"))?;

        // The NIC's hash can stand in for ours only if both ports compute the
        // same symmetric one; otherwise the two directions would disagree.
        let steering = if assumed.is_some()
            || inside.steering() == Steering::SymmetricRss
                && outside.steering() == Steering::SymmetricRss
        {
            Steering::SymmetricRss
        } else {
            Steering::Software
        };
        let software = steering == Steering::Software && workers > 1;
        // Under RSS, a datagram reassembled from fragments (which the NIC hashed on their
        // addresses) may belong to a flow another worker's queue receives.
        let rss = match (&assumed, steering, config.reassembly.enabled) {
            (Some(setup), _, true) => Self::rss_steering([Some(setup), Some(setup)]),
            (None, Steering::SymmetricRss, true) => {
                Self::rss_steering([inside.rss(), outside.rss()])
            }
            _ => None,
        };
        let reassembly =
            config.reassembly.enabled && (steering == Steering::Software || rss.is_some());
        let handoff = workers > 1 && (software || rss.is_some());

        let (in_rx, in_tx) = inside.take_queues()?;
        let (out_rx, out_tx) = outside.take_queues()?;

        // handoff[from][to]: the single-producer ring from one worker to another.
        let mut producers: Vec<Vec<Option<dpdk::RingProducer>>> = (0..workers)
            .map(|_| (0..workers).map(|_| None).collect())
            .collect();
        let mut consumers: Vec<Vec<dpdk::RingConsumer>> =
            (0..workers).map(|_| Vec::new()).collect();
        if handoff {
            let tag = std::process::id();
            for (from, row) in producers.iter_mut().enumerate() {
                for (to, slot) in row.iter_mut().enumerate() {
                    if from != to {
                        let (p, c) =
                            MbufRing::spsc(&format!("tg{tag}h{from}to{to}"), HANDOFF_RING_SLOTS)?;
                        *slot = Some(p);
                        consumers[to].push(c);
                    }
                }
            }
        }

        let running = Arc::new(AtomicBool::new(true));
        let handoffs_done = Arc::new(HandoffsDone::new(workers));
        let draining = Arc::new(AtomicBool::new(false));
        let board = Arc::new(PolicyBoard::new(policy, workers));
        let inspector = Arc::new(
            SignatureInspector::new(&config.proxy.signatures).context("config: proxy.signature")?,
        );
        let (audit_tx, audit_rx) = bounded(1024);
        let idle_sleep = (config.workers.idle_sleep_us > 0)
            .then(|| Duration::from_micros(config.workers.idle_sleep_us));
        let mut queue_sets: Vec<_> = in_rx
            .into_iter()
            .zip(in_tx)
            .zip(out_rx.into_iter().zip(out_tx))
            .collect();
        let mut producers = producers.into_iter();
        let mut consumers = consumers.into_iter();

        inside.start()?;
        outside.start()?;

        let mut running_workers = Vec::with_capacity(workers);
        for (id, ((in_rxq, in_txq), (out_rxq, out_txq))) in queue_sets.drain(..).enumerate() {
            let core = config.workers.cores[id];
            let report = Arc::new(Mutex::new(WorkerReport::default()));
            let (command_tx, command_rx) = bounded(COMMAND_QUEUE);
            let worker = Worker {
                id,
                core: Some(core),
                shard: Shard::new(
                    Pipeline::new(
                        PipelineConfig {
                            flows: flow_table_config(config),
                            malformed: config.malformed.action,
                            on_table_full: config.flows.on_full,
                            audit_new_flows: workers > 1,
                            on_midstream: config.proxy.on_midstream,
                            reassembly,
                            rss: rss.clone().map(|steering| RssQueue {
                                steering,
                                queue: id as u16,
                            }),
                        },
                        board.current(),
                    ),
                    ProxyTable::new(
                        proxy_settings(config),
                        inspector.clone(),
                        cookie_secret().context("drawing the SYN-cookie secret")?,
                    ),
                ),
                rx: [in_rxq, out_rxq],
                tx: [in_txq, out_txq],
                port_ids: [inside.id(), outside.id()],
                steer: software.then_some(Steer {
                    worker: id,
                    workers,
                }),
                use_nic_hash: steering == Steering::SymmetricRss,
                handoff_out: producers.next().unwrap_or_default(),
                handoff_in: consumers.next().unwrap_or_default(),
                handoffs_done: handoffs_done.clone(),
                tx_retries: config.ports.tx_retries,
                idle_sleep,
                running: running.clone(),
                draining: draining.clone(),
                report: report.clone(),
                audit: (workers > 1).then(|| audit_tx.clone()),
                policy: board.clone(),
                commands: command_rx,
                pool: pool.clone(),
                tx_multi_seg: inside.tx_multi_seg() && outside.tx_multi_seg(),
                fragments: FragmentTable::new(config.reassembly.table_config()),
                large_pool: large.clone(),
            };
            // Worker i's lcore is i + 1 (`Config::eal_args`); the EAL pinned it to the core.
            let lcore = id as u32 + 1;
            let thread = if dpdk::lcore_available(lcore) {
                WorkerTask::Lcore(
                    dpdk::launch_on_lcore(lcore, move || worker.run())
                        .with_context(|| format!("starting worker {id} on lcore {lcore}"))?,
                )
            } else {
                WorkerTask::Thread(
                    std::thread::Builder::new()
                        .name(format!("tollgate-w{id}"))
                        .spawn(move || {
                            // Pin to the configured core whatever the parent thread's mask:
                            // DPDK's EAL init narrows the main thread to its main lcore, and
                            // a worker spawned from it would otherwise inherit that one core.
                            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                                tracing::warn!(
                                    "worker {id}: could not pin to core {core}; running unpinned"
                                );
                            }
                            if let Err(e) = dpdk::register_thread() {
                                tracing::warn!("worker {id}: {e}; running without a mempool cache");
                            }
                            worker.run()
                        })
                        .context("spawning a worker thread")?,
                )
            };
            running_workers.push(RunningWorker {
                id,
                core: Some(core),
                thread: Some(thread),
                report,
                commands: command_tx,
            });
        }

        let retention = config.flows.tcp_established_timeout_secs * 1000;
        Ok(Dataplane {
            ports: [inside, outside],
            workers: running_workers,
            running,
            draining,
            audit_rx,
            audit: SplitAudit::new(config.flows.capacity.min(1 << 20), retention),
            steering,
            pool,
            started: Instant::now(),
            board,
            signature_names: inspector.names().to_vec(),
            ports_seen: Mutex::default(),
        })
    }

    /// Where new policies are published to the workers.
    pub fn board(&self) -> &Arc<PolicyBoard> {
        &self.board
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sends a command to every worker and collects the replies, waiting at
    /// most `timeout` in all. A worker that does not answer in time (or whose
    /// queue is full) is left out: the result says how many answered.
    pub fn ask_workers<T>(
        &self,
        timeout: Duration,
        command: impl Fn(Sender<T>) -> WorkerCommand,
    ) -> Vec<Option<T>> {
        let deadline = Instant::now() + timeout;
        let pending: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = bounded(1);
                w.commands.try_send(command(tx)).ok().map(|_| rx)
            })
            .collect();
        pending
            .into_iter()
            .map(|rx| rx.and_then(|rx| rx.recv_deadline(deadline).ok()))
            .collect()
    }

    /// Has every worker publish its counters, so that what is read next includes everything
    /// each did before it took the request; the request waits between bursts like any other
    /// command. Returns how many workers published within `timeout`: the others are read as
    /// they last published, by themselves between bursts.
    pub fn publish_now(&self, timeout: Duration) -> usize {
        self.ask_workers(timeout, |reply| WorkerCommand::Publish { reply })
            .into_iter()
            .filter(|published| *published == Some(true))
            .count()
    }

    /// Hit counters per rule id, summed over workers as last published.
    pub fn rule_hits(&self) -> Vec<RuleHits> {
        let mut total: Vec<RuleHits> = Vec::new();
        for w in &self.workers {
            let report = w.report.lock().unwrap_or_else(|e| e.into_inner());
            if total.len() < report.hits.len() {
                total.resize(report.hits.len(), RuleHits::default());
            }
            for (t, h) in total.iter_mut().zip(&report.hits) {
                t.flows += h.flows;
                t.packets += h.packets;
                t.bytes += h.bytes;
            }
        }
        total
    }

    /// Per rule id with connection limits: the workers' refusals as last published, summed,
    /// with the gauges read from the rule's counts now.
    pub fn limit_counters(&self) -> std::collections::HashMap<u32, LimitCounters> {
        let mut total: std::collections::HashMap<u32, LimitCounters> = self
            .board
            .current()
            .all_limits()
            .map(|l| (l.rule(), l.gauges()))
            .collect();
        for w in &self.workers {
            let report = w.report.lock().unwrap_or_else(|e| e.into_inner());
            for (rule, hits) in &report.limit_hits {
                if let Some(t) = total.get_mut(rule) {
                    t.add_hits(hits);
                }
            }
        }
        total
    }

    pub fn steering(&self) -> Steering {
        self.steering
    }

    pub fn port(&self, side: PortSide) -> &Port {
        &self.ports[side.index()]
    }

    /// Checks the flows workers reported since the last call.
    pub fn poll_audit(&mut self) {
        let now = self.started.elapsed().as_millis() as u64;
        while let Ok((worker, keys)) = self.audit_rx.try_recv() {
            self.audit.record(worker, &keys, now);
        }
        self.audit.prune(now);
    }

    fn snapshot_from(&self, reports: &[(usize, Option<usize>, WorkerReport)]) -> StatsSnapshot {
        let mut seen = self.ports_seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut port = |side: PortSide| {
            let i = side.index();
            // A failed read reads as zeros, which the latch leaves out.
            let reading = self.ports[i]
                .stats()
                .map(|s| port_counters(&s))
                .unwrap_or_default();
            latch_port_counters(&mut seen[i], &reading);
            (side.name(), seen[i])
        };
        snapshot(SnapshotInputs {
            uptime_secs: self.started.elapsed().as_secs(),
            steering: self.steering.to_string(),
            ports: [port(PortSide::Inside), port(PortSide::Outside)],
            workers: reports,
            split_flows: self.audit.split_flows,
            split_unchecked: self.audit.unchecked,
            mempool: MempoolStats {
                size: self.pool.size() as u64,
                in_use: self.pool.in_use() as u64,
                available: self.pool.available() as u64,
            },
            signature_names: &self.signature_names,
        })
    }

    /// The counters as the workers last published them, after checking the
    /// flows they reported.
    pub fn snapshot(&mut self) -> StatsSnapshot {
        self.poll_audit();
        self.snapshot_now()
    }

    /// The counters as the workers last published them.
    pub fn snapshot_now(&self) -> StatsSnapshot {
        let reports: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                (
                    w.id,
                    w.core,
                    w.report.lock().map(|r| r.clone()).unwrap_or_default(),
                )
            })
            .collect();
        self.snapshot_from(&reports)
    }

    /// The exception actions workers took on single flows since the last call, per worker.
    pub fn take_notices(&self) -> Vec<(usize, Notices)> {
        self.workers
            .iter()
            .filter_map(|w| {
                let mut report = w.report.lock().ok()?;
                (!report.notices.is_empty()).then(|| (w.id, std::mem::take(&mut report.notices)))
            })
            .collect()
    }

    /// Starts draining before a stop: new flows pass through unproxied (counted as
    /// `drain_bypassed`), proxied ones go on until they end, bypassed ones keep forwarding.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Stops the workers (each flushes what it holds), then the ports, and
    /// returns the final counters.
    pub fn stop(&mut self) -> anyhow::Result<StatsSnapshot> {
        self.running.store(false, Ordering::Relaxed);
        let mut reports = Vec::new();
        let mut failed = Vec::new();
        for w in &mut self.workers {
            match w.thread.take().map(WorkerTask::join) {
                Some(Ok(mut report)) => {
                    // Left where take_notices finds them: the last lines of the log.
                    if let Ok(mut published) = w.report.lock() {
                        report.notices.move_into(&mut published.notices);
                    }
                    reports.push((w.id, w.core, report))
                }
                Some(Err(_)) => failed.push(w.id),
                // Stopped before: its last report is its final one.
                None => reports.push((
                    w.id,
                    w.core,
                    w.report.lock().map(|r| r.clone()).unwrap_or_default(),
                )),
            }
        }
        self.poll_audit();
        let snap = self.snapshot_from(&reports);
        for port in &mut self.ports {
            port.stop()?;
        }
        if !failed.is_empty() {
            bail!("worker(s) {failed:?} stopped abnormally");
        }
        Ok(snap)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // A data plane dropped without stop(): make sure no worker polls a
        // port that is about to close.
        self.running.store(false, Ordering::Relaxed);
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The port's RSS for TCP over each IP version, from its `RTE_ETH_RSS_*` flow types: with
/// ports where it hashes non-fragmented TCP, on addresses where it hashes only IP.
fn rss_inputs(flow_types: u64) -> (Option<HashInput>, Option<HashInput>) {
    use dpdk::sys::consts::{
        ETH_RSS_IPV4, ETH_RSS_IPV6, ETH_RSS_NONFRAG_IPV4_TCP, ETH_RSS_NONFRAG_IPV6_TCP,
    };
    let input = |tcp: u64, ip: u64| {
        if flow_types & tcp != 0 {
            Some(HashInput::AddressesAndPorts)
        } else if flow_types & ip != 0 {
            Some(HashInput::Addresses)
        } else {
            None
        }
    };
    (
        input(ETH_RSS_NONFRAG_IPV4_TCP, ETH_RSS_IPV4),
        input(ETH_RSS_NONFRAG_IPV6_TCP, ETH_RSS_IPV6),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpdk::sys::consts::{ETH_RSS_IP, ETH_RSS_IPV6_EX, ETH_RSS_TCP, ETH_RSS_UDP};

    fn setup(key_len: usize, flow_types: u64, reta: Option<Vec<u16>>) -> RssSetup {
        RssSetup {
            key: dpdk::SYMMETRIC_RSS_KEY
                .iter()
                .copied()
                .cycle()
                .take(key_len)
                .collect(),
            flow_types,
            reta,
        }
    }

    #[test]
    fn ports_that_hash_tcp_alike_and_show_their_table_let_software_steer_fragments() {
        let reta = || Some((0..128).map(|i| i % 2).collect::<Vec<u16>>());
        let all = ETH_RSS_IP | ETH_RSS_TCP | ETH_RSS_UDP;
        // Two NIC models: a 40- and a 52-byte key, one without IPv6 extension headers.
        let a = setup(40, all, reta());
        let b = setup(52, all & !ETH_RSS_IPV6_EX, reta());
        let steering = Dataplane::rss_steering([Some(&a), Some(&b)]).expect("alike for TCP");
        assert_eq!(steering.queue(3), 1);

        let other_table = setup(40, all, Some((0..128).map(|i| (i + 1) % 2).collect()));
        let no_table = setup(40, all, None);
        let no_tcp = setup(40, ETH_RSS_IP, reta());
        for (x, y) in [(&a, &other_table), (&a, &no_table), (&a, &no_tcp)] {
            assert!(Dataplane::rss_steering([Some(x), Some(y)]).is_none());
        }
        assert!(Dataplane::rss_steering([Some(&a), None]).is_none());
    }

    #[test]
    fn flow_types_say_what_is_hashed() {
        use dpdk::sys::consts::*;
        assert_eq!(
            rss_inputs(ETH_RSS_IP | ETH_RSS_TCP),
            (
                Some(HashInput::AddressesAndPorts),
                Some(HashInput::AddressesAndPorts)
            )
        );
        assert_eq!(rss_inputs(ETH_RSS_IPV4), (Some(HashInput::Addresses), None));
    }
}
