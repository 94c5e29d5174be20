# Shared settings for the testbed scripts. Sourced, not executed.
set -euo pipefail

KUBERNETES_VERSION=1.20.2
TESTBED_CACHE="${KAPPA_TESTBED_CACHE:-$HOME/.cache/kappa-testbed}"
K8S_BIN="$TESTBED_CACHE/kubernetes-$KUBERNETES_VERSION/bin"
# Runtime state of one running testbed (certificates, data, logs, pids).
TESTBED_STATE="${KAPPA_TESTBED_STATE:-${TMPDIR:-/tmp}/kappa-testbed}"

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
