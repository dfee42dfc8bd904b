//! The daemon's command line as an operator meets it: `--help`, and one-line
//! errors that name what is wrong. `--check` stops before DPDK, so these run
//! without privileges or devices.

use std::process::Command;

fn tollgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_flag() {
    let (code, out, _) = tollgate(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--inside",
        "--outside",
        "--cores",
        "--idle-sleep-us",
        "--flow-capacity",
        "--on-table-full",
        "--tcp-timeout",
        "--udp-timeout",
        "--malformed",
        "--mbufs",
        "--no-huge",
        "--memory",
        "--file-prefix",
        "--eal-arg",
        "--pid-file",
        "--stats-file",
        "--stats-interval",
        "--control-socket",
        "--control-group",
        "--state-file",
        "--check",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}");
    }
    // When an idle worker sleeps: after IDLE_POLLS_BEFORE_SLEEP empty polls, not between any two.
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("once 1024 polls in a row have found nothing"),
        "{out}"
    );
}

#[test]
fn a_valid_configuration_checks_out() {
    let (code, out, err) = tollgate(&[
        "--inside",
        "net_ring0",
        "--outside",
        "net_ring1",
        "--cores",
        "0",
        "--check",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
}

#[test]
fn configuration_errors_are_one_line_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_type = dir.join("bad-type.toml");
    std::fs::write(
        &bad_type,
        "[ports]\ninside = \"net_ring0\"\noutside = \"net_ring1\"\n[flows]\ncapacity = -5\n",
    )
    .unwrap();
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[flows]\ncapasity = 5\n").unwrap();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--check".into()], "ports.inside"),
        (
            vec![
                "--inside".into(),
                "net_ring0".into(),
                "--outside".into(),
                "net_ring0".into(),
                "--check".into(),
            ],
            "same device",
        ),
        (
            vec![
                "-c".into(),
                bad_type.display().to_string(),
                "--check".into(),
            ],
            "flows.capacity",
        ),
        (
            vec!["-c".into(), unknown.display().to_string(), "--check".into()],
            "capasity",
        ),
        (
            vec![
                "-c".into(),
                "/nonexistent/tollgate.toml".into(),
                "--check".into(),
            ],
            "cannot read",
        ),
        (
            vec![
                "--inside".into(),
                "net_ring0".into(),
                "--outside".into(),
                "net_ring1".into(),
                "--no-huge".into(),
                "--check".into(),
            ],
            "eal.memory_mb",
        ),
        (
            vec![
                "--inside".into(),
                "net_ring0".into(),
                "--outside".into(),
                "net_ring1".into(),
                "--cores".into(),
                "0,0".into(),
                "--check".into(),
            ],
            "workers.cores",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = tollgate(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
    }
    let (code, _, err) = tollgate(&["--cores", "3-1", "--check"]);
    assert_eq!(code, 2, "clap rejects a bad flag value: {err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// What a port or the control group names must exist on the host: `--check` says which and
/// what to do, in one line, before DPDK would fail on it less clearly.
#[test]
fn check_refuses_interfaces_pci_devices_and_groups_the_host_lacks() {
    let ports = |inside: &str, outside: &str| -> Vec<String> {
        ["--inside", inside, "--outside", outside, "--cores", "0"]
            .map(String::from)
            .to_vec()
    };
    let mut group = ports("net_ring0", "net_ring1");
    group.extend(["--control-group".into(), "tg-no-such-group".into()]);
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (
            ports("net_af_packet0,iface=nosuchif0", "net_ring1"),
            &[
                "ports.inside",
                "\"nosuchif0\"",
                "/sys/class/net/nosuchif0",
                "ip link show",
            ],
        ),
        (
            ports("net_ring0", "net_pcap1,rx_iface=lo,tx_iface=nosuchif1"),
            &["ports.outside", "tx_iface=nosuchif1", "ip link show"],
        ),
        (
            ports("ffff:ff:1f.7", "net_ring1"),
            &[
                "ports.inside",
                "no PCI device ffff:ff:1f.7",
                "scripts/host status",
            ],
        ),
        (
            ports("net_ring0", "FF:1F.7"),
            &["ports.outside", "0000:ff:1f.7", "lspci -D"],
        ),
        (group, &["control.group", "tg-no-such-group", "groupadd"]),
    ];
    for (mut args, needles) in cases {
        args.push("--check".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = tollgate(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
        }
    }
    // What exists passes: the loopback interface, root's group, and a tap device's iface,
    // which DPDK creates.
    let mut fine = ports("net_af_packet0,iface=lo", "net_tap1,iface=tg-new-tap");
    fine.extend(["--control-group".into(), "root".into(), "--check".into()]);
    let fine: Vec<&str> = fine.iter().map(String::as_str).collect();
    let (code, out, err) = tollgate(&fine);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
}
