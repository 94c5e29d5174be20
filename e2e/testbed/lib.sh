# Shared settings for the testbed scripts. Sourced, not executed.
set -euo pipefail

KUBERNETES_VERSION=1.20.2
TESTBED_CACHE="${KAPPA_TESTBED_CACHE:-$HOME/.cache/kappa-testbed}"
K8S_BIN="$TESTBED_CACHE/kubernetes-$KUBERNETES_VERSION/bin"
K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
TANSU_VERSION=0.6.0
TANSU_HOME="$TESTBED_CACHE/tansu-$TANSU_VERSION"
FLINK_VERSION=2.3.0
FLINK_HOME="$TESTBED_CACHE/flink-$FLINK_VERSION"
# Runtime state of one running testbed (certificates, data, logs, pids).
TESTBED_STATE="${KAPPA_TESTBED_STATE:-${TMPDIR:-/tmp}/kappa-testbed}"
NODE_NAME=kappa-node
# Services of a control plane without a node.
SERVICE_CIDR=10.0.0.0/24
KUBERNETES_SERVICE_IP=10.0.0.1
# Each testbed with a node owns a slot N (0-15), recorded in NODE_SLOTS/N and
# in its state as node-slot, and with it a network of its own: a network
# namespace where containerd, the kubelet, kube-proxy and DNS run (so their
# bridge, iptables rules and DNS address are not the machine's), joined to
# the host by a link. Several testbeds with nodes run on one machine at once.
NODE_SLOTS="$TESTBED_CACHE/node-slots"
NODE_SLOT_COUNT=16
node_network() { # N: the names and addresses of slot N
  NODE_SLOT="$1"
  NODE_NETNS="kappa-node-$1"
  # The host's end of the link and its address, where pods reach the host:
  # the API server, and the brokers, Flink and Prometheus run on the host.
  NODE_LINK="kappa$1"
  HOST_IP="10.243.$1.1"
  # The node's end of the link, inside the namespace.
  UPLINK_IP="10.243.$1.2"
  # The pods' bridge, inside the namespace; the kubelet and DNS listen on
  # its gateway address.
  NODE_BRIDGE=kappa0
  NODE_IP="10.244.$1.1"
  POD_CIDR="10.244.$1.0/24"
  SERVICE_CIDR="10.0.$1.0/24"
  KUBERNETES_SERVICE_IP="10.0.$1.1"
  # Pods' cgroups, apart from another node's (a kubelet removes pod cgroups
  # it does not know under its root).
  CGROUP_ROOT="/kappa-node-$1"
  # A mount namespace the node's services share, where /var/log/pods (a
  # fixed path in kubelet 1.20) is the node's own: a kubelet deletes the
  # log folders of pods it does not know there. The host's mounts show
  # through; the kubelet's and containerd's stay inside.
  NODE_MNTNS="/run/kappa-testbed/mnt-$1"
  IN_NODE=(nsenter "--net=/var/run/netns/$NODE_NETNS" "--mount=$NODE_MNTNS")
}
if [ -f "$TESTBED_STATE/node-slot" ]; then
  node_network "$(cat "$TESTBED_STATE/node-slot")"
fi

# The address at which both the host and the node's pods reach a service
# the testbed runs on the host: the host's end of the node's link when this
# testbed has a node, else loopback.
host_address() {
  if [ -n "${NODE_LINK:-}" ] && ip link show "$NODE_LINK" >/dev/null 2>&1; then
    echo "$HOST_IP"
  else
    echo 127.0.0.1
  fi
}

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get as root, one at a time: dpkg refuses a second run while one holds
# its lock, and e2e/testbed/prepare runs the install scripts side by side.
apt_get() {
  mkdir -p "$TESTBED_CACHE"
  (flock 8 && as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@") 8>"$TESTBED_CACHE/apt.lock"
}

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt_get update -qq; apt_updated=1; fi
  log "installing ${missing[*]}"
  apt_get install -y -qq "${missing[@]}" >/dev/null
}

# A TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a long-lived service in its own session, logging to logs/<name>.log and
# recording its pid in pids/<name>.pid (which is how `down` finds it).
# Its command line is kept in commands/<name>, for `restart`.
start() {
  local name="$1"; shift
  mkdir -p "$TESTBED_STATE/commands"
  printf '%s\0' "$@" >"$TESTBED_STATE/commands/$name"
  : >"$TESTBED_STATE/logs/$name.log"
  launch "$name" "$@"
}

# launch NAME COMMAND...: runs COMMAND as service NAME, appending to its log.
launch() {
  local name="$1"; shift
  setsid "$@" >>"$TESTBED_STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$TESTBED_STATE/pids/$name.pid"
}

# stop_service PIDFILE: TERM, then KILL after 5 s.
stop_service() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# wait_for WHAT SECONDS LOGFILE COMMAND...: retries COMMAND until it succeeds,
# or fails naming WHAT and showing the end of its log.
wait_for() {
  local what="$1" seconds="$2" logfile="$3"; shift 3
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  tail -20 "$logfile" >&2 || true
  die "$what did not become ready within ${seconds}s (log: $logfile)"
}

# build_flink_job FLINK_HOME DIR: compiles the test job (e2e/flink-job) against
# Flink's jars and writes DIR/keyed-count.jar.
build_flink_job() {
  local flink_home="$1" out="$2" classes
  classes="$(mktemp -d)"
  javac -d "$classes" -cp "$flink_home/lib/*" \
    "$(dirname "${BASH_SOURCE[0]}")/../flink-job/src/dev/kappa/job/KeyedCount.java"
  mkdir -p "$out"
  jar --create --file "$out/keyed-count.jar" --main-class dev.kappa.job.KeyedCount -C "$classes" .
  rm -rf "$classes"
}
