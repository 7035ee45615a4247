# shellcheck shell=bash
# Helpers for Shoal's integration tests, demo.sh and bench_pull.sh.
#
#   source lib.sh            (sets -eEuo pipefail and an EXIT trap)
#   shoal_init               work dir, log dir, cleanup trap
#   registry_start           docker-registry on 127.0.0.1:$REGISTRY_PORT
#   image_make NAME ARGS...  mkimage.py into an OCI layout; JSON in $SHOAL_WORK/NAME.json
#   image_push NAME REPO TAG skopeo copy into the registry
#   node_start N STORE       containerd (+ shoald if STORE=shoal) as node N
#   nctr N ARGS...           ctr against node N
#
# Everything runs on loopback only. Every process started here is recorded and
# killed by the EXIT trap, pass or fail; containers, shims and mounts left
# under the work dir are removed too.
#
# Environment knobs:
#   SHOAL_STORE=shoal|builtin   default content store for node_start (shoal)
#   SHOAL_SNAPSHOTTER=NAME      snapshotter for pulls and runs (overlayfs)
#   SHOALD, SHOAL_HEALTH_PROBE  paths of the binaries (found in runfiles or
#                               bazel-bin/plugin/ otherwise)
#   SHOALD_ARGS                 extra shoald flags (default --v=1)
#   SHOAL_KEEP=1                keep the work dir after the run
#   SHOAL_SHARING_POLICY        containerd content_sharing_policy (shared)
#   SHOAL_CONTAINERD_LOG_LEVEL  containerd --log-level (debug)

set -eEuo pipefail

# Bazel's test environment may have a minimal PATH; runc is in /usr/sbin.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

SHOAL_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHOAL_PYTHON=/usr/bin/python3
SHOAL_MKIMAGE=$SHOAL_LIB_DIR/mkimage.py
SHOAL_PROXY=$SHOAL_LIB_DIR/throttle_proxy.py
SHOAL_STORE=${SHOAL_STORE:-shoal}
# overlayfs unless set; falls back to native (with a note) where overlayfs
# does not load, unless SHOAL_SNAPSHOTTER was set explicitly.
SHOAL__SNAPSHOTTER_AUTO=$([[ -z ${SHOAL_SNAPSHOTTER:-} ]] && echo 1 || echo 0)
SHOAL_SNAPSHOTTER=${SHOAL_SNAPSHOTTER:-overlayfs}
SHOAL_SHARING_POLICY=${SHOAL_SHARING_POLICY:-shared}
SHOALD_ARGS=${SHOALD_ARGS:---v=1}
SHOAL_CONTAINERD_LOG_LEVEL=${SHOAL_CONTAINERD_LOG_LEVEL:-debug}

# Deadlines (seconds) for readiness polls.
SHOAL_READY_TIMEOUT=${SHOAL_READY_TIMEOUT:-30}

declare -a SHOAL__PIDS=()        # every background process we started
declare -A SHOAL__PIDNAME=()     # pid -> name (for messages)
declare -A NODE_DIR=() NODE_STORE=() NODE_CTRD_PID=() NODE_SHOALD_PID=()
# Per-node extra shoald flags, appended after $SHOALD_ARGS (p2p_node_start
# puts the DHT and metrics flags here; tests may add more before starting).
declare -A NODE_SHOALD_ARGS=()
declare -A NODE_SHOALD_LOG0=() # line count of NODE's shoald log when it last started
SHOAL__FAILED=0
SHOAL__CLEANED=0
# The script's stderr, for failures found inside polled commands (wait_for
# sends their output to /dev/null).
exec {SHOAL__STDERR}>&2

# ---------------------------------------------------------------- messages

now_ms() { echo $(($(date +%s%N) / 1000000)); }

log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }

step() { printf '\n%s === %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }

# The failure message goes to SHOAL_FAIL_FD (default 2, stderr), so a script
# that silences a step's stderr can still show why that step failed.
fail() {
  SHOAL__FAILED=1
  printf '\nFAIL: %s\n' "$*" >&"${SHOAL_FAIL_FD:-2}"
  exit 1
}

# ---------------------------------------------------------------- assertions

assert_eq() { # EXPECTED ACTUAL WHAT
  if [[ "$1" != "$2" ]]; then
    fail "$3: expected [$1], got [$2]"
  fi
}

assert_ne() { # UNEXPECTED ACTUAL WHAT
  if [[ "$1" == "$2" ]]; then
    fail "$3: did not expect [$1]"
  fi
}

assert_contains() { # HAYSTACK NEEDLE WHAT
  if [[ "$1" != *"$2"* ]]; then
    fail "$3: [$2] not found in output:
$1"
  fi
}

assert_not_contains() { # HAYSTACK NEEDLE WHAT
  if [[ "$1" == *"$2"* ]]; then
    fail "$3: [$2] unexpectedly found in output:
$1"
  fi
}

assert_file() { [[ -f "$1" ]] || fail "${2:-file}: $1 does not exist"; }
assert_no_file() { [[ ! -e "$1" ]] || fail "${2:-file}: $1 still exists"; }

assert_ge() { # A B WHAT: A >= B (integers)
  (($1 >= $2)) || fail "$3: expected >= $2, got $1"
}

# assert_same_file EXPECTED ACTUAL WHAT: byte-for-byte equality.
assert_same_file() {
  if ! cmp -s "$1" "$2"; then
    local first
    first=$(cmp "$1" "$2" 2>&1 | head -1 || true)
    fail "$3: bytes differ
  expected $1: $(stat -c %s "$1" 2>/dev/null || echo missing) bytes, sha256 $(sha256sum <"$1" 2>/dev/null | cut -c1-64)
  actual   $2: $(stat -c %s "$2" 2>/dev/null || echo missing) bytes, sha256 $(sha256sum <"$2" 2>/dev/null | cut -c1-64)
  cmp: $first"
  fi
}

# run_ok WHAT CMD...: run a command, fail with its output if it fails.
# Its combined output is left in $RUN_OUT.
run_ok() {
  local what=$1
  shift
  local rc=0
  RUN_OUT=$("$@" 2>&1) || rc=$?
  if ((rc != 0)); then
    fail "$what: command failed with exit $rc: $*
$RUN_OUT"
  fi
}

# ---------------------------------------------------------------- polling

# wait_for WHAT TIMEOUT CMD...: poll CMD (every 50 ms) until it succeeds.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$(($(now_ms) + timeout * 1000))
  while ! "$@" >/dev/null 2>&1; do
    if (($(now_ms) > deadline)); then
      fail "timed out after ${timeout}s waiting for $what (last try: $*)"
    fi
    sleep 0.05
  done
}

# alive PID: is the process still running (and not a zombie)?
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n "$st" && "$st" != Z ]]
}

# wait_for_proc WHAT TIMEOUT PID CMD...: like wait_for, but fails at once
# (with the log's tail) if process PID dies meanwhile.
wait_for_proc() {
  local what=$1 timeout=$2 pid=$3
  shift 3
  local deadline=$(($(now_ms) + timeout * 1000))
  while ! "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      fail "${SHOAL__PIDNAME[$pid]:-process $pid} exited while waiting for $what"
    fi
    if (($(now_ms) > deadline)); then
      fail "timed out after ${timeout}s waiting for $what (last try: $*)"
    fi
    sleep 0.05
  done
}

# ---------------------------------------------------------------- processes

# spawn NAME LOGFILE CMD...: start CMD in the background, record its pid in
# $SPAWN_PID. stdout and stderr go to LOGFILE.
spawn() {
  local name=$1 logf=$2
  shift 2
  log "start $name: $*"
  "$@" >>"$logf" 2>&1 </dev/null {SHOAL__STDERR}>&- &
  SPAWN_PID=$!
  SHOAL__PIDS+=("$SPAWN_PID")
  SHOAL__PIDNAME[$SPAWN_PID]=$name
}

# stop_pid PID [TIMEOUT]: SIGTERM, wait for exit, SIGKILL after TIMEOUT s.
# Returns the process's exit status (0 if it was already reaped).
stop_pid() {
  local pid=$1 timeout=${2:-10} rc=0
  [[ -n "$pid" ]] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(($(now_ms) + timeout * 1000))
    while alive "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
    if alive "$pid"; then
      log "${SHOAL__PIDNAME[$pid]:-$pid} ignored SIGTERM for ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return $rc
}

# ---------------------------------------------------------------- setup

# Locate a binary built by Bazel: explicit variable, runfiles, bazel-bin.
find_bazel_bin() { # VAR_VALUE RELPATH
  local explicit=$1 rel=$2 c
  for c in "$explicit" \
    "${TEST_SRCDIR:-/nonexistent}/shoal/$rel" \
    "${RUNFILES_DIR:-/nonexistent}/shoal/$rel" \
    "$SHOAL_LIB_DIR/../$rel" \
    "$SHOAL_LIB_DIR/../bazel-bin/$rel"; do
    if [[ -n "$c" && -x "$c" && ! -d "$c" ]]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

shoal_init() {
  [[ $(id -u) == 0 ]] || fail "integration tests need root (containerd, mounts)"
  local t
  for t in containerd ctr runc containerd-shim-runc-v2 docker-registry skopeo curl; do
    command -v "$t" >/dev/null || fail "$t not found: run ./dev.sh to install the test packages"
  done
  # Short base dir: unix socket paths must stay under 108 bytes, and Bazel's
  # TEST_TMPDIR is long.
  SHOAL_WORK=$(mktemp -d /tmp/shoal-XXXXXX)
  chmod 755 "$SHOAL_WORK"
  if [[ -n "${TEST_TMPDIR:-}" ]]; then
    ln -sfn "$SHOAL_WORK" "$TEST_TMPDIR/work"
  fi
  SHOAL_LOGS=${TEST_UNDECLARED_OUTPUTS_DIR:-$SHOAL_WORK/logs}
  mkdir -p "$SHOAL_LOGS"
  SHOAL_ID=${SHOAL_WORK##*-} # unique per run: container ids, namespaces
  trap 'shoal__on_err $? "$BASH_COMMAND" "${BASH_SOURCE[0]}" $LINENO' ERR
  trap 'shoal__cleanup' EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  log "work dir $SHOAL_WORK, logs in $SHOAL_LOGS, store $SHOAL_STORE, snapshotter $SHOAL_SNAPSHOTTER"
}

shoal__on_err() {
  SHOAL__FAILED=1
  printf '\nFAIL: command exited %s at %s:%s: %s\n' "$1" "$3" "$4" "$2" >&2
}

# The binaries are looked up lazily, so that builtin-only runs work before
# shoald exists.
shoald_bin() {
  find_bazel_bin "${SHOALD:-}" plugin/shoald ||
    fail "shoald not found (build it: bazel build //plugin:shoald, or set SHOALD=)"
}

probe_bin() { find_bazel_bin "${SHOAL_HEALTH_PROBE:-}" plugin/shoal_health_probe; }

# ---------------------------------------------------------------- registry

free_port() {
  "$SHOAL_PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# registry_start: sets REGISTRY_PORT, REGISTRY (host:port), REGISTRY_LOG.
# The free port is picked before the registry binds it; if another process
# takes it meanwhile the registry exits, and another port is tried.
registry_start() {
  local dir=$SHOAL_WORK/registry attempt
  mkdir -p "$dir/data"
  REGISTRY_LOG=$SHOAL_LOGS/registry.log
  for attempt in 1 2 3; do
    REGISTRY_PORT=$(free_port)
    REGISTRY=127.0.0.1:$REGISTRY_PORT
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY
EOF
    spawn registry "$REGISTRY_LOG" docker-registry serve "$dir/config.yml"
    REGISTRY_PID=$SPAWN_PID
    local deadline=$(($(now_ms) + SHOAL_READY_TIMEOUT * 1000))
    while alive "$REGISTRY_PID" && (($(now_ms) < deadline)); do
      if curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; then
        log "registry ready on $REGISTRY"
        return 0
      fi
      sleep 0.05
    done
    if alive "$REGISTRY_PID"; then
      fail "timed out after ${SHOAL_READY_TIMEOUT}s waiting for the registry on $REGISTRY"
    fi
    wait "$REGISTRY_PID" 2>/dev/null || true
    log "registry exited at start (attempt $attempt, port $REGISTRY_PORT): $(tail -1 "$REGISTRY_LOG")"
  done
  fail "the registry did not start (see $REGISTRY_LOG)"
}

# registry_blob_gets DIGEST: how many GETs of that blob the registry served.
registry_blob_gets() {
  grep -c "\"GET /v2/[^ ]*/blobs/$1 " "$REGISTRY_LOG" || true
}

# proxy_start NAME RATE: throttling proxy in front of the registry; sets
# PROXY_PORT, PROXY (host:port), PROXY_PID, PROXY_LOG.
proxy_start() {
  local name=$1 rate=$2
  PROXY_LOG=$SHOAL_LOGS/$name.log
  local pf=$SHOAL_WORK/$name.port
  rm -f "$pf"
  spawn "$name" "$PROXY_LOG" "$SHOAL_PYTHON" "$SHOAL_PROXY" --upstream "$REGISTRY" \
    --rate "$rate" --port-file "$pf" --log "$PROXY_LOG"
  PROXY_PID=$SPAWN_PID
  wait_for_proc "$name port file" "$SHOAL_READY_TIMEOUT" "$PROXY_PID" test -s "$pf"
  PROXY_PORT=$(<"$pf")
  PROXY=127.0.0.1:$PROXY_PORT
  wait_for_proc "$name on $PROXY" "$SHOAL_READY_TIMEOUT" "$PROXY_PID" curl -fsS --max-time 2 "http://$PROXY/v2/"
}

# ---------------------------------------------------------------- images

# image_make NAME MKIMAGE_ARGS...: OCI layout in $SHOAL_WORK/images/NAME,
# description (mkimage.py's JSON) in $SHOAL_WORK/images/NAME.json.
image_make() {
  local name=$1
  shift
  mkdir -p "$SHOAL_WORK/images"
  "$SHOAL_PYTHON" "$SHOAL_MKIMAGE" --out "$SHOAL_WORK/images/$name" --tag "$name" "$@" \
    >"$SHOAL_WORK/images/$name.json"
}

image_json() { echo "$SHOAL_WORK/images/$1.json"; }
image_layout() { echo "$SHOAL_WORK/images/$1"; }

# image_field NAME JQ_FILTER
image_field() { jq -r "$2" "$(image_json "$1")"; }

# image_blobs NAME: "digest size" per line, manifest first.
image_blobs() { jq -r '.blobs[] | "\(.digest) \(.size)"' "$(image_json "$1")"; }

# image_push NAME REPO: push tag NAME of the layout to $REGISTRY/REPO:NAME.
image_push() {
  local name=$1 repo=$2
  run_ok "push $name" skopeo --insecure-policy copy --quiet --preserve-digests \
    --dest-tls-verify=false "oci:$(image_layout "$name"):$name" "docker://$REGISTRY/$repo:$name"
  # The registry must serve the manifest we generated, byte for byte.
  local got
  got=$(curl -fsS --max-time 30 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY/v2/$repo/manifests/$name" | sha256sum | cut -c1-64)
  assert_eq "$(image_field "$name" .manifest)" "sha256:$got" "manifest digest served by the registry for $repo:$name"
}

# ---------------------------------------------------------------- nodes

# node_start NODE [STORE]: containerd with its own root/state/socket, and with
# STORE=shoal a shoald serving content to it. Sets NODE_* entries.
node_start() {
  local n=$1 store=${2:-$SHOAL_STORE}
  local d=$SHOAL_WORK/$n
  mkdir -p "$d/root" "$d/state" "$d/opt"
  NODE_DIR[$n]=$d
  NODE_STORE[$n]=$store
  local disabled='"io.containerd.grpc.v1.cri"'
  local proxy=""
  case $store in
  builtin) ;;
  shoal)
    disabled+=', "io.containerd.content.v1.content"'
    proxy="[proxy_plugins]
  [proxy_plugins.shoal]
    type = \"content\"
    address = \"$d/shoal.sock\""
    ;;
  *) fail "unknown store $store (want builtin or shoal)" ;;
  esac
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = [$disabled]

[grpc]
  address = "$d/c.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "$SHOAL_SHARING_POLICY"

$proxy
EOF
  cp "$d/config.toml" "$SHOAL_LOGS/$n-containerd-$store.toml"
  if [[ $store == shoal ]]; then
    shoald_start "$n"
  fi
  rm -f "$d/c.sock"
  spawn "$n/containerd" "$SHOAL_LOGS/$n-containerd.log" \
    containerd --config "$d/config.toml" --log-level "$SHOAL_CONTAINERD_LOG_LEVEL"
  NODE_CTRD_PID[$n]=$SPAWN_PID
  wait_for_proc "$n containerd on $d/c.sock" "$SHOAL_READY_TIMEOUT" "$SPAWN_PID" \
    timeout 5 ctr --address "$d/c.sock" version
  local plugins
  plugins=$(timeout 30 ctr --address "$d/c.sock" plugins ls)
  if [[ $store == shoal ]]; then
    grep -Eq '^io\.containerd\.content\.v1[[:space:]]+shoal[[:space:]].*[[:space:]]ok[[:space:]]*$' <<<"$plugins" ||
      fail "$n: containerd does not list the shoal content plugin as ok:
$plugins"
    if grep -Eq '^io\.containerd\.content\.v1[[:space:]]+content[[:space:]]' <<<"$plugins"; then
      fail "$n: the built-in content store is still loaded next to shoal:
$plugins"
    fi
  else
    grep -Eq '^io\.containerd\.content\.v1[[:space:]]+content[[:space:]].*[[:space:]]ok[[:space:]]*$' <<<"$plugins" ||
      fail "$n: the built-in content store is not ok:
$plugins"
  fi
  local snap_re="^io\.containerd\.snapshotter\.v1[[:space:]]+$SHOAL_SNAPSHOTTER[[:space:]].*[[:space:]]ok[[:space:]]*$"
  if ! grep -Eq "$snap_re" <<<"$plugins" && ((SHOAL__SNAPSHOTTER_AUTO)) && [[ $SHOAL_SNAPSHOTTER != native ]]; then
    log "NOTE: snapshotter $SHOAL_SNAPSHOTTER does not load here ($(grep -m1 "snapshotter.v1 *$SHOAL_SNAPSHOTTER " <<<"$plugins" | tr -s ' ')); using native"
    SHOAL_SNAPSHOTTER=native
    snap_re="^io\.containerd\.snapshotter\.v1[[:space:]]+native[[:space:]].*[[:space:]]ok[[:space:]]*$"
  fi
  grep -Eq "$snap_re" <<<"$plugins" ||
    fail "$n: snapshotter $SHOAL_SNAPSHOTTER is not available:
$(grep snapshotter <<<"$plugins")"
  log "$n: containerd ready ($store store), root $d/root"
}

node_content_root() { echo "${NODE_DIR[$1]}/root/io.containerd.content.v1.content"; }

# shoald_start NODE: shoald on NODE's socket, rooted where the built-in store
# keeps its files, so the two can be swapped on one containerd root.
shoald_start() {
  local n=$1 d=${NODE_DIR[$1]}
  local bin
  bin=$(shoald_bin)
  local root
  root=$(node_content_root "$n")
  mkdir -p "$root"
  rm -f "$d/shoal.sock"
  local logf=$SHOAL_LOGS/$n-shoald.log
  # Where this run of shoald starts in its (appended) log, for log_since.
  NODE_SHOALD_LOG0[$n]=$( ([[ -f $logf ]] && wc -l <"$logf") || echo 0)
  # shellcheck disable=SC2086
  spawn "$n/shoald" "$logf" \
    "$bin" --socket="$d/shoal.sock" --root="$root" --logtostderr $SHOALD_ARGS ${NODE_SHOALD_ARGS[$n]:-}
  NODE_SHOALD_PID[$n]=$SPAWN_PID
  local probe
  if probe=$(probe_bin); then
    wait_for_proc "$n shoald health SERVING" "$SHOAL_READY_TIMEOUT" "$SPAWN_PID" \
      timeout 5 "$probe" --socket="$d/shoal.sock"
  else
    log "no shoal_health_probe binary; waiting for the socket file only"
    wait_for_proc "$n shoald socket" "$SHOAL_READY_TIMEOUT" "$SPAWN_PID" test -S "$d/shoal.sock"
  fi
  # Which transport serves the socket, from the flags (the last one wins, as
  # with gflags); shoald must say it serves that one.
  local transport=h2 a
  # shellcheck disable=SC2086
  for a in $SHOALD_ARGS ${NODE_SHOALD_ARGS[$n]:-}; do
    [[ $a == --content_transport=* ]] && transport=${a#*=}
  done
  wait_for "$n shoald serving over $transport" "$SHOAL_READY_TIMEOUT" \
    shoald__serves_over "$n" "$transport"
  log "$n: shoald ready on $d/shoal.sock ($transport), root $root"
}

# shoald__serves_over NODE TRANSPORT: this run of NODE's shoald logged that it
# serves its socket over TRANSPORT.
shoald__serves_over() {
  log_since "$1" | grep -q "shoald: serving socket=.* transport=$2\$"
}

# containerd_wait_store NODE NAMESPACE IMAGE: after shoald restarted under a
# running containerd, waits until containerd reads IMAGE's manifest through
# it again (containerd reconnects to a proxy plugin with a backoff of up to
# 3 s).
containerd_wait_store() {
  wait_for "$1's containerd to reach its restarted shoald" 20 \
    nctr "$1" -n "$2" content get "$(image_field "$3" .manifest)"
}

# shoald_stop NODE: SIGTERM; fails if shoald does not exit cleanly.
shoald_stop() {
  local n=$1 pid=${NODE_SHOALD_PID[$1]:-} rc=0
  [[ -n "$pid" ]] || return 0
  stop_pid "$pid" 10 || rc=$?
  NODE_SHOALD_PID[$n]=""
  ((rc == 0)) || fail "$n: shoald exited with status $rc on SIGTERM (see $SHOAL_LOGS/$n-shoald.log)"
}

# shoald_kill NODE: SIGKILL, as a crash would.
shoald_kill() {
  local n=$1 pid=${NODE_SHOALD_PID[$1]:-}
  [[ -n "$pid" ]] || fail "$n: no shoald to kill"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  NODE_SHOALD_PID[$n]=""
  log "$n: shoald killed with SIGKILL"
}

# node_stop NODE: stop containerd (after its containers), then shoald.
node_stop() {
  local n=$1
  node__kill_containers "$n"
  local pid=${NODE_CTRD_PID[$n]:-}
  if [[ -n "$pid" ]]; then
    stop_pid "$pid" 15 || true
    NODE_CTRD_PID[$n]=""
  fi
  if [[ ${NODE_STORE[$n]} == shoal ]]; then
    shoald_stop "$n"
  fi
  log "$n: stopped"
}

# node_destroy NODE: stop it and delete its directory (root, state, ...).
node_destroy() {
  local n=$1 d=${NODE_DIR[$1]} m
  node_stop "$n"
  for m in $(awk -v w="$d/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  rm -rf "$d"
  unset "NODE_DIR[$n]" "NODE_STORE[$n]" "NODE_CTRD_PID[$n]" "NODE_SHOALD_PID[$n]"
}

# nctr NODE ARGS...: ctr against NODE, killed after 120 s if it hangs.
nctr() {
  local n=$1
  shift
  timeout 120 ctr --address "${NODE_DIR[$n]}/c.sock" "$@"
}

# pull NODE NAMESPACE REF [ctr pull args]: plain-http pull with unpack.
pull() {
  local n=$1 ns=$2 ref=$3
  shift 3
  local t0 rc=0
  t0=$(now_ms)
  RUN_OUT=$(timeout 300 ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" images pull --plain-http \
    --snapshotter "$SHOAL_SNAPSHOTTER" "$@" "$ref" 2>&1) || rc=$?
  PULL_MS=$(($(now_ms) - t0))
  if ((rc != 0)); then
    fail "$n: ctr -n $ns images pull $ref failed (exit $rc) after ${PULL_MS} ms:
$RUN_OUT"
  fi
  log "$n: pulled $ref into namespace $ns in ${PULL_MS} ms"
}

# run_container NODE NAMESPACE REF CMD...: ctr run --rm; output in $RUN_OUT.
RUN_SEQ=0
run_container() {
  local n=$1 ns=$2 ref=$3
  shift 3
  RUN_SEQ=$((RUN_SEQ + 1))
  local id=shoal-$SHOAL_ID-$RUN_SEQ rc=0
  RUN_OUT=$(timeout 120 ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" run --rm \
    --snapshotter "${RUN_SNAPSHOTTER:-$SHOAL_SNAPSHOTTER}" "$ref" "$id" "$@" 2>&1) || rc=$?
  if ((rc != 0)); then
    fail "$n: ctr run $ref $* failed (exit $rc):
$RUN_OUT"
  fi
}

# check_run NODE NAMESPACE REF IMAGE: `ctr run --rm` a busybox image and check
# what it prints: an echo, the marker file, and the sha256 of every random
# data file (so every layer's unpacked contents are checked too).
check_run() {
  local n=$1 ns=$2 ref=$3 img=$4
  run_container "$n" "$ns" "$ref" /bin/busybox sh -c \
    'echo "hello from $(uname -s)"; cat /etc/shoal-image; for f in /data/*.bin; do [ -f "$f" ] && sha256sum "$f"; done; true'
  local expect path sum
  expect=$(printf 'hello from Linux\nshoal test image\n')
  while read -r path sum; do
    expect+=$'\n'"$sum  $path"
  done < <(jq -r '.files | sort_by(.path)[] | "\(.path) \(.sha256)"' "$(image_json "$img")")
  assert_eq "$expect" "$RUN_OUT" "$n: output of the container started from $ref in namespace $ns"
  log "$n: container from $ref ran and printed what it should"
}

# check_mount NODE NAMESPACE REF IMAGE [SNAPSHOTTER]: mount the image's rootfs
# with `ctr images mount` (which unpacks it for SNAPSHOTTER if needed) and
# check the files on the host: busybox, marker and random files.
MOUNT_SEQ=0
check_mount() {
  local n=$1 ns=$2 ref=$3 img=$4 snap=${5:-$SHOAL_SNAPSHOTTER}
  MOUNT_SEQ=$((MOUNT_SEQ + 1))
  local dir=$SHOAL_WORK/mnt$MOUNT_SEQ
  mkdir -p "$dir"
  run_ok "$n: ctr images mount $ref ($snap)" timeout 120 \
    ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" images mount --snapshotter "$snap" "$ref" "$dir"
  if [[ $(image_field "$img" .busybox) == true ]]; then
    assert_same_file /bin/busybox "$dir/bin/busybox" "$n: /bin/busybox unpacked from $ref ($snap)"
    assert_eq "shoal test image" "$(cat "$dir/etc/shoal-image")" "$n: /etc/shoal-image unpacked from $ref"
  fi
  local path sum size
  while read -r path size sum; do
    assert_eq "$sum" "$(sha256sum <"$dir$path" | cut -c1-64)" "$n: sha256 of $path unpacked from $ref ($snap)"
  done < <(jq -r '.files[] | "\(.path) \(.size) \(.sha256)"' "$(image_json "$img")")
  run_ok "$n: ctr images unmount $dir" timeout 60 \
    ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" images unmount --rm "$dir"
  log "$n: unpacked files of $ref ($snap) are correct"
}

# remove_snapshots NODE NAMESPACE SNAPSHOTTER: delete every snapshot of that
# snapshotter (leaves first), so that the next use of an image unpacks it again.
remove_snapshots() {
  local n=$1 ns=$2 snap=$3 deadline
  deadline=$(($(now_ms) + 30000))
  while :; do
    local list keys parents k
    list=$(nctr "$n" -n "$ns" snapshots --snapshotter "$snap" ls | tail -n +2)
    [[ -n $list ]] || break
    keys=$(awk '{print $1}' <<<"$list")
    parents=$(awk 'NF == 3 {print $2}' <<<"$list")
    for k in $keys; do
      if ! grep -qxF "$k" <<<"$parents"; then
        # containerd's GC may remove it first; the next listing tells, and
        # the deadline bounds a snapshot that will not go.
        nctr "$n" -n "$ns" snapshots --snapshotter "$snap" rm "$k" >/dev/null 2>&1 || true
      fi
    done
    (($(now_ms) < deadline)) || fail "$n: could not remove the $snap snapshots:
$list"
  done
}

# verify_blobs NODE NAMESPACE IMAGE: every blob of IMAGE read back with
# `ctr content get` equals the generated blob, byte for byte.
verify_blobs() {
  local n=$1 ns=$2 img=$3
  local digest size out=$SHOAL_WORK/get.$$ count=0
  while read -r digest size; do
    local rc=0
    timeout 120 ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" content get "$digest" >"$out" 2>"$out.err" || rc=$?
    ((rc == 0)) || fail "$n: ctr -n $ns content get $digest failed (exit $rc): $(cat "$out.err")"
    assert_eq "$size" "$(stat -c %s "$out")" "$n: size of $digest read back from namespace $ns"
    assert_same_file "$(image_layout "$img")/blobs/sha256/${digest#sha256:}" "$out" \
      "$n: content of $digest read back from namespace $ns"
    count=$((count + 1))
  done < <(image_blobs "$img")
  rm -f "$out" "$out.err"
  log "$n: all $count blobs of $img read back intact from namespace $ns"
}

# assert_blobs_on_disk NODE IMAGE: every blob of IMAGE is a file in the
# node's content root (containerd's layout), with the right size.
assert_blobs_on_disk() {
  local n=$1 img=$2 root digest size
  root=$(node_content_root "$n")
  while read -r digest size; do
    local f=$root/blobs/sha256/${digest#sha256:}
    assert_file "$f" "$n: blob of $img in the content root"
    assert_eq "$size" "$(stat -c %s "$f")" "$n: size of $f"
  done < <(image_blobs "$img")
}

assert_no_blobs_on_disk() {
  local n=$1 img=$2 root digest size
  root=$(node_content_root "$n")
  while read -r digest size; do
    assert_no_file "$root/blobs/sha256/${digest#sha256:}" "$n: blob of $img after garbage collection"
  done < <(image_blobs "$img")
}

# ---------------------------------------------------------------- peer-to-peer nodes
#
# Several shoald nodes on one machine, each on its own loopback address
# (node nK on 127.0.0.(K+1): n1 -> 127.0.0.2), so every node can use the same
# fixed ports: the DHT (UDP) and the peer service (TCP) on
# $SHOAL_DHT_PORT, Prometheus metrics on $SHOAL_METRICS_PORT.
#
#   p2p_node_start n1 ""            first node of a new DHT network
#   p2p_node_start n2 "" n1         joins through n1 (node names or IP:port)
#   metric n2 shoal_lookups_total 'outcome="found"'
#   mark=$(registry_log_mark); ...; registry_requests_since "$mark"

SHOAL_DHT_PORT=${SHOAL_DHT_PORT:-5001}
SHOAL_METRICS_PORT=${SHOAL_METRICS_PORT:-9101}
declare -A NODE_IP=() NODE_DHT=() NODE_METRICS=() NODE_BOOTSTRAP=()

# node_ip NODE: the loopback address of node nK, 127.0.0.(K+1).
node_ip() {
  local k=${1//[!0-9]/}
  if [[ -z $k ]] || ((k < 1 || k > 250)); then
    fail "node_ip: cannot derive an address from node name [$1]"
  fi
  echo "127.0.0.$((k + 1))"
}

# port_free IP PORT: nothing listens on IP:PORT over TCP, nothing is bound to
# it over UDP.
port_free() {
  "$SHOAL_PYTHON" - "$1" "$2" <<'PY'
import socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    if kind == socket.SOCK_STREAM:
        # As servers do: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip, port))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}

# shoald_has_flag NAME: does this shoald binary know --NAME?
shoald_has_flag() {
  local help
  help=$("$(shoald_bin)" --helpmatch=shoald 2>&1 || true) # --help* exits 1
  grep -q -- "-$1 " <<<"$help"
}

# p2p__endpoints NODE_OR_ENDPOINT,...: node names -> their DHT endpoints.
p2p__endpoints() {
  local out=() x
  local IFS=,
  for x in $1; do
    [[ -n $x ]] || continue
    if [[ -n ${NODE_DHT[$x]:-} ]]; then
      out+=("${NODE_DHT[$x]}")
    else
      out+=("$x")
    fi
  done
  echo "${out[*]}"
}

# p2p_init: start of every peer-to-peer test: shoald on every node whatever
# SHOAL_STORE says (the built-in store has no peers), then shoal_init and the
# registry.
p2p_init() {
  if [[ $SHOAL_STORE != shoal ]]; then
    log "NOTE: SHOAL_STORE=$SHOAL_STORE; peer-to-peer tests always run shoald"
    SHOAL_STORE=shoal
  fi
  shoal_init
  registry_start
}

# p2p_node_start NODE [IP] [BOOTSTRAP] [STORE]: containerd + shoald as a
# peer-to-peer node on IP (default: node_ip NODE), with
#   --dht_listen=IP:$SHOAL_DHT_PORT (DHT over UDP, peer service over TCP)
#   --metrics_listen=IP:$SHOAL_METRICS_PORT
#   --dht_bootstrap=BOOTSTRAP (comma-separated node names or IP:port; none:
#                              the first node of a new network)
# plus whatever NODE_SHOALD_ARGS[NODE] already holds. Returns once containerd
# and shoald serve, the node has joined the DHT (or started it) and its
# metrics answer. With STORE=builtin (SHOAL_STORE=builtin) it is a plain
# containerd node: no shoald, no DHT.
p2p_node_start() {
  local n=$1 ip=${2:-} boot=${3:-} store=${4:-$SHOAL_STORE}
  [[ -n $ip ]] || ip=$(node_ip "$n")
  # shellcheck disable=SC2034 # for the scripts (demo.sh)
  NODE_IP[$n]=$ip
  if [[ $store != shoal ]]; then
    node_start "$n" "$store"
    return
  fi
  local p
  for p in "$SHOAL_DHT_PORT" "$SHOAL_METRICS_PORT"; do
    port_free "$ip" "$p" || fail "$n: port $ip:$p is in use (set SHOAL_DHT_PORT / SHOAL_METRICS_PORT)"
  done
  NODE_DHT[$n]=$ip:$SHOAL_DHT_PORT
  NODE_BOOTSTRAP[$n]=$(p2p__endpoints "$boot")
  local args="--dht_listen=${NODE_DHT[$n]}"
  [[ -n ${NODE_BOOTSTRAP[$n]} ]] && args+=" --dht_bootstrap=${NODE_BOOTSTRAP[$n]}"
  if shoald_has_flag metrics_listen; then
    NODE_METRICS[$n]=$ip:$SHOAL_METRICS_PORT
    args+=" --metrics_listen=${NODE_METRICS[$n]}"
  else
    NODE_METRICS[$n]=""
    log "NOTE: this shoald has no --metrics_listen; metrics of $n are unavailable"
  fi
  # The DHT readiness checks read shoald's VLOG(1) lines.
  [[ " $SHOALD_ARGS ${NODE_SHOALD_ARGS[$n]:-} " =~ [[:space:]]--?v= ]] || args+=" --v=1"
  NODE_SHOALD_ARGS[$n]="$args ${NODE_SHOALD_ARGS[$n]:-}"
  node_start "$n" shoal
  p2p__ready "$n"
  log "$n: peer-to-peer node on $ip (dht ${NODE_DHT[$n]}, metrics ${NODE_METRICS[$n]:-none}, seeds ${NODE_BOOTSTRAP[$n]:-none})"
}

# p2p__ready NODE: wait until shoald joined the DHT (or started it) and, if
# it has them, serves its metrics.
p2p__ready() {
  local n=$1 pid=${NODE_SHOALD_PID[$1]}
  wait_for_proc "$n shoald to join the DHT" "$SHOAL_READY_TIMEOUT" "$pid" dht_joined "$n"
  if [[ -n ${NODE_METRICS[$n]:-} ]]; then
    wait_for_proc "$n metrics on http://${NODE_METRICS[$n]}/metrics" "$SHOAL_READY_TIMEOUT" "$pid" \
      curl -fsS --max-time 2 -o /dev/null "http://${NODE_METRICS[$n]}/metrics"
  fi
}

# log_since NODE: NODE's shoald log since its last start.
log_since() {
  tail -n +$((${NODE_SHOALD_LOG0[$1]:-0} + 1)) "$SHOAL_LOGS/$1-shoald.log"
}

# dht_joined NODE: succeeds once this run of NODE's shoald logged that it
# joined the network or started a new one; fails the test at once if its
# bootstrap failed.
dht_joined() {
  local l
  l=$(log_since "$1" | grep -E -m1 'dht: (joined seeds=|started as first node|bootstrap failed)') || return 1
  [[ $l != *"bootstrap failed"* ]] || fail "$1: shoald could not join the DHT: $l" 2>&"$SHOAL__STDERR"
}

# dht_provided NODE DIGEST: succeeds once NODE finished advertising DIGEST
# (its last "dht: provide digest=D" line is followed by the end of that
# batch: the advertiser runs one batch at a time); fails the test if that
# batch failed. Needs shoald at --v=1 (p2p_node_start sees to it).
dht_provided() {
  local r
  r=$(log_since "$1" | awk -v d="dht: provide digest=$2" '
    index($0, d) { seen = NR; res = ""; next }
    seen && res == "" && /dht: (provide|withdraw) (done|failed)/ { res = ($0 ~ /failed/) ? "failed" : "done" }
    END { print res }')
  [[ $r != failed ]] || fail "$1: advertising $2 in the DHT failed: $(log_since "$1" | grep -m1 'dht: provide failed')" 2>&"$SHOAL__STDERR"
  [[ $r == "done" ]]
}

# dht_wait_provided NODE IMAGE: wait until NODE advertised every blob of IMAGE.
dht_wait_provided() {
  local n=$1 img=$2 digest size
  while read -r digest size; do
    wait_for_proc "$n to advertise $digest" "$SHOAL_READY_TIMEOUT" "${NODE_SHOALD_PID[$n]}" dht_provided "$n" "$digest"
  done < <(image_blobs "$img")
  log "$n: every blob of $img is advertised in the DHT"
}

# shoald_restart NODE [BOOTSTRAP]: SIGTERM NODE's shoald (it must exit 0) and
# start it again on the same root with the same flags; wait as
# p2p_node_start does. A node that was started without seeds rejoins
# through BOOTSTRAP, by default every other running peer-to-peer node.
shoald_restart() {
  local n=$1 boot=${2:-} m
  shoald_stop "$n"
  if [[ -n ${NODE_DHT[$n]:-} ]]; then
    if [[ -z $boot && -z ${NODE_BOOTSTRAP[$n]} ]]; then
      for m in "${!NODE_DHT[@]}"; do
        [[ $m != "$n" && -n ${NODE_SHOALD_PID[$m]:-} ]] && boot+=${boot:+,}$m
      done
    fi
    if [[ -n $boot ]]; then
      local args=${NODE_SHOALD_ARGS[$n]}
      args=$(sed -E 's/(^| )--dht_bootstrap=[^ ]*//g' <<<"$args")
      NODE_BOOTSTRAP[$n]=$(p2p__endpoints "$boot")
      NODE_SHOALD_ARGS[$n]="$args --dht_bootstrap=${NODE_BOOTSTRAP[$n]}"
    fi
  fi
  shoald_start "$n"
  [[ -z ${NODE_DHT[$n]:-} ]] || p2p__ready "$n"
  log "$n: shoald restarted"
}

# metrics_text NODE: NODE's Prometheus text (fails the test if unreachable).
metrics_text() {
  local n=$1 out
  [[ -n ${NODE_METRICS[$n]:-} ]] || fail "$n: no metrics endpoint (not a peer-to-peer node, or shoald without --metrics_listen)"
  out=$(curl -fsS --max-time 5 "http://${NODE_METRICS[$n]}/metrics") ||
    fail "$n: cannot read http://${NODE_METRICS[$n]}/metrics"
  printf '%s\n' "$out"
}

# metric NODE NAME [LABELFILTER]: the value of metric NAME on NODE, summed
# over its series whose labels contain every comma-separated LABELFILTER
# item (e.g. 'outcome="found"' or 'reason="corrupt"'); 0 if there is none.
# Integers are printed without exponent.
metric() {
  local n=$1 name=$2 filter=${3:-} text
  text=$(metrics_text "$n") || exit 1
  awk -v name="$name" -v filter="$filter" '
    BEGIN { nf = split(filter, want, ",") }
    /^#/ { next }
    {
      series = $1
      base = series; labels = ""
      i = index(series, "{")
      if (i > 0) { base = substr(series, 1, i - 1); labels = substr(series, i) }
      if (base != name) next
      for (j = 1; j <= nf; j++) if (index(labels, want[j]) == 0) next
      sum += $2
    }
    END {
      if (sum == int(sum)) printf "%.0f\n", sum
      else printf "%.6f\n", sum
    }' <<<"$text"
}

# registry_log_mark: a mark (the registry log's current line count) for
# registry_requests_since.
registry_log_mark() {
  wc -l <"$REGISTRY_LOG"
}

# registry_requests_since MARK: the registry's requests ("METHOD PATH", one
# a line, in log order) logged after MARK. The registry writes its access log
# once a response is done, so this first sends a request of its own and
# waits until that is logged; the requests made before are logged by then.
REGISTRY_SENTINEL=0
registry_requests_since() {
  local mark=$1
  REGISTRY_SENTINEL=$((REGISTRY_SENTINEL + 1))
  local s="/v2/?shoal-sentinel=$REGISTRY_SENTINEL"
  curl -fsS --max-time 5 -o /dev/null "http://$REGISTRY$s" || fail "registry sentinel request failed"
  wait_for "the registry to log $s" 10 grep -qF "\"GET $s " "$REGISTRY_LOG"
  tail -n +$((mark + 1)) "$REGISTRY_LOG" |
    sed -nE 's/^[^ ]+ - [^ ]+ \[[^]]*\] "([A-Z]+) ([^ ]+) HTTP\/[0-9.]+".*/\1 \2/p' |
    grep -vF "GET /v2/?shoal-sentinel=" || true
}

# registry_blob_requests REQUESTS: the lines of REQUESTS (as printed by
# registry_requests_since) that fetch anything but a manifest by tag, i.e.
# manifests by digest and blobs.
registry_blob_requests() {
  grep -E '^(GET|HEAD) /v2/.+/(blobs/sha256:|manifests/sha256:)' <<<"$1" || true
}

# fetch NODE NAMESPACE REF: `ctr content fetch` (every blob, no unpack).
fetch() {
  local n=$1 ns=$2 ref=$3 t0 rc=0
  shift 3
  t0=$(now_ms)
  RUN_OUT=$(timeout 300 ctr --address "${NODE_DIR[$n]}/c.sock" -n "$ns" content fetch --plain-http "$@" "$ref" 2>&1) || rc=$?
  PULL_MS=$(($(now_ms) - t0))
  ((rc == 0)) || fail "$n: ctr -n $ns content fetch $ref failed (exit $rc) after ${PULL_MS} ms:
$RUN_OUT"
  log "$n: fetched $ref into namespace $ns in ${PULL_MS} ms"
}

# image_total NAME: the sum of the sizes of IMAGE's blobs (manifest, config,
# layers).
image_total() { image_blobs "$1" | awk '{s += $2} END {printf "%.0f\n", s}'; }

# blob_size IMAGE DIGEST
blob_size() { jq -r --arg d "$2" '.blobs[] | select(.digest == $d) | .size' "$(image_json "$1")"; }

# verify_store NODE: every file in NODE's content root blobs/sha256/ hashes
# to its own name (a wrongly filled blob would not).
verify_store() {
  local n=$1 root f count=0 sum
  root=$(node_content_root "$n")
  for f in "$root"/blobs/sha256/*; do
    [[ -f $f ]] || continue
    sum=$(sha256sum <"$f" | cut -c1-64)
    [[ $sum == "${f##*/}" ]] || fail "$n: $f holds bytes whose sha256 is $sum"
    count=$((count + 1))
  done
  log "$n: all $count blobs in $root/blobs/sha256 hash to their names"
}

# verify_blobs_on_disk NODE IMAGE: every blob of IMAGE in NODE's content
# root equals the generated blob, byte for byte (cmp, much quicker than
# verify_blobs' reads through containerd for large blobs).
verify_blobs_on_disk() {
  local n=$1 img=$2 root digest size count=0
  root=$(node_content_root "$n")
  while read -r digest size; do
    assert_file "$root/blobs/sha256/${digest#sha256:}" "$n: blob of $img in the content root"
    assert_same_file "$(image_layout "$img")/blobs/sha256/${digest#sha256:}" "$root/blobs/sha256/${digest#sha256:}" \
      "$n: blob $digest of $img in the content root"
    count=$((count + 1))
  done < <(image_blobs "$img")
  log "$n: all $count blobs of $img in the content root are byte-identical to the pushed ones"
}

# filled_lines NODE: this run's "fetcher: filled" log lines of NODE's shoald.
filled_lines() { log_since "$1" | grep -F 'fetcher: filled digest=' || true; }

# filled_from NODE DIGEST: the peer endpoint(s) (from=) that filled DIGEST on
# NODE, one a line.
filled_from() {
  filled_lines "$1" | { grep -F "digest=$2 " || true; } | sed -nE 's/.* from=([^ ]+).*/\1/p'
}

# node_of_endpoint IP:PORT: the node name with that DHT endpoint (or the
# endpoint itself).
node_of_endpoint() {
  local m
  for m in "${!NODE_DHT[@]}"; do
    [[ ${NODE_DHT[$m]} == "$1" ]] && { echo "$m"; return; }
  done
  echo "$1"
}

# ---------------------------------------------------------------- cleanup

# Kill and delete every task in every namespace of NODE (best effort).
node__kill_containers() {
  local n=$1 sock=${NODE_DIR[$1]}/c.sock ns id
  [[ -S "$sock" && -n "${NODE_CTRD_PID[$n]:-}" ]] || return 0
  for ns in $(timeout 10 ctr --address "$sock" namespaces ls -q 2>/dev/null || true); do
    for id in $(timeout 10 ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null || true); do
      log "$n: killing leftover task $ns/$id"
      timeout 10 ctr --address "$sock" -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      timeout 10 ctr --address "$sock" -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(timeout 10 ctr --address "$sock" -n "$ns" containers ls -q 2>/dev/null || true); do
      timeout 10 ctr --address "$sock" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
    done
  done
}

# pids of processes whose command line mentions the work dir (shims started
# by our containerds carry "-address $SHOAL_WORK/...").
shoal__stray_pids() {
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$SHOAL_WORK/"; then
      echo "${p#/proc/}"
    fi
  done
}

shoal__cleanup() {
  local rc=$?
  ((SHOAL__CLEANED)) && return
  SHOAL__CLEANED=1
  trap - ERR
  set +eE
  ((rc != 0)) && SHOAL__FAILED=1
  local n pid
  for n in "${!NODE_DIR[@]}"; do
    node__kill_containers "$n"
  done
  for pid in "${SHOAL__PIDS[@]}"; do
    if alive "$pid"; then
      stop_pid "$pid" 10
    fi
  done
  # Runc containers of our namespaces whose bundle is under the work dir.
  local rr id bundle
  for rr in /run/containerd/runc/*; do
    [[ -d $rr ]] || continue
    while read -r id _ _ bundle _; do
      [[ $bundle == "$SHOAL_WORK/"* ]] || continue
      log "killing leftover runc container $id"
      runc --root "$rr" kill "$id" KILL 2>/dev/null
      runc --root "$rr" delete --force "$id" 2>/dev/null
    done < <(runc --root "$rr" list 2>/dev/null | tail -n +2)
  done
  for pid in $(shoal__stray_pids); do
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    log "killing leftover process $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-150)"
    kill -KILL "$pid" 2>/dev/null
  done
  # Mounts under the work dir, deepest first.
  local m
  for m in $(awk -v w="$SHOAL_WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  if ((SHOAL__FAILED)); then
    local f
    printf '\n---- test failed; last lines of each log (full logs in %s) ----\n' "$SHOAL_LOGS" >&2
    for f in "$SHOAL_LOGS"/*.log; do
      [[ -f $f ]] || continue
      printf '\n-- %s --\n' "${f##*/}" >&2
      tail -n 25 "$f" >&2
    done
  fi
  if [[ -n "${SHOAL_KEEP:-}" ]]; then
    log "keeping $SHOAL_WORK"
  elif [[ -n "${SHOAL_WORK:-}" && -d $SHOAL_WORK ]]; then
    if [[ $SHOAL_LOGS == "$SHOAL_WORK"/* ]] && ((SHOAL__FAILED)); then
      # No Bazel outputs dir: keep the logs somewhere after the work dir goes.
      local keep
      keep=$(mktemp -d /tmp/shoal-logs-XXXXXX)
      cp -a "$SHOAL_LOGS/." "$keep/"
      log "logs kept in $keep"
    fi
    rm -rf "$SHOAL_WORK"
    [[ -n "${TEST_TMPDIR:-}" ]] && rm -f "$TEST_TMPDIR/work"
  fi
  if ((SHOAL__FAILED)); then
    exit $((rc == 0 ? 1 : rc))
  fi
  exit "$rc"
}
