# Shared by scripts/run and scripts/test (sourced, not run).

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Makes `cargo` available: on PATH, in ~/.cargo/bin, or installed with rustup
# (Debian's own cargo is too old for cistern's dependencies).
ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return
    if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl build-essential >/dev/null
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
}

# Installs Python packages for the client tests. Debian's own Python refuses
# installs outside a virtual environment (PEP 668); these are test tools, so
# the override is taken there.
pip_install() {
    python3 -m pip install --quiet "$@" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "$@"
}
