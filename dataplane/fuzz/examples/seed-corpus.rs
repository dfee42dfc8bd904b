//! Writes the seed corpora: `corpus/<target>/<name>` for every seed of `tollgate_fuzz::seeds`.
//! Run from anywhere: `cargo run --manifest-path dataplane/fuzz/Cargo.toml --example seed-corpus`.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, bytes) in tollgate_fuzz::seeds::all() {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
    }
    println!("seeds written under {}", corpus.display());
    Ok(())
}
