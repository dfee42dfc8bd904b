# shellcheck shell=bash
# Sourced by the scripts that run cargo. Not executable on its own.

# The workspace's minimum Rust (Cargo.toml: rust-version).
TG_MIN_RUST=1.82

# find_cargo: make sure cargo is on PATH. sudo resets PATH, which drops ~/.cargo/bin,
# so look in the usual rustup places too (including the invoking user's home under sudo).
# Returns 1 if there is no cargo anywhere.
find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local dir home
    for dir in "${CARGO_HOME:+$CARGO_HOME/bin}" "${HOME:+$HOME/.cargo/bin}" /root/.cargo/bin; do
        if [ -n "$dir" ] && [ -x "$dir/cargo" ]; then
            PATH="$dir:$PATH"
            export PATH
            return 0
        fi
    done
    if [ -n "${SUDO_USER:-}" ]; then
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            PATH="$home/.cargo/bin:$PATH"
            # rustup's proxies find their toolchains through these.
            CARGO_HOME=${CARGO_HOME:-$home/.cargo}
            RUSTUP_HOME=${RUSTUP_HOME:-$home/.rustup}
            export PATH CARGO_HOME RUSTUP_HOME
            return 0
        fi
    fi
    return 1
}

cargo_missing_hint() {
    echo "cargo not found: install Rust $TG_MIN_RUST or newer with rustup (https://rustup.rs), then re-run;" \
        "Debian's own cargo package is too old for this workspace"
}

require_cargo() {
    find_cargo || die "$(cargo_missing_hint)"
}
