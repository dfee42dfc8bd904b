//! Runs inputs through a target's checks without libFuzzer, with a plain backtrace on failure:
//! `cargo run --manifest-path dataplane/fuzz/Cargo.toml --example replay -- TARGET FILE...`. With
//! `TOLLGATE_FUZZ_TRACE=1`, `tcp_engine` prints every segment each way.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, files)) = args.split_first().filter(|(_, files)| !files.is_empty()) else {
        eprintln!("usage: replay parse_frame|tcp_engine|detect|control_codec FILE...");
        return ExitCode::from(2);
    };
    for file in files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(e) => {
                eprintln!("replay: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match target.as_str() {
            "parse_frame" => tollgate_fuzz::frames::check(&data),
            "tcp_engine" => println!("{:?}", tollgate_fuzz::engine::run(&data)),
            "detect" => println!("{:?}", tollgate_fuzz::detect::check(&data)),
            "control_codec" => tollgate_fuzz::control::check(&data),
            other => {
                eprintln!("replay: no target {other}");
                return ExitCode::from(2);
            }
        }
        eprintln!("{file}: passed");
    }
    ExitCode::SUCCESS
}
