//! The corpora replayed through the targets' checks, and the seeds checked to be what they say.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tollgate_core::detect::{Detection, IpsecFraming};
use tollgate_core::tcp::proxy::{OnStall, ProxyEvent, ProxyState};

use crate::seeds;

const TARGETS: [&str; 5] = [
    "parse_frame",
    "shard",
    "tcp_engine",
    "detect",
    "control_codec",
];

fn run_target(target: &str, data: &[u8]) {
    match target {
        "parse_frame" => crate::frames::check(data),
        "shard" => crate::shard::run(data),
        "tcp_engine" => {
            crate::engine::run(data);
        }
        "detect" => {
            crate::detect::check(data);
        }
        "control_codec" => crate::control::check(data),
        other => panic!("no target {other}"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn the_checked_in_seeds_are_the_generated_ones() {
    let mut expected: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for (target, name, bytes) in seeds::all() {
        let path = root().join("corpus").join(target).join(name);
        assert!(
            expected.insert(path, bytes).is_none(),
            "two seeds named {target}/{name}"
        );
    }
    let mut found = BTreeMap::new();
    for target in TARGETS {
        for path in files(&root().join("corpus").join(target)) {
            let bytes = fs::read(&path).expect("a readable seed");
            found.insert(path, bytes);
        }
    }
    assert!(
        found == expected,
        "corpus/ differs from the seeds: run `cargo run --example seed-corpus` in dataplane/fuzz \
         (and remove seeds no longer generated)"
    );
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total < 32 * 1024, "the seeds take {total} bytes");
}

#[test]
fn every_seed_and_regression_passes_its_target() {
    for target in TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in files(&root().join(kind).join(target)) {
                let bytes = fs::read(&path).expect("a readable input");
                eprintln!("{}", path.display());
                run_target(target, &bytes);
            }
        }
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    seeds::all()
        .into_iter()
        .find(|(t, n, _)| *t == target && *n == name)
        .map(|(_, _, bytes)| bytes)
        .unwrap_or_else(|| panic!("no seed {target}/{name}"))
}

#[test]
fn a_normal_connection_relays_both_ways_and_closes() {
    let outcome = crate::engine::run(&seed("tcp_engine", "handshake-data-fin"));
    assert!(
        outcome.events.contains(&ProxyEvent::Established),
        "{outcome:?}"
    );
    assert_eq!(outcome.relayed, [512, 100], "{outcome:?}");
    assert_eq!(outcome.final_state, Some(ProxyState::Closed), "{outcome:?}");
}

#[test]
fn a_reordered_segment_is_relayed_once_the_hole_fills() {
    let outcome = crate::engine::run(&seed("tcp_engine", "reordered-then-filled"));
    assert_eq!(outcome.relayed[0], 1_024, "{outcome:?}");
    assert_eq!(outcome.final_state, Some(ProxyState::Relaying));
}

#[test]
fn an_unfilled_hole_is_a_stall_handed_over() {
    let outcome = crate::engine::run(&seed("tcp_engine", "stall-bypass"));
    assert!(
        outcome.events.contains(&ProxyEvent::Stalled {
            leg: tollgate_core::tcp::proxy::Leg::Client,
            action: OnStall::Bypass
        }),
        "{outcome:?}"
    );
    assert!(outcome.handed_over);
    assert_eq!(outcome.final_state, Some(ProxyState::PassThrough));
    // The first chunk went through in order, the four above the holes with the flush.
    assert_eq!(outcome.relayed[0], 5 * 512, "{outcome:?}");
}

#[test]
fn the_other_engine_seeds_reach_their_paths() {
    let refused = crate::engine::run(&seed("tcp_engine", "refused"));
    assert!(refused.events.contains(&ProxyEvent::Refused), "{refused:?}");

    let converted = crate::engine::run(&seed("tcp_engine", "converted"));
    assert!(converted.handed_over, "{converted:?}");
    assert_eq!(converted.final_state, Some(ProxyState::PassThrough));

    let probed = crate::engine::run(&seed("tcp_engine", "zero-window"));
    assert_eq!(probed.relayed[0], 6 * 512, "{probed:?}");

    let inspected = crate::engine::run(&seed("tcp_engine", "no-options-inspected"));
    assert!(
        inspected
            .events
            .iter()
            .any(|event| matches!(event, ProxyEvent::InspectorReset { .. })),
        "{inspected:?}"
    );

    let cookie = crate::engine::run(&seed("tcp_engine", "cookie-stall-bypass"));
    assert!(cookie.cookie && cookie.handed_over, "{cookie:?}");
    assert_eq!(cookie.relayed, [512, 400], "{cookie:?}");

    let reset = crate::engine::run(&seed("tcp_engine", "syn-retransmit-reset"));
    assert!(
        reset.events.contains(&ProxyEvent::Reset {
            leg: tollgate_core::tcp::proxy::Leg::Client
        }),
        "{reset:?}"
    );
}

#[test]
fn the_detect_seeds_decide_as_named() {
    let expect = [
        ("ctcp-ike", Detection::IpsecOverTcp(IpsecFraming::CtcpIke)),
        (
            "rfc8229-split-prefix",
            Detection::IpsecOverTcp(IpsecFraming::Rfc8229),
        ),
        (
            "framed-ike",
            Detection::IpsecOverTcp(IpsecFraming::FramedIke),
        ),
        ("ctcp-esp", Detection::IpsecOverTcp(IpsecFraming::CtcpEsp)),
        (
            "framed-esp",
            Detection::IpsecOverTcp(IpsecFraming::FramedEsp),
        ),
        ("tls", Detection::NotIpsec),
        ("http", Detection::NotIpsec),
    ];
    for (name, detection) in expect {
        assert_eq!(
            crate::detect::check(&seed("detect", name)),
            Some(detection),
            "{name}"
        );
    }
}

#[test]
fn the_frame_seeds_parse() {
    for (target, name, bytes) in seeds::all() {
        if target == "parse_frame" {
            assert!(
                tollgate_core::wire::parse_frame(&bytes).is_ok(),
                "{name} does not parse"
            );
        }
    }
}
