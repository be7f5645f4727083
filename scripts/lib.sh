# Shared helpers for scripts/demo and scripts/test. Sourced, not run.
# Everything here is idempotent: a second run on the same machine installs nothing new.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"

# Debian packages the product needs at run time (codec and audio libraries).
RUNTIME_APT="python3 python3-venv libopus0 libportaudio2"
# What the demo needs on top: espeak-ng speaks its clip (it synthesizes one without).
DEMO_APT="espeak-ng"
# What the tests need: the real peers and tools they start themselves.
TEST_APT="kamailio kamailio-tls-modules sip-tester dnsmasq-base coturn baresip iptables iproute2 \
nftables pulseaudio libasound2-plugins espeak-ng sox openssl tmux procps librsvg2-bin"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to install: ${missing[*]}" >&2
        return 1
    fi
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts some services on install; the tests start their own on loopback ports.
    for svc in kamailio coturn dnsmasq; do
        if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    done
}

make_venv() {
    # $1: pip extras, e.g. "dev" or "" for runtime only.
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    if [ -n "$extras" ]; then
        "$VENV/bin/python" -m pip install -q -e "$REPO[$extras]"
    else
        "$VENV/bin/python" -m pip install -q -e "$REPO"
    fi
}
