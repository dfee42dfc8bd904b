//! The replay tier: every directory under `tests/replay/` is a case, a capture (`input.pcap`)
//! and what a worker must do with it (`case.toml`), replayed frame by frame through a fresh
//! `Shard` in the capture's time, with no root and no DPDK (in the manner of suricata-verify).
//!
//! `case.toml`:
//! - `description`: what the case shows;
//! - `inside_macs`: source MACs of the frames that arrive on the inside port (default: the
//!   client MAC of `pcap-gen` and `synth`, 02:00:00:00:00:01); every other frame arrives on the
//!   outside port;
//! - `[policy]`: `default_tcp`, `default_udp`, `default_other` (default proxy, bypass, bypass)
//!   and `rules`, each a rule as `policy.add` takes it, in JSON;
//! - `[settings]`: `on_midstream` (bypass), `malformed` (forward), `max_embryonic` (the
//!   daemon's default), `reassembly` (true);
//! - `[expect]`: `verdicts`, one character per frame: `>` forwarded out of the outside port,
//!   `<` out of the inside port, `x` dropped (and counted), `c` consumed by the proxy, `r` held
//!   for reassembly; `sent_inside` and `sent_outside`, frames the proxy made; `drops` by
//!   reason (every reason not named must be 0); and, where given, `flows` (entries left),
//!   `flows_created`, `proxy` counters by name and `rule_flows` (flows classified by each rule
//!   id).
//!
//! A new case: a capture (`pcap-gen`, or `tcpdump -w` in the lab) and the verdicts it must get.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tollgate_core::counters::DropReason;
use tollgate_core::flow::FlowTableConfig;
use tollgate_core::pcap;
use tollgate_core::pipeline::{FrameAction, Pipeline, PipelineConfig, PortSide};
use tollgate_core::policy::{Action, CompiledPolicy, PolicyDefaults, PolicySet};
use tollgate_core::proxy::{FrameSink, MidstreamAction, ProxySettings, ProxyTable};
use tollgate_core::shard::{Dispatch, Shard};
use tollgate_core::tcp::inspect::SignatureInspector;
use tollgate_core::tcp::payload::TestBytes;
use tollgate_core::wire::ethernet::parse_mac;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    #[serde(default = "client_mac")]
    inside_macs: Vec<String>,
    #[serde(default)]
    policy: PolicyCase,
    #[serde(default)]
    settings: Settings,
    expect: Expect,
}

fn client_mac() -> Vec<String> {
    vec!["02:00:00:00:00:01".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PolicyCase {
    default_tcp: Action,
    default_udp: Action,
    default_other: Action,
    rules: Vec<String>,
}

impl Default for PolicyCase {
    fn default() -> Self {
        PolicyCase {
            default_tcp: Action::Proxy,
            default_udp: Action::Bypass,
            default_other: Action::Bypass,
            rules: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    on_midstream: MidstreamAction,
    malformed: FrameAction,
    max_embryonic: Option<usize>,
    reassembly: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            on_midstream: MidstreamAction::default(),
            malformed: FrameAction::Forward,
            max_embryonic: None,
            reassembly: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdicts: String,
    #[serde(default)]
    sent_inside: u64,
    #[serde(default)]
    sent_outside: u64,
    #[serde(default)]
    drops: BTreeMap<String, u64>,
    flows: Option<u64>,
    flows_created: Option<u64>,
    #[serde(default)]
    proxy: BTreeMap<String, u64>,
    #[serde(default)]
    rule_flows: BTreeMap<String, u64>,
}

/// The frames the proxy made, counted by the port they leave by.
#[derive(Default)]
struct Sent([u64; 2]);

impl FrameSink<TestBytes> for Sent {
    fn send(&mut self, side: PortSide, _: &[u8], _: Option<&TestBytes>) -> bool {
        self.0[side.index()] += 1;
        true
    }
}

fn shard(case: &Case) -> Shard<TestBytes> {
    let mut set = PolicySet::default();
    for rule in &case.policy.rules {
        let spec = serde_json::from_str(rule).unwrap_or_else(|e| panic!("rule {rule}: {e}"));
        set.add(spec).unwrap_or_else(|e| panic!("rule {rule}: {e}"));
    }
    let defaults = PolicyDefaults {
        tcp: case.policy.default_tcp,
        udp: case.policy.default_udp,
        other: case.policy.default_other,
    };
    let pipeline = Pipeline::new(
        PipelineConfig {
            flows: FlowTableConfig {
                capacity: 4096,
                ..FlowTableConfig::default()
            },
            malformed: case.settings.malformed,
            on_table_full: FrameAction::Forward,
            audit_new_flows: false,
            reassembly: case.settings.reassembly,
            rss: None,
            on_midstream: case.settings.on_midstream,
        },
        Arc::new(CompiledPolicy::compile(&set, defaults, 1)),
    );
    let mut settings = ProxySettings {
        on_midstream: case.settings.on_midstream,
        ..ProxySettings::default()
    };
    if let Some(max) = case.settings.max_embryonic {
        settings.max_embryonic = max;
    }
    let proxies = ProxyTable::new(
        settings,
        Arc::new(SignatureInspector::new(&[]).expect("no signatures")),
        [5; 16],
    );
    Shard::new(pipeline, proxies)
}

/// Replays one case; returns what differs from its expectations, in words.
fn replay(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(dir.join("case.toml")).expect("case.toml");
    let case: Case = toml::from_str(&text).unwrap_or_else(|e| panic!("case.toml: {e}"));
    assert!(!case.description.is_empty());
    let capture = fs::read(dir.join("input.pcap")).expect("input.pcap");
    let records = pcap::read(&capture).unwrap_or_else(|e| panic!("input.pcap: {e}"));
    let inside: Vec<[u8; 6]> = case
        .inside_macs
        .iter()
        .map(|m| parse_mac(m).unwrap_or_else(|e| panic!("inside_macs: {e}")))
        .collect();

    let mut shard = shard(&case);
    let mut sent = Sent::default();
    let mut verdicts = String::new();
    let start = records.first().map(|r| r.at).unwrap_or_default();
    for record in &records {
        let now = 1_000 + (record.at - start).as_millis() as u64;
        shard.on_timers(now, &mut sent);
        let frame = record.data.to_vec();
        let ingress = match frame.get(6..12) {
            Some(src) if inside.iter().any(|m| m == src) => PortSide::Inside,
            _ => PortSide::Outside,
        };
        let drops_before: u64 = shard.pipeline().counters.drops.iter().sum();
        verdicts.push(match shard.handle(frame, ingress, now, &mut sent) {
            Dispatch::Forward(_, PortSide::Outside) => '>',
            Dispatch::Forward(_, PortSide::Inside) => '<',
            Dispatch::Reassemble(_) => 'r',
            Dispatch::HandOff(..) => 'h',
            Dispatch::Done => {
                let drops: u64 = shard.pipeline().counters.drops.iter().sum();
                if drops > drops_before {
                    'x'
                } else {
                    'c'
                }
            }
        });
    }

    let expect = &case.expect;
    let mut wrong = Vec::new();
    if verdicts != expect.verdicts {
        wrong.push(format!(
            "verdicts: expected {:?}, found {verdicts:?}",
            expect.verdicts
        ));
    }
    let mut check = |what: String, expected: u64, found: u64| {
        if expected != found {
            wrong.push(format!("{what}: expected {expected}, found {found}"));
        }
    };
    check("sent_inside".into(), expect.sent_inside, sent.0[0]);
    check("sent_outside".into(), expect.sent_outside, sent.0[1]);
    let counters = shard.pipeline().counters.clone();
    for name in expect.drops.keys() {
        assert!(
            DropReason::ALL.iter().any(|r| r.name() == name),
            "no drop reason {name}"
        );
    }
    for reason in DropReason::ALL {
        let expected = expect.drops.get(reason.name()).copied().unwrap_or(0);
        check(
            format!("drops.{}", reason.name()),
            expected,
            counters.drops[reason.index()],
        );
    }
    if let Some(flows) = expect.flows {
        check("flows".into(), flows, shard.pipeline().flows().len() as u64);
    }
    if let Some(created) = expect.flows_created {
        check("flows_created".into(), created, counters.flows_created);
    }
    let proxy = serde_json::to_value(shard.proxies_mut().counters()).expect("counters");
    for (name, expected) in &expect.proxy {
        let found = proxy
            .get(name)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("no proxy counter {name}"));
        check(format!("proxy.{name}"), *expected, found);
    }
    for (rule, expected) in &expect.rule_flows {
        let id: usize = rule.parse().unwrap_or_else(|_| panic!("rule id {rule}"));
        let hits = shard.pipeline().hits();
        let found = hits.get(id).map_or(0, |h| h.flows);
        check(format!("rule {rule} flows"), *expected, found);
    }
    wrong
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/replay")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_case_gets_the_verdicts_and_counters_it_expects() {
    let cases = cases();
    assert!(cases.len() >= 6, "the cases are missing: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let wrong = replay(dir);
        if !wrong.is_empty() {
            failures.push(format!("{}:\n  {}", dir.display(), wrong.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
