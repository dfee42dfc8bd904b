//! The policy state file: the policy set saved after every change and restored
//! at start-up.
//!
//! ```text
//! {
//!   "format": 1,
//!   "saved_at_unix": 1767225600,
//!   "policy": { "rules": [ ... ], "next_id": 3 }
//! }
//! ```
//!
//! Pretty-printed JSON, so operators can read, diff and (carefully) edit it.
//! A save never leaves a torn file: it writes a temporary file in the same
//! directory, fsyncs it, renames it over the state file and fsyncs the
//! directory, so after a crash or `kill -9` the file holds the old policy or the
//! new one. A state file that cannot be read back is an error that stops
//! start-up; it is never replaced by an empty policy, since that would silently
//! drop every bypass rule and stall the tunnels they protect.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::policy::{PolicyError, PolicySet};

/// The state file format this release writes and reads.
pub const FORMAT: u64 = 1;
/// The state file's mode: the daemon writes, its group (operators) may read.
pub const MODE: u32 = 0o640;

const REFUSE: &str =
    "tollgate will not start with it and will not overwrite it: fix it or move it away";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read the policy state file {}: {source}; {}", path.display(), REFUSE)]
    Read { path: PathBuf, source: io::Error },
    #[error("the policy state file {} is corrupt: {source}; {}", path.display(), REFUSE)]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "the policy state file {} has format {found}, but this tollgate reads format {} only (written by another release?); {}",
        path.display(), FORMAT, REFUSE
    )]
    UnknownFormat { path: PathBuf, found: u64 },
    #[error("the policy state file {} holds an invalid policy: {source}; {}", path.display(), REFUSE)]
    InvalidPolicy { path: PathBuf, source: PolicyError },
    #[error("cannot save the policy to {}: {step}: {source}; the state file is unchanged", path.display())]
    Write {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error(
        "saved the policy to {}, but could not fsync its directory: {source}; the new policy may not survive a power cut",
        path.display()
    )]
    SyncDirectory { path: PathBuf, source: io::Error },
}

#[derive(Serialize)]
struct StateOut<'a> {
    format: u64,
    saved_at_unix: u64,
    policy: &'a PolicySet,
}

/// Read first and on its own, so that a file from a newer release is reported
/// as such rather than as whatever field it added.
#[derive(Deserialize)]
struct FormatProbe {
    format: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateIn {
    #[allow(dead_code)]
    format: u64,
    #[allow(dead_code)]
    saved_at_unix: u64,
    policy: PolicySet,
}

/// Distinguishes temporary files of concurrent saves within one process.
static SAVE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Saves `set` to `path` atomically, with mode 0640.
pub fn save(path: &Path, set: &PolicySet) -> Result<(), PersistError> {
    let fail = |step: &'static str| {
        move |source: io::Error| PersistError::Write {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        fail("the path does not end in a UTF-8 file name")(io::ErrorKind::InvalidInput.into())
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    remove_stale_temporaries(dir, name);

    let mut json = serde_json::to_vec_pretty(&StateOut {
        format: FORMAT,
        saved_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        policy: set,
    })
    .map_err(|e| fail("serialise")(e.into()))?;
    json.push(b'\n');

    let tmp = dir.join(format!(
        "{}{}.{}",
        temporary_prefix(name),
        std::process::id(),
        SAVE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(&tmp)
            .map_err(fail("create the temporary file"))?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(Permissions::from_mode(MODE))
            .map_err(fail("set the temporary file's mode"))?;
        file.write_all(&json)
            .map_err(fail("write the temporary file"))?;
        file.sync_all().map_err(fail("fsync the temporary file"))?;
        fs::rename(&tmp, path).map_err(fail("rename the temporary file over it"))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Makes the rename itself durable; until then a power cut may bring back
    // the old file, which is still a whole one.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PersistError::SyncDirectory {
            path: path.to_owned(),
            source,
        })
}

/// Loads the policy set from `path`: `Ok(None)` if there is no such file.
pub fn load(path: &Path) -> Result<Option<PolicySet>, PersistError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let corrupt = |source| PersistError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let probe: FormatProbe = serde_json::from_str(&text).map_err(corrupt)?;
    if probe.format != FORMAT {
        return Err(PersistError::UnknownFormat {
            path: path.to_owned(),
            found: probe.format,
        });
    }
    let state: StateIn = serde_json::from_str(&text).map_err(corrupt)?;
    check_policy(&state.policy).map_err(|source| PersistError::InvalidPolicy {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(state.policy))
}

/// What a set built through `PolicySet`'s methods always satisfies, but a
/// hand-edited file may not.
fn check_policy(set: &PolicySet) -> Result<(), PolicyError> {
    let specs: Vec<_> = set.rules.iter().map(|r| r.spec.clone()).collect();
    PolicySet::check(&specs)?;
    let mut ids: Vec<(u32, usize)> = set
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, i + 1))
        .collect();
    ids.sort_unstable();
    for pair in ids.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(PolicyError::Invalid {
                field: format!("rule {}: id", pair[1].1),
                message: format!(
                    "{} is also the id of rule {}: ids must be unique",
                    pair[0].0, pair[0].1
                ),
            });
        }
    }
    if let Some(&(id, position)) = ids.last() {
        if id >= set.next_id {
            return Err(PolicyError::Invalid {
                field: format!("rule {position}: id"),
                message: format!(
                    "{id} is not below next_id {}: new rules would reuse ids",
                    set.next_id
                ),
            });
        }
    }
    Ok(())
}

fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp.")
}

/// A save killed before its rename leaves its temporary file behind; the next
/// save removes those of processes that no longer exist, so they cannot pile
/// up. Best effort: a leftover is untidy, not harmful.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = temporary_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn process_exists(pid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    // Signal 0 checks existence; EPERM means it exists under another user.
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}
