//! The policy state file: round trips, refusal of corrupt files (which are
//! left as they are), no leftover temporaries, and atomicity under `kill -9`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_control::persist::{load, save, PersistError};
use tollgate_control::policy::{Action, PolicySet, RuleSpec, StallAction};

/// A directory of its own per test, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tollgate-persist-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("policy.json")
    }

    fn temporaries(&self) -> Vec<String> {
        fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "policy.json")
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A policy set of `n` varied rules; `n` also seeds the contents so sets of
/// different sizes differ throughout, not only in length.
fn policy(n: u32) -> PolicySet {
    let mut set = PolicySet::default();
    for i in 0..n {
        let json = match i % 4 {
            0 => format!(
                r#"{{"match":{{"proto":"tcp","dst_port":{},"dst":"198.18.{}.0/24"}},"action":"bypass","name":"ctcp-{n}-{i}","comment":"site {i} of {n}"}}"#,
                10_000 + i % 1_000,
                i % 256
            ),
            1 => format!(
                r#"{{"match":{{"proto":"udp","src":"2001:2:{:x}::/48","dst_port":"4500-4510"}},"action":"proxy","idle_timeout_secs":{}}}"#,
                i,
                60 + n
            ),
            2 => format!(
                r#"{{"match":{{"vlan":{},"ingress":"outside"}},"action":"drop"}}"#,
                1 + i % 4000
            ),
            _ => format!(
                r#"{{"match":{{"proto":"47","dst":"10.{}.0.0/16"}},"action":"bypass","name":"gre {n}"}}"#,
                i % 256
            ),
        };
        set.add(serde_json::from_str::<RuleSpec>(&json).unwrap())
            .unwrap();
    }
    set
}

fn load_error(path: &Path) -> String {
    match load(path) {
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "not one line: {message}");
            assert!(
                message.contains(&path.display().to_string()),
                "does not name the file: {message}"
            );
            assert!(
                message.contains("will not start") && message.contains("will not overwrite"),
                "{message}"
            );
            message
        }
        Ok(set) => panic!("{} loaded: {set:?}", path.display()),
    }
}

#[test]
fn round_trip_keeps_everything_and_mode_0640() {
    let dir = TempDir::new("round-trip");
    let path = dir.file();
    let mut set = policy(50);
    set.delete(set.rules[3].id).unwrap();
    save(&path, &set).unwrap();
    assert_eq!(load(&path).unwrap(), Some(set.clone()));
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // Readable by operators: pretty-printed, versioned, dated.
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{\n  \"format\": 1,\n  \"saved_at_unix\": "),
        "{text:.80}"
    );
    assert!(text.contains("\"name\": \"ctcp-50-0\""));

    // Overwriting works and ids keep counting from where they were.
    let mut next = load(&path).unwrap().unwrap();
    let id = next
        .add(serde_json::from_str(r#"{"action":"drop"}"#).unwrap())
        .unwrap();
    assert_eq!(id, set.next_id);
    save(&path, &next).unwrap();
    assert_eq!(load(&path).unwrap(), Some(next));

    save(&path, &PolicySet::default()).unwrap();
    assert_eq!(load(&path).unwrap(), Some(PolicySet::default()));
    assert!(dir.temporaries().is_empty(), "{:?}", dir.temporaries());
}

/// A state file written before rules had `on_stall` loads as rules without
/// one (the daemon's default), and one with it keeps it.
#[test]
fn files_from_before_on_stall_still_load() {
    let dir = TempDir::new("before-on-stall");
    let path = dir.file();
    fs::write(
        &path,
        r#"{
  "format": 1,
  "saved_at_unix": 1767225600,
  "policy": {
    "rules": [
      {"id": 1, "match": {"proto": "tcp", "dst_port": "10000"}, "action": "bypass", "name": "ctcp"},
      {"id": 4, "match": {"proto": "tcp"}, "action": "proxy", "idle_timeout_secs": 600}
    ],
    "next_id": 5
  }
}
"#,
    )
    .unwrap();
    let set = load(&path).unwrap().unwrap();
    assert_eq!(set.rules.len(), 2);
    assert!(set.rules.iter().all(|r| r.spec.on_stall.is_none()));
    assert_eq!(set.rules[1].spec.action, Action::Proxy);
    assert_eq!(set.next_id, 5);

    let mut next = set.clone();
    next.rules[1].spec.on_stall = Some(StallAction::Reset);
    save(&path, &next).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"on_stall\": \"reset\""), "{text}");
    assert_eq!(text.matches("on_stall").count(), 1, "{text}");
    assert_eq!(load(&path).unwrap(), Some(next));
}

#[test]
fn absent_file_is_none() {
    let dir = TempDir::new("absent");
    assert!(load(&dir.file()).unwrap().is_none());
}

#[test]
fn corrupt_files_are_refused_and_left_untouched() {
    let dir = TempDir::new("corrupt");
    let path = dir.file();
    save(&path, &policy(20)).unwrap();
    let good = fs::read_to_string(&path).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_string(),
            "EOF while parsing",
        ),
        ("empty", String::new(), "line 1 column 0"),
        (
            "not json",
            "policy: []\n".into(),
            "expected value at line 1 column 1",
        ),
        (
            "wrong format",
            good.replacen("\"format\": 1", "\"format\": 2", 1),
            "has format 2, but this tollgate reads format 1",
        ),
        (
            "no format",
            good.replacen("\"format\": 1,", "", 1),
            "missing field `format`",
        ),
        (
            "unknown field",
            good.replacen("\"format\": 1,", "\"format\": 1, \"extra\": true,", 1),
            "unknown field `extra`",
        ),
        (
            "invalid rule",
            good.replacen("\"vlan\": 3\n", "\"vlan\": 5000\n", 1),
            "invalid policy: rule 3 (unnamed): match.vlan: 5000 is not a VLAN id",
        ),
        (
            "bad prefix",
            good.replacen("198.18.4.0/24", "198.18.4.1/24", 1),
            "has host bits set",
        ),
        (
            "duplicate id",
            good.replacen("\"id\": 2,", "\"id\": 1,", 1),
            "rule 2: id: 1 is also the id of rule 1",
        ),
        (
            "id past next_id",
            good.replacen("\"next_id\": 21", "\"next_id\": 5", 1),
            "is not below next_id 5",
        ),
    ];
    for (what, text, expect) in cases {
        assert_ne!(text, good, "{what}: the corruption did not apply");
        fs::write(&path, &text).unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        let message = load_error(&path);
        assert!(message.contains(expect), "{what}: {message}");
        // Line and column for anything the parser rejected.
        if !matches!(
            what,
            "wrong format" | "invalid rule" | "duplicate id" | "id past next_id"
        ) {
            assert!(
                message.contains(" line ") && message.contains(" column "),
                "{what}: {message}"
            );
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "{what}: the file changed"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().modified().unwrap(),
            before,
            "{what}"
        );
    }
}

#[test]
fn unreadable_file_is_an_error() {
    let dir = TempDir::new("unreadable");
    let path = dir.file();
    // A directory where the file should be: unreadable for root as well.
    fs::create_dir(&path).unwrap();
    let message = load_error(&path);
    assert!(
        message.starts_with("cannot read the policy state file"),
        "{message}"
    );
    assert!(matches!(load(&path), Err(PersistError::Read { .. })));
}

#[test]
fn failed_save_leaves_the_old_file_and_no_temporary() {
    let dir = TempDir::new("failed-save");
    let path = dir.file();
    let old = policy(10);
    save(&path, &old).unwrap();
    // The rename fails when the target is a non-empty directory.
    let blocked = dir.0.join("blocked");
    fs::create_dir_all(blocked.join("inside")).unwrap();
    let e = save(&blocked, &policy(3)).unwrap_err();
    assert!(e.to_string().contains("rename the temporary file"), "{e}");
    assert_eq!(load(&path).unwrap(), Some(old));
    assert_eq!(dir.temporaries(), vec!["blocked".to_string()]);
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed() {
    let dir = TempDir::new("stale");
    let path = dir.file();
    // Left by a save killed before its rename; pid 2^22+1 is above Linux's
    // pid_max limit, so that process cannot exist.
    fs::write(dir.0.join(".policy.json.tmp.4194305.0"), "{\"form").unwrap();
    // Others' files are not touched.
    fs::write(dir.0.join(".other.json.tmp.4194305.0"), "").unwrap();
    save(&path, &policy(2)).unwrap();
    assert_eq!(
        dir.temporaries(),
        vec![".other.json.tmp.4194305.0".to_string()]
    );
}

const SAVE_LOOP: &str = "TOLLGATE_TEST_SAVE_LOOP";
const SMALL: u32 = 2_000;
const LARGE: u32 = 3_000;
const READY: &str = "save loop: saving";

/// Not a test on its own: the child process `kill_9_during_save_*` starts and
/// kills. Does nothing unless the variable names a state file.
#[test]
fn save_loop_child() {
    let Some(path) = std::env::var_os(SAVE_LOOP) else {
        return;
    };
    let path = PathBuf::from(path);
    let sets = [policy(SMALL), policy(LARGE)];
    // Tells the parent that saving starts now, so that its kills land in
    // saves rather than in this process's start-up.
    let mut out = std::io::stdout();
    writeln!(out, "{READY}").unwrap();
    out.flush().unwrap();
    loop {
        for (set, size) in sets.iter().zip([SMALL, LARGE]) {
            save(&path, set).unwrap();
            writeln!(out, "saved {size}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill_9_during_save_leaves_the_old_or_the_new_policy() {
    let dir = TempDir::new("kill");
    let path = dir.file();
    let small = policy(SMALL);
    let large = policy(LARGE);
    save(&path, &small).unwrap();
    let bytes = fs::metadata(&path).unwrap().len();

    let mut state = 0x5EED_u64;
    let mut seen = [0u32; 2];
    let mut mid_save = 0;
    for round in 0..40 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "save_loop_child",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(SAVE_LOOP, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.ends_with(READY))),
            "round {round}: the child never started saving"
        );
        // Killed only after it has saved (the larger set in even rounds, the smaller in odd
        // ones), however slow its saves: the state file has been replaced at least once.
        let saved = format!("saved {}", if round % 2 == 0 { LARGE } else { SMALL });
        assert!(
            lines.any(|l| l.is_ok_and(|l| l == saved)),
            "round {round}: the child never reported '{saved}'"
        );
        // SplitMix64 step: a delay of 0-60 ms, a few saves' worth on an idle machine, so
        // kills land anywhere in a save, or between two.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        sleep(Duration::from_micros((z ^ (z >> 31)) % 60_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let loaded = match load(&path) {
            Ok(Some(set)) => set,
            other => panic!("round {round}: after kill -9 the state file gave {other:?}"),
        };
        if loaded == small {
            seen[0] += 1;
        } else if loaded == large {
            seen[1] += 1;
        } else {
            panic!(
                "round {round}: the state file holds neither policy ({} rules)",
                loaded.rules.len()
            );
        }
        // At most the killed child's own temporary is left; the next save
        // clears it.
        let temporaries = dir.temporaries();
        assert!(temporaries.len() <= 1, "round {round}: {temporaries:?}");
        mid_save += temporaries.len() as u32;
    }
    eprintln!(
        "kills: {} left the smaller set, {} the larger, {mid_save} interrupted a write",
        seen[0], seen[1]
    );
    // Which set each kill left, and how many kills cut a write short, depend on how fast the
    // saves ran: figures, not checks.
    eprintln!("state file of about {bytes} bytes");
    save(&path, &small).unwrap();
    assert!(dir.temporaries().is_empty(), "{:?}", dir.temporaries());
}
