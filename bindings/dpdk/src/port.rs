use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::Arc;

use dpdk_sys::consts;

use crate::burst::Burst;
use crate::error::{DpdkError, Result};
use crate::mempool::Mempool;
use crate::ring::MbufRing;

pub use hw::SYMMETRIC_RSS_KEY;

/// What a port's RSS computes and where it sends each hash, as programmed: enough for software
/// to tell which queue the NIC would pick for a packet it never saw whole (a datagram
/// reassembled from fragments, which the NIC hashed on their addresses alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssSetup {
    /// The Toeplitz key given to the port.
    pub key: Vec<u8>,
    /// The flow types hashed (`RTE_ETH_RSS_*` bits, [`consts`]).
    pub flow_types: u64,
    /// The redirection table: entry `hash % len` names the queue. None when the driver would
    /// neither take ours nor show its own.
    pub reta: Option<Vec<u16>>,
}

/// How frames are spread over a port's RX queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The NIC hashes with a symmetric key: both directions of a flow reach
    /// the same queue, and the hash comes with the frame.
    SymmetricRss,
    /// The device cannot (or was not asked to) hash symmetrically; the data
    /// plane must steer in software.
    Software,
}

impl std::fmt::Display for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Steering::SymmetricRss => "symmetric-rss",
            Steering::Software => "software",
        })
    }
}

#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Ask for symmetric RSS when the device supports it and there is more
    /// than one RX queue.
    pub rss: bool,
    pub promiscuous: bool,
}

/// What a device says it can do.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_flow_types: u64,
    pub reta_size: u16,
    pub hash_key_size: u8,
    pub rx_offloads: u64,
    pub tx_offloads: u64,
    pub socket: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The device counters an operator reads first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// A configured Ethernet port. Its queues are handed out once, each to the
/// one thread that will poll it. Dropping the port stops and closes it, so
/// every queue user must be finished by then.
pub struct Port {
    id: u16,
    name: String,
    steering: Steering,
    rss: Option<RssSetup>,
    tx_multi_seg: bool,
    rx_queues: u16,
    tx_queues: u16,
    queues_taken: bool,
    started: bool,
}

fn check(op: impl FnOnce() -> String, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(DpdkError::from_code(op(), ret))
    } else {
        Ok(())
    }
}

impl Port {
    /// The port id DPDK gave the device named `name` (a PCI address such as
    /// `0000:01:00.0`, or a virtual device name such as `net_af_packet0`).
    pub fn lookup(name: &str) -> Result<u16> {
        let cname = CString::new(name).map_err(|_| {
            DpdkError::other("rte_eth_dev_get_port_by_name", "device name contains NUL")
        })?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        check(
            || {
                format!("no DPDK port named {name:?} (is the device bound to a DPDK driver, or the vdev spelled right?)")
            },
            ret,
        )?;
        Ok(id)
    }

    /// The name DPDK knows port `id` by.
    pub fn name_of(id: u16) -> Result<String> {
        let mut buf = [0 as std::ffi::c_char; 64];
        // SAFETY: the buffer is RTE_ETH_NAME_MAX_LEN (64) bytes as the API requires.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
        check(|| format!("rte_eth_dev_get_name_by_port({id})"), ret)?;
        // SAFETY: DPDK wrote a NUL-terminated name into the buffer.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// Ports DPDK has probed.
    pub fn count() -> u16 {
        // SAFETY: no arguments.
        unsafe { dpdk_sys::rte_eth_dev_count_avail() }
    }

    pub fn info(id: u16) -> Result<DeviceInfo> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer of the right type.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        check(|| format!("rte_eth_dev_info_get(port {id})"), ret)?;
        let driver = if info.driver_name.is_null() {
            String::from("unknown")
        } else {
            // SAFETY: the driver name is a static NUL-terminated string.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DeviceInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_flow_types: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            hash_key_size: info.hash_key_size,
            rx_offloads: info.rx_offload_capa,
            tx_offloads: info.tx_offload_capa,
            // SAFETY: plain query.
            socket: unsafe { dpdk_sys::rte_eth_dev_socket_id(id) },
        })
    }

    /// Configures queues (each RX queue filled from `pool`), symmetric RSS
    /// where the device offers it, and promiscuous mode; the port is not yet
    /// started.
    pub fn configure(id: u16, name: &str, cfg: &PortConfig, pool: &Mempool) -> Result<Port> {
        let info = Self::info(id)?;
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 {
            return Err(DpdkError::other(
                format!("configure port {name}"),
                "at least one RX and one TX queue are needed",
            ));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::other(
                format!("configure port {name}"),
                format!(
                    "{} workers need {} RX and {} TX queues, but driver {} offers {} RX and {} TX (for net_af_packet set qpairs={})",
                    cfg.rx_queues, cfg.rx_queues, cfg.tx_queues, info.driver, info.max_rx_queues, info.max_tx_queues, cfg.rx_queues
                ),
            ));
        }

        let mut conf = dpdk_sys::rte_eth_conf::default();
        let wanted_hf = consts::ETH_RSS_IP | consts::ETH_RSS_TCP | consts::ETH_RSS_UDP;
        let rss_hf = info.rss_flow_types & wanted_hf;
        // The key must outlive rte_eth_dev_configure only; the driver copies it.
        let key_len = if info.hash_key_size == 0 {
            40
        } else {
            info.hash_key_size as usize
        };
        let mut key: Vec<u8> = SYMMETRIC_RSS_KEY
            .iter()
            .copied()
            .cycle()
            .take(key_len)
            .collect();
        let steering = if cfg.rss && cfg.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len as u8;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            if info.rx_offloads & consts::ETH_RX_OFFLOAD_RSS_HASH != 0 {
                conf.rxmode.offloads |= consts::ETH_RX_OFFLOAD_RSS_HASH;
            }
            Steering::SymmetricRss
        } else {
            Steering::Software
        };

        // Frames that carry payload zero-copy are chains (header, then the
        // payload's segment); without this offload a driver may send only
        // the first segment. Copying is the fallback where it is missing.
        let tx_multi_seg = info.tx_offloads & consts::ETH_TX_OFFLOAD_MULTI_SEGS != 0;
        if tx_multi_seg {
            conf.txmode.offloads |= consts::ETH_TX_OFFLOAD_MULTI_SEGS;
        }

        // SAFETY: conf is a valid configuration; the key lives across the call.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(|| format!("rte_eth_dev_configure({name})"), ret)?;

        let mut rxd = cfg.rx_descriptors;
        let mut txd = cfg.tx_descriptors;
        // SAFETY: valid out-pointers; the driver clamps to what it supports.
        let ret = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        check(|| format!("rte_eth_dev_adjust_nb_rx_tx_desc({name})"), ret)?;

        let socket = if info.socket < 0 {
            0
        } else {
            info.socket as u32
        };
        for q in 0..cfg.rx_queues {
            // SAFETY: NULL rxconf means the driver's defaults; the pool outlives the port.
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    rxd,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(
                || format!("rte_eth_rx_queue_setup({name}, queue {q}, {rxd} descriptors)"),
                ret,
            )?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: NULL txconf means the driver's defaults.
            let ret =
                unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, q, txd, socket, std::ptr::null()) };
            check(
                || format!("rte_eth_tx_queue_setup({name}, queue {q}, {txd} descriptors)"),
                ret,
            )?;
        }

        let rss = (steering == Steering::SymmetricRss).then(|| RssSetup {
            reta: Self::program_reta(id, info.reta_size, cfg.rx_queues),
            key,
            flow_types: rss_hf,
        });
        let port = Port {
            id,
            name: name.to_owned(),
            steering,
            rss,
            tx_multi_seg,
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            queues_taken: false,
            started: false,
        };
        if cfg.promiscuous {
            // SAFETY: configured port. Some virtual devices have no
            // promiscuous mode (-ENOTSUP): they deliver every frame anyway.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
            if ret < 0 && ret != -(libc::ENOTSUP) {
                return Err(DpdkError::from_code(
                    format!("rte_eth_promiscuous_enable({name})"),
                    ret,
                ));
            }
        }
        Ok(port)
    }

    /// Programs the redirection table as entry `i` to queue `i % queues`, so that software knows
    /// it rather than guess at the driver's default, and reads back what the driver holds
    /// (where it refuses ours, its own). None when it shows none: what it was given, if it took
    /// that, or else nothing.
    fn program_reta(id: u16, size: u16, queues: u16) -> Option<Vec<u16>> {
        const GROUP: usize = dpdk_sys::RTE_ETH_RETA_GROUP_SIZE as usize;
        let size = usize::from(size);
        if size == 0 || queues == 0 {
            return None;
        }
        let wanted: Vec<u16> = (0..size)
            .map(|i| (i % usize::from(queues)) as u16)
            .collect();
        let mut groups = vec![dpdk_sys::rte_eth_rss_reta_entry64::default(); size.div_ceil(GROUP)];
        for (i, &queue) in wanted.iter().enumerate() {
            let group = &mut groups[i / GROUP];
            group.mask |= 1 << (i % GROUP);
            group.reta[i % GROUP] = queue;
        }
        // SAFETY: `groups` holds `size` entries, in groups of RTE_ETH_RETA_GROUP_SIZE.
        let updated =
            unsafe { dpdk_sys::rte_eth_dev_rss_reta_update(id, groups.as_mut_ptr(), size as u16) }
                == 0;
        for group in &mut groups {
            group.reta = [u16::MAX; GROUP];
        }
        // SAFETY: as above; the masks ask for every entry.
        let queried =
            unsafe { dpdk_sys::rte_eth_dev_rss_reta_query(id, groups.as_mut_ptr(), size as u16) }
                == 0;
        if queried {
            Some(
                (0..size)
                    .map(|i| groups[i / GROUP].reta[i % GROUP])
                    .collect(),
            )
        } else {
            updated.then_some(wanted)
        }
    }

    /// Hands out every queue, once: queue `i` of each kind goes to worker `i`.
    pub fn take_queues(&mut self) -> Result<(Vec<RxQueue>, Vec<TxQueue>)> {
        if self.queues_taken {
            return Err(DpdkError::other(
                format!("queues of {}", self.name),
                "already handed out",
            ));
        }
        self.queues_taken = true;
        let rx = (0..self.rx_queues)
            .map(|queue| RxQueue {
                port: self.id,
                queue,
                _not_sync: PhantomData,
            })
            .collect();
        let tx = (0..self.tx_queues)
            .map(|queue| TxQueue {
                port: self.id,
                queue,
                _not_sync: PhantomData,
            })
            .collect();
        Ok((rx, tx))
    }

    pub fn start(&mut self) -> Result<()> {
        // SAFETY: configured port.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        check(|| format!("rte_eth_dev_start({})", self.name), ret)?;
        self.started = true;
        Ok(())
    }

    /// Stops the port. Every queue user must have stopped polling.
    pub fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        // SAFETY: started port, no pollers (caller's contract).
        let ret = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        check(|| format!("rte_eth_dev_stop({})", self.name), ret)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// What the port's symmetric RSS computes, under [`Steering::SymmetricRss`].
    pub fn rss(&self) -> Option<&RssSetup> {
        self.rss.as_ref()
    }

    /// Whether the port sends multi-segment frames (those built with
    /// [`Mbuf::chain_slice`](crate::Mbuf::chain_slice)); when false, build
    /// frames with [`Mbuf::append_slice_copy`](crate::Mbuf::append_slice_copy).
    pub fn tx_multi_seg(&self) -> bool {
        self.tx_multi_seg
    }

    pub fn link(&self) -> Link {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid out-pointer.
        unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        }
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        check(|| format!("rte_eth_stats_get({})", self.name), ret)?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer.
        unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        addr.addr_bytes
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.stop();
        // SAFETY: stopped port; closing releases the driver's resources.
        unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
    }
}

/// One RX queue, polled by exactly one thread (`&mut self`).
pub struct RxQueue {
    port: u16,
    queue: u16,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

/// One TX queue, used by exactly one thread (`&mut self`).
pub struct TxQueue {
    port: u16,
    queue: u16,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl RxQueue {
    /// Receives into the burst's spare room; returns how many arrived.
    #[inline(always)]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let room = burst.spare() as u16;
        // SAFETY: the driver writes at most `room` owned mbuf pointers into
        // the spare slots, which `commit` then takes over.
        let n =
            unsafe { dpdk_sys::tg_eth_rx_burst(self.port, self.queue, burst.spare_ptr(), room) };
        burst.commit(n as usize);
        n as usize
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }
}

impl TxQueue {
    /// Offers the whole burst to the driver. The driver owns what it took
    /// (the returned prefix); the rest stays in the burst, in order.
    #[inline(always)]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len() as u16;
        // SAFETY: the first `n` slots are owned mbufs; the driver takes a
        // prefix of them, which `consumed` forgets.
        let sent = unsafe { dpdk_sys::tg_eth_tx_burst(self.port, self.queue, burst.raw_ptr(), n) };
        burst.consumed(sent as usize);
        sent as usize
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }
}

// SAFETY: a queue may be polled from any one thread; `&mut self` on the burst
// calls keeps it to one at a time.
unsafe impl Send for RxQueue {}
// SAFETY: as above.
unsafe impl Send for TxQueue {}

/// A port made from rings by the ring PMD (`rte_eth_from_rings`): frames sent
/// on it are enqueued on its TX rings, frames received come from its RX rings.
/// Used by tests and benchmarks to build topologies without hardware. DPDK
/// names the port `net_ring_<name>`; [`RingPort::name`] has the full name.
pub struct RingPort {
    pub id: u16,
    pub name: String,
    _rings: Vec<Arc<MbufRing>>,
}

impl RingPort {
    pub fn new(name: &str, rx: &[Arc<MbufRing>], tx: &[Arc<MbufRing>]) -> Result<RingPort> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::other("rte_eth_from_rings", "name contains NUL"))?;
        let rx_ptrs: Vec<_> = rx.iter().map(|r| r.as_ptr()).collect();
        let tx_ptrs: Vec<_> = tx.iter().map(|r| r.as_ptr()).collect();
        // SAFETY: the ring pointers stay valid: this value keeps the rings alive.
        let ret = unsafe {
            dpdk_sys::rte_eth_from_rings(
                cname.as_ptr(),
                rx_ptrs.as_ptr(),
                rx_ptrs.len() as u32,
                tx_ptrs.as_ptr(),
                tx_ptrs.len() as u32,
                0,
            )
        };
        if ret < 0 {
            return Err(DpdkError::from_errno(format!("rte_eth_from_rings({name})")));
        }
        let id = ret as u16;
        Ok(RingPort {
            id,
            // The ring PMD prefixes the name it is given (net_ring_<name>).
            name: Port::name_of(id)?,
            _rings: rx.iter().chain(tx.iter()).cloned().collect(),
        })
    }
}
