//! A proxied flow end to end without DPDK: two real TCP endpoints (the engine's own, playing the
//! client and the server) exchange frames through a worker's shard (the pipeline and the proxy
//! table, as the worker drives them), over a lossy virtual wire with virtual time. What the
//! worker adds on top is mbufs and queues.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::flow::view::{FlowFilter, FlowsClearReply, KeptReason};
use crate::policy::{Action, PolicyDefaults, PolicySet};

use super::frame::{FlowAddressing, Inbound, MAX_HEADERS_LEN};
use super::table::{ClearAction, FrameSink, MidstreamAction, ProxySettings, ProxyTable};
use crate::counters::DropReason;
use crate::detect::{samples, IpsecFraming};
use crate::flow::{Direction, FlowEntry, FlowMode, FlowTableConfig, HandoverCause, TcpPhase};
use crate::ip_reassembly::{tcp_fragment, FragmentTable, Outcome, ReassemblyConfig};
use crate::pipeline::FrameAction;
use crate::pipeline::{Pipeline, PipelineConfig, PortSide};
use crate::policy::CompiledPolicy;
use crate::shard::{Dispatch, Shard};
use crate::synth::{self, Addressing, TcpHeader};
use crate::tcp::endpoint::{reset_for, Endpoint, EndpointConfig, State, SynOptions, Transmit};
use crate::tcp::inspect::SignatureInspector;
use crate::tcp::payload::{Payload, TestBytes};
use crate::tcp::proxy::Leg;
use crate::tcp::segment::{Ecn, TcpFlags};
use crate::tcp::seq::SeqNumber;
use crate::test_rng::TestRng;
use crate::wire::tcp::flags;

const CLIENT: &str = "198.18.0.1:40000";
const SERVER: &str = "198.18.0.2:8080";

#[derive(Default)]
struct Frames(Vec<(PortSide, Vec<u8>)>);

impl FrameSink<TestBytes> for Frames {
    fn send(&mut self, side: PortSide, headers: &[u8], payload: Option<&TestBytes>) -> bool {
        let mut frame = headers.to_vec();
        if let Some(p) = payload {
            frame.extend_from_slice(p.bytes());
        }
        self.0.push((side, frame));
        true
    }
}

/// Which end of the wire a frame is dropped on its way to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lossy {
    Nowhere,
    /// Frames to and from the client (the inside port).
    ClientLeg,
    ServerLeg,
}

struct Lab {
    /// Tollgate: one worker's shard.
    shard: Shard<TestBytes>,
    /// Frames the endpoints' segments as the real hosts would (addresses and MACs).
    wire: FlowAddressing,
    client: Endpoint<TestBytes>,
    server: Option<Endpoint<TestBytes>>,
    server_listening: bool,
    now: u64,
    /// Frames on their way into tollgate (from each host) and out of it (to each host).
    into_inside: VecDeque<Vec<u8>>,
    into_outside: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    to_server: VecDeque<Vec<u8>>,
    loss: Lossy,
    loss_percent: u64,
    rng: TestRng,
    client_got: Vec<u8>,
    server_got: Vec<u8>,
    /// What each host saw arrive: (flags, source address) of every segment.
    server_saw: Vec<(TcpFlags, SocketAddr)>,
    client_saw: Vec<TcpFlags>,
    /// Data segments the client sent, as (sequence number, length), and how many it sent again.
    client_data_sent: std::collections::HashSet<(u32, usize)>,
    client_data_resent: usize,
    forwarded: usize,
    /// Frames dropped as the first of a flow that was not a SYN (`on_midstream = drop`).
    not_syn: usize,
    /// The server application reads only every this many milliseconds (1: always).
    server_reads_every_ms: u64,
    /// What the server host offers in its SYN-ACK.
    server_offer: SynOptions,
    /// The client's segments with data cross a narrower path: IP fragments of at most this
    /// many data bytes.
    fragment_client: Option<usize>,
    fragment_id: u32,
    fragments_sent: u64,
    /// The worker's reassembly, for the fragments.
    fragments: FragmentTable<Vec<u8>>,
}

fn policy(default_tcp: Action) -> Arc<CompiledPolicy> {
    let defaults = PolicyDefaults {
        tcp: default_tcp,
        udp: Action::Bypass,
        other: Action::Bypass,
    };
    Arc::new(CompiledPolicy::compile(&PolicySet::default(), defaults, 1))
}

fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        delayed_ack_ms: 0,
        ..EndpointConfig::default()
    }
}

impl Lab {
    fn new(settings: ProxySettings, default_tcp: Action) -> Lab {
        Lab::with_inspector(settings, default_tcp, SignatureInspector::new(&[]).unwrap())
    }

    fn with_inspector(
        settings: ProxySettings,
        default_tcp: Action,
        inspector: SignatureInspector,
    ) -> Lab {
        let hosts = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        Lab::between(
            settings,
            default_tcp,
            inspector,
            hosts,
            SynOptions::default(),
        )
    }

    /// A lab whose client and server have these addresses and offer these options.
    fn between(
        settings: ProxySettings,
        default_tcp: Action,
        inspector: SignatureInspector,
        (client, server): (SocketAddr, SocketAddr),
        offer: SynOptions,
    ) -> Lab {
        let template = synth::tcp(
            &Addressing::new(client, server),
            TcpHeader {
                flags: flags::SYN,
                ..Default::default()
            },
            b"",
        );
        let wire = FlowAddressing::from_client(&Inbound::read(&template).unwrap()).unwrap();
        let pipeline = Pipeline::new(
            PipelineConfig {
                flows: FlowTableConfig {
                    capacity: 1024,
                    ..FlowTableConfig::default()
                },
                malformed: FrameAction::Drop,
                on_table_full: FrameAction::Forward,
                audit_new_flows: false,
                reassembly: true,
                rss: None,
                on_midstream: settings.on_midstream,
            },
            policy(default_tcp),
        );
        let inspector = Arc::new(inspector);
        Lab {
            shard: Shard::new(pipeline, ProxyTable::new(settings, inspector, [7; 16])),
            wire,
            client: Endpoint::connect(
                endpoint_config(),
                client.port(),
                server.port(),
                SeqNumber(0xfffff000),
                offer,
                0,
            ),
            server: None,
            server_listening: true,
            now: 0,
            into_inside: VecDeque::new(),
            into_outside: VecDeque::new(),
            to_client: VecDeque::new(),
            to_server: VecDeque::new(),
            loss: Lossy::Nowhere,
            loss_percent: 0,
            rng: TestRng::new(42),
            client_got: Vec::new(),
            server_got: Vec::new(),
            server_saw: Vec::new(),
            client_saw: Vec::new(),
            client_data_sent: Default::default(),
            client_data_resent: 0,
            forwarded: 0,
            not_syn: 0,
            server_reads_every_ms: 1,
            server_offer: offer,
            fragment_client: None,
            fragment_id: 0,
            fragments_sent: 0,
            fragments: FragmentTable::new(ReassemblyConfig::default()),
        }
    }

    fn frame(&mut self, toward: Leg, transmit: &Transmit<TestBytes>) -> Vec<u8> {
        let payload = transmit.payload.as_ref().map_or(&[][..], |p| p.bytes());
        let mut headers = [0u8; MAX_HEADERS_LEN];
        let len = self
            .wire
            .write_headers(toward, &transmit.header, payload, &mut headers);
        let mut frame = headers[..len].to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    fn lost(&mut self, leg: Lossy) -> bool {
        self.loss == leg && self.rng.chance(self.loss_percent)
    }

    /// One frame through tollgate: the worker's shard, as the worker drives it. Every frame
    /// of these labs is one tollgate can take: none is dropped but a first segment that is not
    /// a SYN (counted in `not_syn`), and every handed-over segment is translated.
    fn through_tollgate(&mut self, frame: Vec<u8>, ingress: PortSide) {
        let mut out = Frames::default();
        let drops_before = self.shard.pipeline().counters.drops;
        let untranslated_before = self.shard.proxies_mut().counters().handover_untranslated;
        match self.shard.handle(frame, ingress, self.now, &mut out) {
            Dispatch::Forward(frame, egress) => {
                self.forwarded += 1;
                out.0.push((egress, frame));
            }
            Dispatch::Done => {}
            // As the worker does it: the whole datagram goes where its flow says.
            Dispatch::Reassemble(frame) => {
                let info = tcp_fragment(&frame).expect("a TCP fragment");
                match self.fragments.insert(info, frame, self.now) {
                    Outcome::Held => {}
                    Outcome::Complete(whole) => {
                        let mut frame = Vec::new();
                        whole.write_frame(&mut frame);
                        self.through_tollgate(frame, ingress);
                    }
                    Outcome::Dropped(reason, _) => panic!("fragments dropped: {reason:?}"),
                }
            }
            Dispatch::HandOff(_, worker) => panic!("handed off to worker {worker}"),
        }
        let drops = self.shard.pipeline().counters.drops;
        let dropped = |reason: DropReason| drops[reason.index()] - drops_before[reason.index()];
        let not_syn = dropped(DropReason::TcpNotSyn);
        let all: u64 = drops.iter().sum::<u64>() - drops_before.iter().sum::<u64>();
        assert_eq!(dropped(DropReason::ProxyUnusable), 0, "an unusable frame");
        assert_eq!(all, not_syn, "a frame dropped: {drops:?}");
        self.not_syn += not_syn as usize;
        assert_eq!(
            self.shard.proxies_mut().counters().handover_untranslated,
            untranslated_before,
            "a handed-over segment passed untranslated"
        );
        self.route(out);
    }

    fn route(&mut self, out: Frames) {
        for (side, frame) in out.0 {
            match side {
                PortSide::Inside => self.to_client.push_back(frame),
                PortSide::Outside => self.to_server.push_back(frame),
            }
        }
    }

    /// One millisecond of the world.
    fn step(&mut self) {
        // The hosts send.
        while let Some(t) = self.client.poll_transmit(self.now) {
            // One-byte segments are zero-window probes, which repeat by design.
            if let Some(p) = t.payload.as_ref().filter(|p| p.len() > 1) {
                if !self.client_data_sent.insert((t.header.seq.0, p.len())) {
                    self.client_data_resent += 1;
                }
            }
            let frame = self.frame(Leg::Server, &t);
            let has_data = t.payload.as_ref().is_some_and(|p| !p.is_empty());
            let frames = match self.fragment_client {
                Some(size) if has_data => {
                    self.fragment_id += 1;
                    let fragments = synth::fragments(&frame, size, self.fragment_id);
                    self.fragments_sent += fragments.len() as u64;
                    fragments
                }
                _ => vec![frame],
            };
            for frame in frames {
                if !self.lost(Lossy::ClientLeg) {
                    self.into_inside.push_back(frame);
                }
            }
        }
        if let Some(server) = self.server.as_mut() {
            let mut sent = Vec::new();
            while let Some(t) = server.poll_transmit(self.now) {
                sent.push(t);
            }
            for t in sent {
                let frame = self.frame(Leg::Client, &t);
                if !self.lost(Lossy::ServerLeg) {
                    self.into_outside.push_back(frame);
                }
            }
        }
        // tollgate.
        while let Some(frame) = self.into_inside.pop_front() {
            self.through_tollgate(frame, PortSide::Inside);
        }
        while let Some(frame) = self.into_outside.pop_front() {
            self.through_tollgate(frame, PortSide::Outside);
        }
        let mut out = Frames::default();
        self.shard.on_timers(self.now, &mut out);
        self.route(out);
        // The hosts receive.
        while let Some(frame) = self.to_client.pop_front() {
            if self.lost(Lossy::ClientLeg) {
                continue;
            }
            let seg = Inbound::read(&frame).expect("tollgate's frames are valid");
            self.client_saw.push(seg.header.flags);
            let payload = TestBytes::from(&frame[seg.payload_offset..]);
            self.client.on_segment(&seg.header, payload, self.now);
        }
        while let Some(frame) = self.to_server.pop_front() {
            if self.lost(Lossy::ServerLeg) {
                continue;
            }
            let seg = Inbound::read(&frame).expect("tollgate's frames are valid");
            self.server_saw.push((
                seg.header.flags,
                SocketAddr::new(seg.src, seg.header.src_port),
            ));
            let payload = TestBytes::from(&frame[seg.payload_offset..]);
            match self.server.as_mut() {
                Some(server) => {
                    server.on_segment(&seg.header, payload, self.now);
                }
                None if seg.header.flags.contains(TcpFlags::SYN) && self.server_listening => {
                    self.server = Some(
                        Endpoint::accept(
                            endpoint_config(),
                            &seg.header,
                            seg.header.dst_port,
                            seg.header.src_port,
                            SeqNumber(0x1234_5678),
                            self.server_offer,
                            self.now,
                        )
                        .unwrap(),
                    );
                }
                None => {
                    if let Some(rst) = reset_for(&seg.header, seg.payload_len) {
                        let t = Transmit {
                            header: rst,
                            payload: None,
                        };
                        let frame = self.frame(Leg::Client, &t);
                        self.into_outside.push_back(frame);
                    }
                }
            }
        }
        // Timers and applications.
        if self.client.poll_at().is_some_and(|at| at <= self.now) {
            self.client.on_timer(self.now);
        }
        while let Some(p) = self.client.recv() {
            self.client_got.extend_from_slice(p.bytes());
        }
        if let Some(server) = self.server.as_mut() {
            if server.poll_at().is_some_and(|at| at <= self.now) {
                server.on_timer(self.now);
            }
            if self.now.is_multiple_of(self.server_reads_every_ms) {
                while let Some(p) = server.recv() {
                    self.server_got.extend_from_slice(p.bytes());
                }
            }
        }
        self.now += 1;
    }

    fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&mut Lab) -> bool) -> bool {
        let end = self.now + limit_ms;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Feeds `bytes` into an endpoint's send queue as it takes them, in 1000-byte writes.
fn feed(endpoint: &mut Endpoint<TestBytes>, bytes: &[u8], offset: &mut usize) {
    while *offset < bytes.len() {
        let end = (*offset + 1000).min(bytes.len());
        if endpoint
            .send(TestBytes::from(&bytes[*offset..end]))
            .is_err()
        {
            return;
        }
        *offset = end;
    }
}

fn transfer(lab: &mut Lab, up: &[u8], down: &[u8], limit_ms: u64) -> bool {
    transfer_with(lab, up, down, limit_ms, |_| {})
}

/// `transfer`, with `during` run at each step after the endpoints were fed: what a test does to
/// the flow while its bytes move.
fn transfer_with(
    lab: &mut Lab,
    up: &[u8],
    down: &[u8],
    limit_ms: u64,
    mut during: impl FnMut(&mut Lab),
) -> bool {
    let (mut sent_up, mut sent_down) = (0, 0);
    lab.run_until(limit_ms, |lab| {
        if lab.client.state() == State::Established {
            feed(&mut lab.client, up, &mut sent_up);
        }
        if let Some(server) = lab.server.as_mut() {
            if server.state().is_synchronized() {
                feed(server, down, &mut sent_down);
            }
        }
        during(lab);
        lab.server_got.len() == up.len() && lab.client_got.len() == down.len()
    })
}

#[test]
fn a_proxied_flow_relays_both_ways_byte_exact_and_transparently() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    let (up, down) = (data(300_000, 1), data(500_000, 2));
    assert!(
        transfer(&mut lab, &up, &down, 20_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    // Every frame the server saw claims to come from the client, and none was simply forwarded.
    let client: SocketAddr = CLIENT.parse().unwrap();
    assert!(lab.server_saw.iter().all(|(_, from)| *from == client));
    assert_eq!(lab.forwarded, 0);
    let counters = lab.shard.proxies_mut().counters();
    assert_eq!(counters.connections_opened, 1);
    assert_eq!(counters.connections_established, 1);
    assert_eq!(counters.connections_active, 1);
    // Close from the client; both legs finish and the proxy lets the flow go.
    lab.client.shutdown_write();
    assert!(lab.run_until(5_000, |lab| lab
        .server
        .as_ref()
        .is_some_and(|s| s.peer_closed())));
    lab.server.as_mut().unwrap().shutdown_write();
    assert!(lab.run_until(5_000, |lab| lab.client.state() == State::TimeWait));
    assert!(lab.run_until(130_000, |lab| lab.shard.proxies().is_empty()));
    assert_eq!(lab.shard.proxies_mut().counters().connections_active, 0);
}

#[test]
fn a_proxied_flow_whose_client_segments_arrive_as_ip_fragments_relays_them_byte_exact() {
    for (client, server) in [
        (CLIENT, SERVER),
        ("[2001:db8::1]:40000", "[2001:db8::2]:8080"),
    ] {
        let hosts = (client.parse().unwrap(), server.parse().unwrap());
        let inspector = SignatureInspector::new(&[]).unwrap();
        let mut lab = Lab::between(
            ProxySettings::default(),
            Action::Proxy,
            inspector,
            hosts,
            SynOptions::default(),
        );
        // As over a 576-byte path: a 1000-byte segment in two fragments.
        lab.fragment_client = Some(552);
        let (up, down) = (data(100_000, 7), data(30_000, 8));
        assert!(transfer(&mut lab, &up, &down, 20_000), "{client}");
        assert!(
            lab.server_got == up,
            "{client}: the server got the bytes sent"
        );
        assert!(lab.client_got == down);
        assert_eq!(lab.forwarded, 0, "nothing passed the proxy");
        let c = lab.fragments.counters;
        let segments = lab.client_data_sent.len() as u64;
        assert!(segments >= 100, "{segments}");
        assert!(lab.fragments_sent >= 2 * segments);
        assert_eq!(c.reassembled, segments, "{client}: {c:?}");
        assert_eq!(c.fragments, lab.fragments_sent, "{client}: {c:?}");
        assert!(lab.fragments.is_empty());
    }
}

#[test]
fn the_client_hears_nothing_before_the_server_answers_and_a_closed_port_refuses_it() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    lab.server_listening = false;
    assert!(lab.run_until(2_000, |lab| lab.client.state() == State::Closed));
    // The client's only answer was the RST the server's refusal turned into.
    assert_eq!(lab.client_saw.len(), 1);
    assert!(lab.client_saw[0].contains(TcpFlags::RST));
    assert_eq!(lab.shard.proxies_mut().counters().connections_refused, 1);
    assert!(lab.run_until(1_000, |lab| lab.shard.proxies().is_empty()));
}

#[test]
fn loss_on_the_server_leg_is_repaired_by_the_proxy_not_the_client() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    lab.loss = Lossy::ServerLeg;
    lab.loss_percent = 3;
    let (up, down) = (data(400_000, 3), data(200_000, 4));
    assert!(
        transfer(&mut lab, &up, &down, 60_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    let counters = lab.shard.proxies_mut().counters();
    assert!(
        counters.retransmissions_server_leg > 0,
        "the proxy's server leg must have repaired the loss"
    );
    // (Its SYN may have been: the client's SYN is answered only once the server's is, and
    // that may take a retransmission on the lossy leg.)
    assert_eq!(
        lab.client_data_resent, 0,
        "the client must never have had to send data again"
    );
}

#[test]
fn loss_on_the_client_leg_is_repaired_on_that_leg() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    lab.loss = Lossy::ClientLeg;
    lab.loss_percent = 3;
    let (up, down) = (data(200_000, 5), data(400_000, 6));
    assert!(
        transfer(&mut lab, &up, &down, 60_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    assert!(
        lab.shard
            .proxies_mut()
            .counters()
            .retransmissions_client_leg
            > 0
    );
    assert_eq!(lab.server.as_ref().unwrap().stats().retransmissions, 0);
}

#[test]
fn past_the_embryonic_limit_a_syn_cookie_opens_the_flow() {
    let settings = ProxySettings {
        max_embryonic: 0,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let (up, down) = (data(100_000, 7), data(100_000, 8));
    assert!(
        transfer(&mut lab, &up, &down, 20_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    let counters = lab.shard.proxies_mut().counters();
    assert_eq!(counters.syn_cookies_sent, 1);
    assert_eq!(counters.syn_cookies_accepted, 1);
}

/// Hosts on a 1500-byte link offer an MSS of 1460 over IPv4 and 1440 over IPv6; the client
/// leg's SYN-ACK offers the same, whether it mirrors the server's or stands in for it with a
/// SYN cookie before the server has been asked.
#[test]
fn the_client_leg_offers_the_mss_of_the_ip_version_with_or_without_a_cookie() {
    let versions = [
        ("198.18.0.1:40000", "198.18.0.2:8080", 1460),
        ("[2001:2::1]:40000", "[2001:2::2]:8080", 1440),
    ];
    for (client, server, mss) in versions {
        for max_embryonic in [1024, 0] {
            let settings = ProxySettings {
                max_embryonic,
                ..ProxySettings::default()
            };
            let offer = SynOptions {
                mss,
                ..SynOptions::default()
            };
            let hosts = (client.parse().unwrap(), server.parse().unwrap());
            let inspector = SignatureInspector::new(&[]).unwrap();
            let mut lab = Lab::between(settings, Action::Proxy, inspector, hosts, offer);
            let (up, down) = (data(20_000, 3), data(20_000, 4));
            assert!(transfer(&mut lab, &up, &down, 20_000), "{client} {mss}");
            assert_eq!((lab.server_got == up, lab.client_got == down), (true, true));
            let cookies = lab.shard.proxies_mut().counters().syn_cookies_accepted;
            assert_eq!(cookies, u64::from(max_embryonic == 0), "{client}");
            assert_eq!(
                lab.client.negotiated().peer_mss,
                mss,
                "{client}, cookies: {cookies}"
            );
        }
    }
}

/// A SYN flood from spoofed sources past the embryonic limit is answered with cookies and
/// leaves nothing in the flow table; a real client then connects on a cookie and transfers.
#[test]
fn a_syn_flood_leaves_no_state_and_a_real_client_still_connects() {
    let settings = ProxySettings {
        max_embryonic: 0,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let server: SocketAddr = SERVER.parse().unwrap();
    const FLOOD: u32 = 5_000;
    for i in 0..FLOOD {
        let spoofed = SocketAddr::from((
            [198, 19, (i >> 8) as u8, i as u8],
            1024 + (i % 50_000) as u16,
        ));
        let syn = synth::tcp(
            &Addressing::new(spoofed, server),
            TcpHeader {
                flags: flags::SYN,
                seq: i.wrapping_mul(2_654_435_761),
                ..Default::default()
            },
            b"",
        );
        lab.through_tollgate(syn, PortSide::Inside);
        assert!(
            lab.shard.pipeline().flows().len() <= 1,
            "flood SYN {i} left state"
        );
    }
    assert!(lab.to_server.is_empty(), "no flood SYN reaches the server");
    assert_eq!(lab.to_client.len(), FLOOD as usize, "one SYN-ACK each");
    lab.to_client.clear();
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.syn_cookies_sent, c.connections_opened),
        (u64::from(FLOOD), 0)
    );
    assert_eq!(lab.shard.pipeline().flows().len(), 0);
    assert_eq!(lab.shard.pipeline().counters.flows_table_full, 0);

    let (up, down) = (data(50_000, 21), data(50_000, 22));
    assert!(
        transfer(&mut lab, &up, &down, 20_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.syn_cookies_accepted, c.connections_opened), (1, 1));
    assert_eq!(c.midstream_passthrough, 0);
}

/// An ACK that carries no cookie while cookies are outstanding is a flow picked up
/// mid-stream: it passes through, as it would with no cookie sent.
#[test]
fn an_ack_without_a_valid_cookie_passes_as_a_midstream_flow() {
    let settings = ProxySettings {
        max_embryonic: 0,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let server: SocketAddr = SERVER.parse().unwrap();
    let a = Addressing::new("198.19.0.1:5000".parse().unwrap(), server);
    let syn = synth::tcp(
        &a,
        TcpHeader {
            flags: flags::SYN,
            ..Default::default()
        },
        b"",
    );
    lab.through_tollgate(syn, PortSide::Inside);
    let b = Addressing::new("198.19.0.2:5001".parse().unwrap(), server);
    let ack = synth::tcp(
        &b,
        TcpHeader {
            flags: flags::ACK,
            seq: 1000,
            ack: 12345,
            ..Default::default()
        },
        b"data",
    );
    lab.forwarded = 0;
    lab.through_tollgate(ack, PortSide::Inside);
    assert_eq!(lab.forwarded, 1);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.midstream_passthrough, c.syn_cookies_accepted), (1, 0));
}

/// A flow picked up mid-stream is counted once, however many segments it carries either way
/// (with cookies outstanding, too, when its client's segments are each checked for one).
#[test]
fn a_flow_picked_up_mid_stream_is_counted_once() {
    for max_embryonic in [1024, 0] {
        let settings = ProxySettings {
            max_embryonic,
            ..ProxySettings::default()
        };
        let mut lab = Lab::new(settings, Action::Proxy);
        if max_embryonic == 0 {
            syn_from(&mut lab, "198.19.0.9:4000");
        }
        let a = Addressing::new(CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        for i in 0..10u32 {
            for (addressing, ingress) in
                [(&a, PortSide::Inside), (&a.reversed(), PortSide::Outside)]
            {
                let segment = synth::tcp(
                    addressing,
                    TcpHeader {
                        flags: flags::ACK,
                        seq: 1000 + 100 * i,
                        ack: 5000 + 100 * i,
                        ..Default::default()
                    },
                    &[0x55; 100],
                );
                lab.through_tollgate(segment, ingress);
            }
        }
        assert_eq!(
            lab.forwarded,
            20,
            "cookies outstanding: {}",
            max_embryonic == 0
        );
        let c = lab.shard.proxies_mut().counters();
        assert_eq!((c.midstream_passthrough, c.syn_cookies_accepted), (1, 0));
    }
}

/// ACKs from random sources, as an ACK flood sends them.
fn ack_flood(lab: &mut Lab, n: u32) {
    let server: SocketAddr = SERVER.parse().unwrap();
    for i in 0..n {
        let spoofed = SocketAddr::from(([198, 19, (i >> 8) as u8, i as u8], 2000));
        let ack = synth::tcp(
            &Addressing::new(spoofed, server),
            TcpHeader {
                flags: flags::ACK,
                seq: i.wrapping_mul(2_654_435_761),
                ack: i,
                ..Default::default()
            },
            b"",
        );
        lab.through_tollgate(ack, PortSide::Inside);
    }
}

#[test]
fn under_on_midstream_drop_a_flow_without_a_syn_is_dropped_and_leaves_no_entry() {
    for on_midstream in [MidstreamAction::Bypass, MidstreamAction::Drop] {
        let settings = ProxySettings {
            // Cookies outstanding from the start: the flood's ACKs are checked for one first.
            max_embryonic: 0,
            on_midstream,
            ..ProxySettings::default()
        };
        let mut lab = Lab::new(settings, Action::Proxy);
        ack_flood(&mut lab, 300);
        let c = lab.shard.proxies_mut().counters();
        if on_midstream == MidstreamAction::Drop {
            assert_eq!((lab.not_syn, lab.forwarded), (300, 0));
            assert_eq!(lab.shard.pipeline().flows().len(), 0, "no entry kept");
            assert_eq!(c.midstream_passthrough, 0);
        } else {
            assert_eq!((lab.not_syn, lab.forwarded), (0, 300));
            assert_eq!(lab.shard.pipeline().flows().len(), 300);
            assert!(lab.shard.pipeline().flows().iter().all(|e| e.unreplied()));
            assert_eq!(c.midstream_passthrough, 300);
        }
        // A real client's handshake still completes on its cookie: its ACK is no pick-up.
        let (up, down) = (data(30_000, 31), data(30_000, 32));
        assert!(transfer(&mut lab, &up, &down, 20_000), "{on_midstream:?}");
        assert_eq!((lab.server_got == up, lab.client_got == down), (true, true));
        assert_eq!(lab.shard.proxies_mut().counters().syn_cookies_accepted, 1);
    }
}

/// A SYN from `src`; returns what tollgate sent to the client and to the server for it.
fn syn_from(lab: &mut Lab, src: &str) -> (usize, usize) {
    let syn = synth::tcp(
        &Addressing::new(src.parse().unwrap(), SERVER.parse().unwrap()),
        TcpHeader {
            flags: flags::SYN,
            seq: 77,
            ..Default::default()
        },
        b"",
    );
    lab.through_tollgate(syn, PortSide::Inside);
    let sent = (lab.to_client.len(), lab.to_server.len());
    lab.to_client.clear();
    lab.to_server.clear();
    sent
}

#[test]
fn past_its_bound_of_handshakes_a_source_gets_cookies_and_others_do_not() {
    let settings = ProxySettings {
        max_embryonic_per_source: 4,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    // The server never answers: the four stay half-open, each a server-side handshake.
    for port in 0..4 {
        assert_eq!(
            syn_from(&mut lab, &format!("198.19.0.1:{}", 1000 + port)),
            (0, 1)
        );
    }
    assert_eq!(lab.shard.pipeline().flows().len(), 4);
    for port in 4..100 {
        let sent = syn_from(&mut lab, &format!("198.19.0.1:{}", 1000 + port));
        assert_eq!(sent, (1, 0), "a cookie, and nothing to the server");
    }
    assert_eq!(
        lab.shard.pipeline().flows().len(),
        4,
        "cookies keep no entries"
    );
    assert_eq!(
        syn_from(&mut lab, "198.19.0.2:1000"),
        (0, 1),
        "another source"
    );
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (
            c.connections_opened,
            c.syn_cookies_sent,
            c.syn_cookies_per_source
        ),
        (5, 96, 96)
    );
}

#[test]
fn a_new_flow_past_the_flow_limit_is_bypassed_and_still_works() {
    let settings = ProxySettings {
        max_flows: 0,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let (up, down) = (data(50_000, 9), data(50_000, 10));
    assert!(
        transfer(&mut lab, &up, &down, 20_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.shard.proxies_mut().counters().budget_bypassed, 1);
    assert!(lab.forwarded > 0);
    let entry = lab.shard.pipeline().flows().iter().next().unwrap();
    assert_eq!(entry.mode(), FlowMode::Bypass);
}

#[test]
fn a_bypassed_flow_is_never_touched_by_the_proxy() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Bypass);
    let (up, down) = (data(50_000, 11), data(50_000, 12));
    assert!(
        transfer(&mut lab, &up, &down, 20_000),
        "transfer did not finish"
    );
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    assert_eq!(lab.shard.proxies_mut().counters().connections_opened, 0);
}

#[test]
fn a_slow_server_closes_the_client_window_without_the_client_ever_resending() {
    for (loss, seed) in [(0, 1), (3, 2), (3, 3)] {
        let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
        lab.rng = TestRng::new(seed);
        lab.loss = Lossy::ServerLeg;
        lab.loss_percent = loss;
        lab.server_reads_every_ms = 50;
        let up = data(3_000_000, 13);
        assert!(
            transfer(&mut lab, &up, &[], 120_000),
            "transfer did not finish"
        );
        assert_eq!(lab.server_got, up);
        assert_eq!(
            lab.client_data_resent, 0,
            "{loss}% loss on the server leg: client data resent"
        );
    }
}

#[test]
fn each_shortage_applies_its_own_action_and_is_counted() {
    use super::table::BudgetAction;
    // Flow limit with reset: the client is refused as by a closed port.
    let settings = ProxySettings {
        max_flows: 0,
        on_flow_limit: BudgetAction::Reset,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    assert!(lab.run_until(2_000, |lab| lab.client.state() == State::Closed));
    assert!(lab.client_saw.iter().all(|f| f.contains(TcpFlags::RST)));
    assert!(lab.server_saw.is_empty(), "nothing reaches the server");
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.flow_limit_hits, c.budget_reset, c.budget_bypassed),
        (1, 1, 0)
    );
    // The retransmitted SYNs the reset answered are refusals too: one notice each.
    let mut notices = crate::notice::Notices::default();
    lab.shard.proxies_mut().take_notices(&mut notices);
    assert!(notices.iter().count() >= 1);
    assert!(notices.iter().all(|n| n.kind
        == crate::notice::NoticeKind::NotProxied {
            condition: "proxy.max_flows",
            action: "reset"
        }));

    // Memory budget with bypass: the flow works, unproxied.
    let settings = ProxySettings {
        buffer_budget: 0,
        on_memory_budget: BudgetAction::Bypass,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let (up, down) = (data(20_000, 14), data(20_000, 15));
    assert!(transfer(&mut lab, &up, &down, 10_000));
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.memory_budget_hits, c.budget_bypassed), (1, 1));
    assert_eq!(c.connections_opened, 0);

    // Packet buffers short: its own counter; when the shortage ends, flows are proxied again.
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    lab.shard.proxies_mut().set_pressure(true);
    assert!(transfer(&mut lab, &up, &down, 10_000));
    assert_eq!(lab.shard.proxies_mut().counters().buffer_shortage_hits, 1);
    lab.shard.proxies_mut().set_pressure(false);
    let mut again = Lab::new(ProxySettings::default(), Action::Proxy);
    std::mem::swap(again.shard.proxies_mut(), lab.shard.proxies_mut());
    assert!(transfer(&mut again, &up, &down, 10_000));
    assert_eq!(again.shard.proxies_mut().counters().connections_opened, 1);
}

/// A live policy change to bypass hands a proxied flow over mid-transfer; after a SYN cookie
/// the legs' numbers differ, so every later segment is translated on its way.
#[test]
fn a_flow_moved_to_bypass_mid_transfer_is_handed_over_and_finishes_byte_exact() {
    for max_embryonic in [1024, 0] {
        let settings = ProxySettings {
            max_embryonic,
            ..ProxySettings::default()
        };
        let mut lab = Lab::new(settings, Action::Proxy);
        let (up, down) = (data(400_000, 16), data(600_000, 17));
        let mut moved = false;
        let done = transfer_with(&mut lab, &up, &down, 30_000, |lab| {
            if !moved && lab.server_got.len() > 100_000 {
                moved = true;
                lab.shard.set_policy(policy(Action::Bypass));
                let mut out = Frames::default();
                let now = lab.now;
                let changed = lab.shard.reclassify(now, &mut out);
                assert_eq!((changed.flows, changed.proxied), (1, 1));
                lab.route(out);
            }
        });
        assert!(
            done,
            "transfer did not finish (max_embryonic {max_embryonic})"
        );
        assert_eq!(lab.server_got, up);
        assert_eq!(lab.client_got, down);
        let counters = lab.shard.proxies_mut().counters();
        assert_eq!(counters.handovers, 1);
        assert_eq!(counters.connections_active, 0);
        assert!(
            lab.forwarded > 0,
            "the rest of the flow was forwarded (max_embryonic {max_embryonic})"
        );
        let entry = lab.shard.pipeline().flows().iter().next().unwrap();
        assert_eq!(entry.mode(), FlowMode::Bypass);
        // A cookie flow's sequence spaces differ, so it keeps translations (other flows may
        // too, for the small timestamp shift between the legs' clocks).
        if max_embryonic == 0 {
            assert!(entry.proxy_slot().is_some());
        }
    }
}

#[test]
fn a_configured_signature_resets_the_flow_and_is_counted_by_name() {
    #[derive(serde::Deserialize)]
    struct File {
        signature: Vec<crate::tcp::inspect::SignatureConfig>,
    }
    let config: File = toml::from_str(
        r#"
        [[signature]]
        name = "exfil"
        pattern = 'SECRET\x00'
        direction = "client-to-server"
        "#,
    )
    .unwrap();
    let inspector = SignatureInspector::new(&config.signature).unwrap();
    assert_eq!(inspector.names(), ["exfil"]);
    let mut lab = Lab::with_inspector(ProxySettings::default(), Action::Proxy, inspector);
    // The pattern split across two writes (two segments).
    let mut up = data(10_000, 18);
    up.extend_from_slice(b"SEC");
    let tail = b"RET\x00and more";
    let mut sent = 0;
    let reset = lab.run_until(10_000, |lab| {
        if lab.client.state() == State::Established && sent == 0 {
            feed(&mut lab.client, &up, &mut sent);
        }
        if sent == up.len() && lab.server_got.len() == up.len() {
            let _ = lab.client.send(TestBytes::from(&tail[..]));
            sent += 1;
        }
        lab.client.state() == State::Closed
    });
    assert!(reset, "the client was reset");
    // Nothing of the matching bytes reached the server.
    assert!(!lab.server_got.windows(3).any(|w| w == b"RET"));
    let counters = lab.shard.proxies_mut().counters();
    assert_eq!(counters.inspector_resets, 1);
    assert_eq!(lab.shard.proxies().signature_hits(), [1]);
    let entry = lab
        .shard
        .pipeline()
        .flows()
        .iter()
        .next()
        .expect("the flow's entry");
    assert_eq!(entry.tcp_phase(), Some(crate::flow::TcpPhase::Closed));
}

/// Connects, then sends `count` 100-byte segments from the client after 100 bytes it never
/// sends, as a cTCP client does after a loss (it never retransmits). The client offers no
/// timestamps, so that the segments need none.
fn send_after_a_hole(lab: &mut Lab, count: usize) {
    let connected = lab.run_until(5_000, |lab| {
        lab.client.state() == State::Established
            && lab
                .server
                .as_ref()
                .is_some_and(|s| s.state() == State::Established)
    });
    assert!(connected, "no connection");
    assert_eq!(lab.client.negotiated().timestamps, None);
    let client: SocketAddr = CLIENT.parse().unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    for i in 1..=count {
        let header = crate::tcp::segment::SegmentHeader {
            src_port: client.port(),
            dst_port: server.port(),
            seq: lab.client.snd_nxt() + 100 * i,
            ack: lab.client.rcv_nxt(),
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 65_535,
            urgent: 0,
            options: Default::default(),
            ecn: Ecn::NotEct,
        };
        let transmit = Transmit {
            header,
            payload: Some(TestBytes::from(&[0x42; 100][..])),
        };
        let frame = lab.frame(Leg::Server, &transmit);
        lab.through_tollgate(frame, PortSide::Inside);
    }
}

/// A lab whose hosts offer no timestamps (for [`send_after_a_hole`]).
fn lab_without_timestamps(settings: ProxySettings) -> Lab {
    let hosts = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let offer = SynOptions {
        timestamps: None,
        ..SynOptions::default()
    };
    let inspector = SignatureInspector::new(&[]).unwrap();
    Lab::between(settings, Action::Proxy, inspector, hosts, offer)
}

/// Data held above a hole and dropped at `proxy.out_of_order_timeout_ms` is counted, read
/// from the live flow and kept once the flow is gone.
#[test]
fn out_of_order_data_dropped_at_the_timeout_is_counted() {
    let mut settings = ProxySettings::default();
    settings.flow.endpoint.reassembly.timeout_ms = Some(2_000);
    let mut lab = lab_without_timestamps(settings);
    send_after_a_hole(&mut lab, 5);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.out_of_order_discarded, c.out_of_order_discarded_bytes),
        (0, 0)
    );
    let dropped = lab.run_until(5_000, |lab| {
        lab.shard.proxies_mut().counters().out_of_order_discarded > 0
    });
    assert!(dropped, "nothing dropped at the timeout");
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.out_of_order_discarded, c.out_of_order_discarded_bytes),
        (5, 500)
    );
    let slot = lab
        .shard
        .pipeline()
        .flows()
        .iter()
        .next()
        .unwrap()
        .proxy_slot()
        .unwrap();
    let mut out = Frames::default();
    let now = lab.now;
    lab.shard.release(slot, now, &mut out);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(c.connections_active, 0);
    assert_eq!(
        (c.out_of_order_discarded, c.out_of_order_discarded_bytes),
        (5, 500)
    );
}

/// A stall reset by `on-stall reset` ends the flow: its entry shows it closed (the proxy's
/// RSTs never pass the flow table) and goes after the closed timeout, not the established one.
#[test]
fn a_flow_reset_on_a_stall_is_closed_in_the_flow_table_and_ages_out() {
    let mut settings = ProxySettings::default();
    settings.flow.stall.action = crate::tcp::proxy::OnStall::Reset;
    let mut lab = lab_without_timestamps(settings);
    send_after_a_hole(&mut lab, 6);
    assert!(
        lab.run_until(10_000, |lab| lab
            .shard
            .proxies_mut()
            .counters()
            .stalls_reset
            == 1),
        "no stall"
    );
    assert!(lab.run_until(1_000, |lab| lab.client.state() == State::Closed));
    let entry = lab
        .shard
        .pipeline()
        .flows()
        .iter()
        .next()
        .expect("the flow's entry");
    assert_eq!(entry.tcp_phase(), Some(crate::flow::TcpPhase::Closed));
    let view = crate::flow::view::view(0, entry, lab.now);
    assert_eq!(
        view.tcp_state,
        Some(crate::flow::view::FlowTcpState::Closed)
    );
    let closed_ms = lab.shard.pipeline().flows().timeouts().tcp_closed_ms;
    let last_seen = entry.last_seen_ms();
    lab.expire(last_seen + closed_ms - 1_000);
    assert_eq!(
        lab.shard.pipeline().flows().len(),
        1,
        "gone before the closed timeout"
    );
    lab.expire(last_seen + closed_ms + 1_000);
    assert_eq!(
        lab.shard.pipeline().flows().len(),
        0,
        "still there after the closed timeout"
    );
}

/// Datagrams as cTCP carries them, one a write: IKE first, then ESP.
fn ctcp_datagrams(count: u32, spi: u32) -> Vec<Vec<u8>> {
    let mut out = vec![samples::ctcp_ike(&samples::ikev1_aggressive(300))];
    out.extend((1..count).map(|seq| samples::ctcp_esp(spi, seq, 200)));
    out
}

/// Sends `datagrams` from `endpoint` one write each, as its send queue takes them.
fn feed_datagrams(endpoint: &mut Endpoint<TestBytes>, datagrams: &[Vec<u8>], next: &mut usize) {
    while let Some(d) = datagrams.get(*next) {
        if endpoint.send(TestBytes::from(&d[..])).is_err() {
            return;
        }
        *next += 1;
    }
}

/// A flow whose first payload is cTCP is handed over to pass-through at once: the segment
/// that showed it goes to the server in the hand-over's flush, everything after is forwarded,
/// and both streams arrive byte-exact, with loss on the client leg and after a SYN cookie
/// (translated) too.
#[test]
fn ipsec_over_tcp_is_recognised_and_handed_over_on_its_first_payload() {
    for (max_embryonic, loss) in [(1024, 0), (1024, 3), (0, 3)] {
        let settings = ProxySettings {
            max_embryonic,
            detect_ports: vec![8080],
            ..ProxySettings::default()
        };
        let mut lab = Lab::new(settings, Action::Proxy);
        lab.loss = Lossy::ClientLeg;
        lab.loss_percent = loss;
        let up = ctcp_datagrams(300, 0x8e12_44a1);
        let down = ctcp_datagrams(200, 0x0100_0007);
        let (mut next_up, mut next_down) = (0, 0);
        let up_bytes: Vec<u8> = up.concat();
        let down_bytes: Vec<u8> = down.concat();
        let done = lab.run_until(30_000, |lab| {
            if lab.client.state() == State::Established {
                feed_datagrams(&mut lab.client, &up, &mut next_up);
            }
            if let Some(server) = lab.server.as_mut() {
                if server.state().is_synchronized() {
                    feed_datagrams(server, &down, &mut next_down);
                }
            }
            lab.server_got.len() == up_bytes.len() && lab.client_got.len() == down_bytes.len()
        });
        let case = format!("max_embryonic {max_embryonic}, loss {loss} %");
        assert!(done, "transfer did not finish ({case})");
        assert_eq!(lab.server_got, up_bytes, "{case}");
        assert_eq!(lab.client_got, down_bytes, "{case}");
        let counters = lab.shard.proxies_mut().counters();
        assert_eq!(counters.detected_ctcp_ike, 1, "{case}");
        assert_eq!(counters.handovers, 1, "{case}");
        let mut notices = crate::notice::Notices::default();
        lab.shard.proxies_mut().take_notices(&mut notices);
        let kinds: Vec<_> = notices.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [crate::notice::NoticeKind::Detected {
                framing: "ctcp-ike"
            }],
            "{case}"
        );
        assert_eq!(counters.connections_active, 0, "{case}");
        assert!(lab.forwarded > 0, "{case}");
        let entry = lab.shard.pipeline().flows().iter().next().unwrap();
        assert_eq!(entry.mode(), FlowMode::Bypass, "{case}");
        assert_eq!(
            entry.handover(),
            Some(HandoverCause::Detection(IpsecFraming::CtcpIke)),
            "{case}"
        );
        // The proxy never relayed a data segment of its own to the server before handing
        // over: what the server got came in the flush or straight from the client.
        let view = crate::flow::view::view(0, entry, lab.now);
        assert_eq!(
            view.handed_over,
            Some(crate::flow::view::HandedOver::Detection)
        );
        assert_eq!(view.detected, Some(IpsecFraming::CtcpIke));
        // As the control socket names them.
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            (&json["handed_over"], &json["detected"]),
            (&"detection".into(), &"ctcp-ike".into())
        );
    }
}

/// A watched flow that is not IPsec stays proxied; the rule's `detect off` turns the watch off
/// on a watched port, and `detect ipsec-over-tcp` on for any port.
#[test]
fn detection_follows_the_rule_and_the_port() {
    let http = samples::HTTP_GET.to_vec();
    let ctcp = ctcp_datagrams(20, 0x0202_0202);
    // The flow's rule: none (the protocol default), or one that sets `detect`.
    let run = |settings: ProxySettings, rule: Option<&str>, datagrams: &[Vec<u8>]| {
        let mut lab = Lab::new(settings, Action::Proxy);
        if let Some(rule) = rule {
            set_rule(&mut lab, rule);
        }
        let bytes = datagrams.concat();
        let mut next = 0;
        let done = lab.run_until(10_000, |lab| {
            if lab.client.state() == State::Established {
                feed_datagrams(&mut lab.client, datagrams, &mut next);
            }
            lab.server_got.len() == bytes.len()
        });
        assert!(done);
        assert_eq!(lab.server_got, bytes);
        lab
    };
    let watched = ProxySettings {
        detect_ports: vec![8080],
        ..ProxySettings::default()
    };
    let mut lab = run(watched.clone(), None, std::slice::from_ref(&http));
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.detected_not_ipsec, c.handovers), (1, 0));
    assert_eq!(lab.forwarded, 0);
    assert_eq!(c.connections_active, 1);

    let mut lab = run(watched, Some(r#"{"action":"proxy","detect":"off"}"#), &ctcp);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.detected_ctcp_ike, c.detected_not_ipsec, c.handovers),
        (0, 0, 0)
    );
    assert_eq!(lab.forwarded, 0);

    let unwatched = ProxySettings {
        detect_ports: vec![],
        ..ProxySettings::default()
    };
    let mut lab = run(unwatched.clone(), None, &ctcp);
    assert_eq!(lab.shard.proxies_mut().counters().handovers, 0);
    let mut lab = run(
        unwatched,
        Some(r#"{"action":"proxy","detect":"ipsec-over-tcp"}"#),
        &ctcp,
    );
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.detected_ctcp_ike, c.handovers), (1, 1));
    assert!(lab.forwarded > 0);
}

/// While tollgate drains, a proxied flow goes on to the end and a new one passes through
/// unproxied, counted as `drain_bypassed`.
#[test]
fn draining_lets_proxied_flows_finish_and_passes_new_ones_through() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    let (up, down) = (data(200_000, 31), data(300_000, 32));
    let mut drained = false;
    let done = transfer_with(&mut lab, &up, &down, 20_000, |lab| {
        if !drained && lab.server_got.len() > 50_000 {
            drained = true;
            lab.shard.proxies_mut().set_draining(true);
        }
    });
    assert!(done && drained);
    assert_eq!(
        (lab.server_got.len(), lab.client_got.len()),
        (up.len(), down.len())
    );
    let c = lab.shard.proxies_mut().counters();
    assert_eq!(
        (c.connections_opened, c.connections_open, c.drain_bypassed),
        (1, 1, 0)
    );
    assert_eq!(lab.forwarded, 0, "the proxied flow stayed proxied");

    // A new connection while draining: forwarded as it is, never proxied.
    let mut fresh = Lab::new(ProxySettings::default(), Action::Proxy);
    fresh.shard.proxies_mut().set_draining(true);
    assert!(transfer(&mut fresh, &up, &down, 20_000));
    assert_eq!(fresh.server_got, up);
    let c = fresh.shard.proxies_mut().counters();
    assert_eq!((c.connections_opened, c.drain_bypassed), (0, 1));
    assert!(fresh.forwarded > 0);
    let entry = fresh.shard.pipeline().flows().iter().next().unwrap();
    assert_eq!(entry.mode(), FlowMode::Bypass);
}

/// A lab whose policy holds one rule, `rule`; returns it with the rule's id.
fn lab_with_rule(rule: &str) -> (Lab, u32) {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    let id = set_rule(&mut lab, rule);
    (lab, id)
}

/// Makes `rule` the lab's policy, its only rule; returns the rule's id.
fn set_rule(lab: &mut Lab, rule: &str) -> u32 {
    let mut set = PolicySet::default();
    let id = set.add(serde_json::from_str(rule).unwrap()).unwrap();
    let defaults = PolicyDefaults {
        tcp: Action::Proxy,
        udp: Action::Bypass,
        other: Action::Bypass,
    };
    lab.shard
        .set_policy(Arc::new(CompiledPolicy::compile(&set, defaults, 2)));
    id
}

/// Rule `rule`'s connection limits at work: its gauges and this worker's refusals.
fn limit_counters(lab: &Lab, rule: u32) -> crate::proxy::LimitCounters {
    let mut c = lab.shard.pipeline().policy().limits(rule).unwrap().gauges();
    for (r, hits) in lab.shard.proxies().limit_hits() {
        if *r == rule {
            c.add_hits(hits);
        }
    }
    c
}

/// A SYN from `src` to the server; returns the flags of what tollgate sent the client and
/// how many frames went to the server. The server never answers.
fn syn_answer(lab: &mut Lab, src: &str) -> (Vec<TcpFlags>, usize) {
    let syn = synth::tcp(
        &Addressing::new(src.parse().unwrap(), SERVER.parse().unwrap()),
        TcpHeader {
            flags: flags::SYN,
            seq: 77,
            ..Default::default()
        },
        b"",
    );
    lab.through_tollgate(syn, PortSide::Inside);
    let to_client = lab
        .to_client
        .drain(..)
        .map(|f| Inbound::read(&f).unwrap().header.flags)
        .collect();
    let to_server = lab.to_server.len();
    lab.to_server.clear();
    (to_client, to_server)
}

/// The server refuses the handshake tollgate opened for `src` (whose SYN had sequence 77).
fn server_refuses(lab: &mut Lab, src: &str) {
    let rst = synth::tcp(
        &Addressing::new(SERVER.parse().unwrap(), src.parse().unwrap()),
        TcpHeader {
            flags: flags::RST | flags::ACK,
            seq: 0,
            ack: 78,
            ..Default::default()
        },
        b"",
    );
    lab.through_tollgate(rst, PortSide::Outside);
    lab.to_client.clear();
    lab.to_server.clear();
}

const HELD: (&[TcpFlags], usize) = (&[], 1);

fn refused() -> (Vec<TcpFlags>, usize) {
    (vec![TcpFlags::RST | TcpFlags::ACK], 0)
}

#[test]
fn past_conn_max_a_new_flow_is_reset_with_no_entry_and_counted_until_one_closes() {
    let (mut lab, rule) =
        lab_with_rule(r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","conn_max":2}"#);
    for src in ["198.19.0.1:1000", "198.19.0.2:1000"] {
        let (to_client, to_server) = syn_answer(&mut lab, src);
        assert_eq!((to_client.as_slice(), to_server), HELD, "{src}");
    }
    let c = limit_counters(&lab, rule);
    assert_eq!((c.connections, c.embryonic), (2, 2));
    // The lab's client: refused as by a closed port, and nothing reaches the server.
    assert!(lab.run_until(2_000, |lab| lab.client.state() == State::Closed));
    assert!(lab.client_saw.iter().all(|f| f.contains(TcpFlags::RST)));
    assert!(lab.server_saw.is_empty());
    assert_eq!(
        lab.shard.pipeline().flows().len(),
        2,
        "no entry for the refused flow"
    );
    assert_eq!(syn_answer(&mut lab, "198.19.0.3:1000"), refused());
    let c = limit_counters(&lab, rule);
    assert_eq!(
        (c.conn_max_hits, c.limit_reset, c.limit_bypassed),
        (2, 2, 0)
    );
    assert_eq!((c.embryonic_max_hits, c.per_client_max_hits), (0, 0));
    assert_eq!(lab.shard.proxies_mut().counters().connections_opened, 2);
    let mut notices = crate::notice::Notices::default();
    lab.shard.proxies_mut().take_notices(&mut notices);
    assert!(notices.iter().any(|n| n.kind
        == crate::notice::NoticeKind::OverLimit {
            rule,
            limit: "conn-max",
            action: "reset"
        }));

    // One of the two ends (the server refuses it): its place goes to the next flow.
    server_refuses(&mut lab, "198.19.0.1:1000");
    assert_eq!(limit_counters(&lab, rule).connections, 1);
    let (to_client, to_server) = syn_answer(&mut lab, "198.19.0.3:1000");
    assert_eq!((to_client.as_slice(), to_server), HELD);
    // The closed connection's ports, reused: a new flow, and the rule is at its limit again.
    assert_eq!(syn_answer(&mut lab, "198.19.0.1:1000"), refused());
    assert_eq!(limit_counters(&lab, rule).conn_max_hits, 3);
}

#[test]
fn past_conn_max_with_on_limit_bypass_a_new_flow_passes_unproxied_byte_exact() {
    let (mut lab, rule) = lab_with_rule(
        r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","conn_max":1,"on_limit":"bypass"}"#,
    );
    let (to_client, to_server) = syn_answer(&mut lab, "198.19.0.1:1000");
    assert_eq!((to_client.as_slice(), to_server), HELD);
    let (up, down) = (data(60_000, 41), data(80_000, 42));
    assert!(transfer(&mut lab, &up, &down, 20_000));
    assert_eq!((lab.server_got == up, lab.client_got == down), (true, true));
    assert!(lab.forwarded > 0);
    let c = limit_counters(&lab, rule);
    assert_eq!(
        (c.conn_max_hits, c.limit_bypassed, c.limit_reset),
        (1, 1, 0)
    );
    assert_eq!(
        c.connections, 1,
        "a bypassed flow is not one of the rule's connections"
    );
    assert_eq!(lab.shard.proxies_mut().counters().connections_opened, 1);
    let modes: Vec<FlowMode> = lab
        .shard
        .pipeline()
        .flows()
        .iter()
        .map(|e| e.mode())
        .collect();
    assert_eq!(
        modes.iter().filter(|&&m| m == FlowMode::Bypass).count(),
        1,
        "{modes:?}"
    );
}

#[test]
fn embryonic_max_counts_handshakes_in_progress_only() {
    let (mut lab, rule) = lab_with_rule(
        r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","embryonic_max":1}"#,
    );
    // The lab's connection completes both handshakes: it stays open but is no longer
    // embryonic.
    let (up, down) = (data(10_000, 43), data(10_000, 44));
    assert!(transfer(&mut lab, &up, &down, 20_000));
    let c = limit_counters(&lab, rule);
    assert_eq!((c.connections, c.embryonic), (1, 0));
    let (to_client, to_server) = syn_answer(&mut lab, "198.19.0.1:1000");
    assert_eq!((to_client.as_slice(), to_server), HELD);
    assert_eq!(syn_answer(&mut lab, "198.19.0.2:1000"), refused());
    let c = limit_counters(&lab, rule);
    assert_eq!((c.connections, c.embryonic), (2, 1));
    assert_eq!(
        (c.embryonic_max_hits, c.conn_max_hits, c.limit_reset),
        (1, 0, 1)
    );
    // The handshake that held the place fails: the next one is taken on.
    server_refuses(&mut lab, "198.19.0.1:1000");
    let (to_client, to_server) = syn_answer(&mut lab, "198.19.0.2:1000");
    assert_eq!((to_client.as_slice(), to_server), HELD);
}

#[test]
fn per_client_max_bounds_each_client_address_on_its_own() {
    let (mut lab, rule) = lab_with_rule(
        r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","per_client_max":2}"#,
    );
    for port in [1000, 1001] {
        let (to_client, to_server) = syn_answer(&mut lab, &format!("198.19.0.1:{port}"));
        assert_eq!((to_client.as_slice(), to_server), HELD);
    }
    assert_eq!(syn_answer(&mut lab, "198.19.0.1:1002"), refused());
    // Another client, in a bucket of its own (addresses that share one share its count).
    let limits = Arc::clone(lab.shard.pipeline().policy().limits(rule).unwrap());
    let other = (2..=255u8)
        .map(|i| format!("198.19.0.{i}"))
        .find(|a| limits.client_connections(a.parse().unwrap()) == Some(0))
        .unwrap();
    for port in [1000, 1001] {
        let (to_client, to_server) = syn_answer(&mut lab, &format!("{other}:{port}"));
        assert_eq!((to_client.as_slice(), to_server), HELD);
    }
    let c = limit_counters(&lab, rule);
    assert_eq!(
        (c.connections, c.per_client_max_hits, c.limit_reset),
        (4, 1, 1)
    );
    assert_eq!(lab.shard.pipeline().flows().len(), 4);
}

#[test]
fn a_connection_leaves_its_rules_count_when_it_closes() {
    let (mut lab, rule) =
        lab_with_rule(r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","conn_max":1}"#);
    let (up, down) = (data(20_000, 45), data(20_000, 46));
    assert!(transfer(&mut lab, &up, &down, 20_000));
    assert_eq!(limit_counters(&lab, rule).connections, 1);
    assert_eq!(syn_answer(&mut lab, "198.19.0.1:1000"), refused());
    lab.client.shutdown_write();
    lab.server.as_mut().unwrap().shutdown_write();
    assert!(lab.run_until(5_000, |lab| limit_counters(lab, rule).connections == 0));
    // Closed (its TIME-WAIT not counted): a new flow takes the place.
    let (to_client, to_server) = syn_answer(&mut lab, "198.19.0.1:1000");
    assert_eq!((to_client.as_slice(), to_server), HELD);
}

#[test]
fn a_syn_cookie_holds_no_place_and_its_ack_is_admitted_against_the_limits() {
    let (mut lab, rule) =
        lab_with_rule(r#"{"match":{"proto":"tcp","dst_port":8080},"action":"proxy","conn_max":1}"#);
    let settings = ProxySettings {
        max_embryonic: 0,
        ..ProxySettings::default()
    };
    *lab.shard.proxies_mut() = ProxyTable::new(
        settings,
        Arc::new(SignatureInspector::new(&[]).unwrap()),
        [7; 16],
    );
    let (up, down) = (data(20_000, 47), data(20_000, 48));
    assert!(transfer(&mut lab, &up, &down, 20_000));
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.syn_cookies_sent, c.syn_cookies_accepted), (1, 1));
    assert_eq!(limit_counters(&lab, rule).connections, 1);
    // At its limit, the rule refuses a SYN before any cookie is sent for it.
    assert_eq!(syn_answer(&mut lab, "198.19.0.1:1000"), refused());
    assert_eq!(lab.shard.proxies_mut().counters().syn_cookies_sent, 1);
    assert_eq!(limit_counters(&lab, rule).conn_max_hits, 1);
}

impl Lab {
    /// Expiry as the worker runs it between bursts, at `now`, with what tollgate sends.
    fn expire(&mut self, now: u64) {
        let mut out = Frames::default();
        self.shard.expire(now, &mut out);
        self.route(out);
    }

    /// `flows clear` as the worker runs it, with what tollgate sends on its way to the hosts.
    fn clear(&mut self, filter: FlowFilter, action: ClearAction) -> FlowsClearReply {
        let mut out = Frames::default();
        let reply = self
            .shard
            .clear_flows(&filter, action, 0, self.now, &mut out);
        self.route(out);
        reply
    }

    /// The flow's entry, and its initiator and responder.
    fn the_entry(&self) -> (&FlowEntry, SocketAddr, SocketAddr) {
        let mut entries = self.shard.pipeline().flows().iter();
        let e = entries.next().expect("an entry");
        assert!(entries.next().is_none(), "one entry");
        let (src, dst) = e.key().endpoints(e.initiator());
        (e, src, dst)
    }
}

fn the_server_port() -> FlowFilter {
    FlowFilter {
        port: Some(SERVER.parse::<SocketAddr>().unwrap().port()),
        ..FlowFilter::default()
    }
}

/// A download under way, until the client has `bytes` of it.
fn download_until(lab: &mut Lab, down: &[u8], sent: &mut usize, bytes: usize) -> bool {
    lab.run_until(20_000, |lab| {
        if let Some(server) = lab.server.as_mut() {
            if server.state().is_synchronized() {
                feed(server, down, sent);
            }
        }
        lab.client_got.len() >= bytes
    })
}

/// `flows clear` resets a proxied connection at both ends. The segments still in flight from
/// either end then meet its entry, closed and in its orientation, and are ignored: none makes
/// a new flow with the server as its initiator, which `flows list` showed as
/// `198.18.0.2:8080 -> 198.18.0.1:40000 proxy ... closed`.
#[test]
fn a_cleared_proxied_connection_is_reset_and_its_late_segments_make_no_flow_backwards() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    let (client, server): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
    let down = data(2_000_000, 42);
    let mut sent = 0;
    assert!(download_until(&mut lab, &down, &mut sent, 100_000));

    let reply = lab.clear(the_server_port(), ClearAction::Reset);
    assert_eq!((reply.cleared, reply.proxy.reset), (1, 1), "{reply:?}");
    let rst = |frames: &VecDeque<Vec<u8>>| {
        frames
            .iter()
            .filter(|f| {
                Inbound::read(f)
                    .unwrap()
                    .header
                    .flags
                    .contains(TcpFlags::RST)
            })
            .count()
    };
    assert_eq!((rst(&lab.to_client), rst(&lab.to_server)), (1, 1));

    // Sent before the RSTs arrived: data from the server, an ACK from the client.
    let late = |from: SocketAddr, to: SocketAddr, payload: &[u8]| {
        synth::tcp(
            &Addressing::new(from, to),
            TcpHeader {
                flags: flags::ACK,
                seq: 7_000_000,
                ack: 9_000_000,
                ..Default::default()
            },
            payload,
        )
    };
    lab.forwarded = 0;
    lab.through_tollgate(late(server, client, &[0x5a; 1000]), PortSide::Outside);
    lab.through_tollgate(late(client, server, b""), PortSide::Inside);
    let (entry, src, dst) = lab.the_entry();
    assert_eq!(
        (src, dst),
        (client, server),
        "the client stays the initiator"
    );
    assert_eq!(entry.mode(), FlowMode::Proxy);
    assert_eq!(entry.tcp_phase(), Some(TcpPhase::Closed));
    assert!(entry.packets(Direction::ServerToClient) > 0);
    assert_eq!(
        lab.forwarded, 0,
        "late segments of a reset connection go nowhere"
    );

    assert!(lab.run_until(100, |lab| {
        lab.client.state() == State::Closed
            && lab
                .server
                .as_ref()
                .is_some_and(|s| s.state() == State::Closed)
    }));
    assert!(lab.client_got.len() < down.len());
    // The entry goes after the closed timeout, like that of any connection reset.
    let config = FlowTableConfig::default();
    let (closed_ms, tick_ms) = (config.timeouts.tcp_closed_ms, config.tick_ms);
    lab.expire(lab.now + closed_ms - 2_000);
    assert_eq!(lab.shard.pipeline().flows().len(), 1);
    lab.expire(lab.now + closed_ms + 2 * tick_ms);
    assert_eq!(lab.shard.pipeline().flows().len(), 0);
    assert_eq!(lab.shard.proxies_mut().counters().connections_active, 0);
}

/// `flows clear --hand-over`: a connection still in its handshake is kept proxied and
/// reported; one relaying is handed over and finishes byte-exact, unproxied; a plain clear of
/// it while the proxy still serves it (owed bytes, translated numbers) keeps it, since
/// forgetting it would break it.
#[test]
fn a_connection_cleared_with_hand_over_finishes_byte_exact_unproxied() {
    let mut lab = Lab::new(ProxySettings::default(), Action::Proxy);
    assert!(lab.run_until(1_000, |lab| {
        lab.shard
            .pipeline()
            .flows()
            .iter()
            .next()
            .and_then(|e| e.proxy_slot())
            .and_then(|slot| lab.shard.proxies().view(slot))
            .and_then(|v| v.client_leg)
            .is_some_and(|leg| leg.state == State::SynReceived)
    }));
    let reply = lab.clear(the_server_port(), ClearAction::HandOver);
    assert_eq!((reply.cleared, reply.proxy.kept), (0, 1), "{reply:?}");
    assert_eq!(reply.kept[0].reason, KeptReason::HandshakeInProgress);
    assert_eq!(reply.kept[0].src, CLIENT.parse().unwrap());

    let (up, down) = (data(300_000, 43), data(900_000, 44));
    let mut handed_over = false;
    let done = transfer_with(&mut lab, &up, &down, 30_000, |lab| {
        if !handed_over && lab.client_got.len() > 200_000 {
            handed_over = true;
            let reply = lab.clear(the_server_port(), ClearAction::HandOver);
            assert_eq!(
                (reply.cleared, reply.proxy.handed_over),
                (1, 1),
                "{reply:?}"
            );
            let (entry, _, _) = lab.the_entry();
            assert_eq!(entry.mode(), FlowMode::Bypass);
            assert_eq!(entry.handover(), Some(HandoverCause::Operator));
            let still_served = entry.proxy_slot().is_some();
            let reply = lab.clear(the_server_port(), ClearAction::Reset);
            if still_served {
                assert_eq!((reply.cleared, reply.bypass.kept), (0, 1), "{reply:?}");
                assert_eq!(reply.kept[0].reason, KeptReason::PassThrough);
            } else {
                assert_eq!(reply.bypass.forgotten, 1, "{reply:?}");
            }
        }
    });
    assert!(done, "the transfer did not finish");
    assert_eq!(lab.server_got, up);
    assert_eq!(lab.client_got, down);
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.handovers, c.handover_abandoned), (1, 0));
    assert!(lab.forwarded > 0, "the rest went through unproxied");
}

/// A SYN flood from the client's own address sweeps its source ports, so now and then one of
/// its SYNs carries the 4-tuple of the client's live connection (hping3 --flood -S). Whenever
/// it comes (handshake, transfer, close), the connection finishes byte-exact and neither end
/// sees a RST.
#[test]
fn a_flood_syn_on_the_tuple_of_a_live_cookie_connection_leaves_it_alone() {
    let mut rng = TestRng::new(9);
    for at in 0..120u64 {
        let settings = ProxySettings {
            max_embryonic: 0,
            ..ProxySettings::default()
        };
        let mut lab = Lab::new(settings, Action::Proxy);
        let (up, down) = (data(300, 1), data(60_000, 2));
        let seq = rng.u32();
        let mut step = 0u64;
        let flood_syn = |seq: u32| {
            synth::tcp(
                &Addressing::new(CLIENT.parse().unwrap(), SERVER.parse().unwrap()),
                TcpHeader {
                    flags: flags::SYN,
                    seq,
                    window: 512,
                    ..Default::default()
                },
                b"",
            )
        };
        let done = transfer_with(&mut lab, &up, &down, 20_000, |lab| {
            if step == at {
                lab.into_inside.push_back(flood_syn(seq));
            }
            step += 1;
        });
        assert!(done, "SYN at {at} ms: transfer did not finish");
        assert_eq!(lab.server_got, up, "SYN at {at} ms");
        assert_eq!(lab.client_got, down, "SYN at {at} ms");
        // And the close, with a flood SYN in it too.
        lab.server.as_mut().unwrap().shutdown_write();
        let closing_at = lab.now + (at % 12);
        let closed = lab.run_until(5_000, |lab| {
            if lab.now == closing_at {
                lab.into_inside.push_back(flood_syn(seq ^ 0x5555_5555));
            }
            if lab.client.state() == State::CloseWait {
                lab.client.shutdown_write();
            }
            lab.client.state() == State::Closed
        });
        assert!(closed, "SYN at {at} ms: the client never closed");
        let resets_to_client = lab
            .client_saw
            .iter()
            .filter(|f| f.contains(TcpFlags::RST))
            .count();
        assert_eq!(resets_to_client, 0, "SYN at {at} ms: RSTs to the client");
        // The server closed first: TIME-WAIT, unless a RST cut it short.
        assert_eq!(
            lab.server.as_ref().unwrap().state(),
            State::TimeWait,
            "SYN at {at} ms: the server's end"
        );
    }
}

/// The client's first segments after a cookie SYN-ACK are lost (a flooded link drops them),
/// and a flood SYN on its tuple draws a second cookie SYN-ACK, which the client answers with
/// an ACK at the sequence number past its request: the first segment tollgate sees from the
/// client is one no cookie validates. Passing it to the server as a flow picked up mid-stream
/// would earn a RST from the server, which the client takes (it is at its RCV.NXT). Like a
/// listener's cookie check, tollgate drops it; the client's retransmission completes the
/// cookie and the connection works.
#[test]
fn an_ack_no_cookie_validates_from_a_source_just_sent_cookies_is_dropped_not_passed() {
    let settings = ProxySettings {
        max_embryonic: 0,
        ..ProxySettings::default()
    };
    let mut lab = Lab::new(settings, Action::Proxy);
    let (up, down) = (data(300, 5), data(20_000, 6));
    let mut phase = 0;
    let done = transfer_with(&mut lab, &up, &down, 20_000, |lab| match phase {
        0 if lab.client.state() == State::Established => {
            // The client's ACK and request are about to go: lost.
            lab.loss = Lossy::ClientLeg;
            lab.loss_percent = 100;
            phase = 1;
        }
        1 => {
            lab.loss = Lossy::Nowhere;
            let syn = synth::tcp(
                &Addressing::new(CLIENT.parse().unwrap(), SERVER.parse().unwrap()),
                TcpHeader {
                    flags: flags::SYN,
                    seq: 0x0bad_5eed,
                    window: 512,
                    ..Default::default()
                },
                b"",
            );
            lab.into_inside.push_back(syn);
            phase = 2;
        }
        _ => {}
    });
    assert_eq!(phase, 2);
    assert!(done, "transfer did not finish");
    assert_eq!((lab.server_got == up, lab.client_got == down), (true, true));
    assert!(
        !lab.client_saw.iter().any(|f| f.contains(TcpFlags::RST)),
        "the client was reset"
    );
    let c = lab.shard.proxies_mut().counters();
    assert_eq!((c.syn_cookies_accepted, c.midstream_passthrough), (1, 0));
    assert_eq!(c.syn_cookies_invalid, 1);
}
