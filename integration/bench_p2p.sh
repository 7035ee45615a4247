#!/usr/bin/env bash
# Peer-to-peer pull benchmark: how long a pull takes from a peer compared with
# the same pull from the registry, on one machine, measured side by side.
#
#   integration/bench_p2p.sh                         (after bazel build //plugin:shoald //plugin:shoal_health_probe)
#   SIZES="10" ROUNDS=1 integration/bench_p2p.sh     (quick try)
#   integration/bench_p2p.sh --sizes "10 100" --rounds 5
#   ./dev.sh bench                                   (runs bench_pull.sh, then this)
#
# 1. Images of SIZES MiB of random data (default "10 100 1024"), each in a
#    1-layer and a 4-layer variant (LAYERS="1 4"), no base layer, pushed to
#    docker-registry on loopback. Each round builds a fresh DHT network of
#    three fresh nodes (containerd + shoald with --dht_listen and
#    --metrics_listen): a seed that never holds anything, node R and node P.
#    R pulls the image: nobody holds it, so every blob comes from the
#    registry after a DHT lookup that finds nothing (the "registry" figure).
#    Then P pulls it: R holds it, so every blob comes from R (the "peer"
#    figure). The network is then destroyed, so the next round again starts
#    with no node holding the image. Every measured pull is
#    `ctr images pull` with unpack (lib.sh's pull); the same is measured with
#    `ctr content fetch` (no unpack; unpacking costs the same on both paths
#    and hides the transfer) in networks of their own (--no-fetch: skip).
#    ROUNDS rounds (default 3) of each; the report gives medians and the ratio
#    registry / peer. Every measurement is checked: on R no byte from peers
#    (shoal_peer_received_bytes_total), the image's bytes written from
#    upstream (shoal_upstream_written_bytes_total) and a GET of every blob at
#    the registry; on P the image's bytes from peers, none from upstream, no
#    manifest-by-digest or blob request at the registry. Any mismatch fails
#    the run.
# 2. Miss cost: the DHT lookups of every R node (a lookup per blob that finds
#    nobody): count, outcomes, mean (shoal_lookup_duration_seconds sum /
#    count) and the smallest histogram bucket holding them all, against
#    --peer_resolve_timeout. Then one image of many small blobs
#    (SMALL_LAYERS=20 layers of SMALL_LAYER_SIZE=100k) pulled (and fetched)
#    SMALL_ROUNDS times each (default 3 x ROUNDS: the difference is small
#    against the noise), alternating, on a fresh node with the DHT on (in a
#    fresh two-node network, nobody holds it) and on a fresh node whose
#    shoald runs without --dht_listen (no lookups at all); the difference of
#    the medians, per blob (--no-small: skip).
# 3. A summary block to paste into README.md, with the exact command.
#
# Progress goes to stderr, results to stdout; the full log of the helpers is
# in $SHOAL_LOGS/bench.log (kept with SHOAL_KEEP=1 or on failure). The nodes
# use the loopback addresses $BENCH_NET.1-3 (default 127.0.90.x), so the
# benchmark does not collide with the p2p tests' 127.0.0.2-4; the shoald and
# probe binaries are copied at start, so a rebuild meanwhile does not change
# what is measured.
#
# Knobs, as environment variables or flags: SIZES (--sizes, MiB),
# LAYERS (--layers), ROUNDS (--rounds; falls back to BENCH_ROUNDS, then 3),
# BENCH_FETCH=0 (--no-fetch), BENCH_SMALL=0 (--no-small), SMALL_ROUNDS
# (--small-rounds), SMALL_LAYERS, SMALL_LAYER_SIZE, BENCH_NET,
# BENCH_PEER_STREAMS=N (--peer_max_streams_per_client=N on every DHT node;
# default: shoald's own, 4), BENCH_KEEP_LOGS=1 (keep every node's logs, not
# only the failing network's),
# SHOALD_ARGS (default "--v=0 --vmodule=advertiser=1": the advertiser's
# VLOG(1) lines tell when a node has advertised its blobs; add
# --peer_resolve_timeout=... here), SHOAL_CONTAINERD_LOG_LEVEL (warn).
#
# Fairness: every measured pull starts after a `sync`, so that the previous
# pull's writes are not flushed during it. In a round the registry pull
# always comes first (the peer pull needs its copy); pull and fetch
# networks alternate which goes first, and so do DHT on/off.
#
# Disk: the registry keeps every image (sum of SIZES x number of LAYERS
# variants), plus about 5 x the largest size while it is measured.

shoal__find_lib() {
  local d
  for d in "${RUNFILES_DIR:-/nonexistent}/shoal/integration" "$0.runfiles/shoal/integration" \
    "$(dirname "$0")" "$PWD/integration"; do
    if [[ -f $d/lib.sh ]]; then
      echo "$d/lib.sh"
      return
    fi
  done
  echo "bench_p2p.sh: lib.sh not found" >&2
  exit 1
}
# Quiet components: logging is not what is measured. Set before lib.sh, which
# fills in its own defaults (debug, --v=1) for whatever is unset.
SHOAL_CONTAINERD_LOG_LEVEL=${SHOAL_CONTAINERD_LOG_LEVEL:-warn}
SHOALD_ARGS=${SHOALD_ARGS:---v=0 --vmodule=advertiser=1}
source "$(shoal__find_lib)"

BENCH_T0=$(now_ms)

bench_usage() {
  sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
}

SIZES=${SIZES:-10 100 1024}
LAYERS=${LAYERS:-1 4}
ROUNDS=${ROUNDS:-${BENCH_ROUNDS:-3}}
BENCH_FETCH=${BENCH_FETCH:-1}
BENCH_SMALL=${BENCH_SMALL:-1}
SMALL_LAYERS=${SMALL_LAYERS:-20}
SMALL_LAYER_SIZE=${SMALL_LAYER_SIZE:-100k}
SMALL_ROUNDS=${SMALL_ROUNDS:-}
BENCH_NET=${BENCH_NET:-127.0.90}
BENCH_KEEP_LOGS=${BENCH_KEEP_LOGS:-0}
BENCH_PEER_STREAMS=${BENCH_PEER_STREAMS:-}
while (($#)); do
  case $1 in
  --rounds) ROUNDS=$2; shift 2 ;;
  --rounds=*) ROUNDS=${1#*=}; shift ;;
  --sizes) SIZES=$2; shift 2 ;;
  --sizes=*) SIZES=${1#*=}; shift ;;
  --layers) LAYERS=$2; shift 2 ;;
  --layers=*) LAYERS=${1#*=}; shift ;;
  --no-fetch) BENCH_FETCH=0; shift ;;
  --no-small) BENCH_SMALL=0; shift ;;
  --small-rounds) SMALL_ROUNDS=$2; shift 2 ;;
  --small-rounds=*) SMALL_ROUNDS=${1#*=}; shift ;;
  -h | --help) bench_usage; exit 0 ;;
  *) echo "bench_p2p.sh: unknown argument [$1] (--help)" >&2; exit 2 ;;
  esac
done
# The small-blob comparison is cheap and its difference is small against
# the noise: three times as many rounds by default.
SMALL_ROUNDS=${SMALL_ROUNDS:-$((3 * ROUNDS))}
for s in "$ROUNDS" "$SMALL_ROUNDS"; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || { echo "bench_p2p.sh: ROUNDS and SMALL_ROUNDS must be positive integers, got [$s]" >&2; exit 2; }
done
for s in $SIZES $LAYERS $SMALL_LAYERS; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || { echo "bench_p2p.sh: sizes and layer counts must be positive integers, got [$s]" >&2; exit 2; }
done

RESOLVE_TIMEOUT=$(grep -oE -- '--peer_resolve_timeout=[^ ]+' <<<"$SHOALD_ARGS" | tail -1 | cut -d= -f2 || true)
RESOLVE_TIMEOUT=${RESOLVE_TIMEOUT:-20ms (default)}

# The helpers' chatter goes to bench.log once the work dir exists; failures
# (lib.sh's fail, which prints itself) and this script's progress lines go
# to stderr.
BENCH_LOG=""
log() {
  if [[ -n $BENCH_LOG ]]; then
    printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" >>"$BENCH_LOG"
  else
    printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2
  fi
}
step() { log "=== $*"; }
note() {
  printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2
  [[ -z $BENCH_LOG ]] || printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" >>"$BENCH_LOG"
}
secs() { awk -v ms="$1" 'BEGIN {printf "%.2f s", ms / 1000}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

shoal_init
BENCH_LOG=$SHOAL_LOGS/bench.log
: >"$BENCH_LOG"

# Frozen copies of the binaries.
mkdir -p "$SHOAL_WORK/bin"
shoald_src=$(shoald_bin)
cp "$shoald_src" "$SHOAL_WORK/bin/shoald"
# What was measured: the binary and the source tree it most likely came from.
src_tree=unknown
if head=$(git -C "$SHOAL_LIB_DIR/.." rev-parse --short HEAD 2>/dev/null); then
  src_tree="source tree now: HEAD $head"
  if [[ -n $(git -C "$SHOAL_LIB_DIR/.." status --porcelain -- plugin dht third_party 2>/dev/null) ]]; then
    src_tree+=" with uncommitted changes in plugin/, dht/ or third_party/"
  fi
fi
BIN_INFO="shoald $shoald_src (sha256 $(sha256sum <"$shoald_src" | cut -c1-12), built $(date -r "$shoald_src" '+%F %H:%M')); $src_tree"
# shellcheck disable=SC2034 # both read by lib.sh (shoald_bin, probe_bin)
SHOALD=$SHOAL_WORK/bin/shoald # read by lib.sh's shoald_bin
if probe=$(probe_bin); then
  cp "$probe" "$SHOAL_WORK/bin/shoal_health_probe"
  # shellcheck disable=SC2034
  SHOAL_HEALTH_PROBE=$SHOAL_WORK/bin/shoal_health_probe # read by lib.sh's probe_bin
fi
note "bench_p2p: work dir $SHOAL_WORK, helper log $BENCH_LOG"
note "$BIN_INFO"
shoald_has_flag metrics_listen || fail "this shoald has no --metrics_listen; the benchmark checks every pull with metrics"

# Disk: every image stays in the registry; the largest one is also in its
# OCI layout (until pushed) and on two nodes (blobs and snapshots).
need_mib=512 max_size=0
for s in $SIZES; do
  for _ in $LAYERS; do need_mib=$((need_mib + s)); done
  ((s > max_size)) && max_size=$s
done
need_mib=$((need_mib + 5 * max_size))
free_mib=$(df -m --output=avail "$SHOAL_WORK" | tail -1)
((free_mib > need_mib)) || fail "bench_p2p needs about $need_mib MiB free under $SHOAL_WORK, only $free_mib MiB available"

registry_start
REPO=shoal/p2pbench
RESULTS=$SHOAL_WORK/results.txt # main SIZE LAYERS MODE PATH MS | small MODE DHT MS
LOOKUPS=$SHOAL_WORK/lookups.txt # KIND NODE (bucket LE CUM | sum S | count C | outcome O N)
: >"$RESULTS"
: >"$LOOKUPS"

# ---------------------------------------------------------------- networks

NET=0
declare -a NET_NODES=()
declare -A NET_NODE=()

# net_start ROLE...: a fresh DHT network on $BENCH_NET.1, .2, ...: a seed node
# (role "seed", holds nothing) and one node per ROLE, joined through the
# seed. NET_NODE[ROLE] is the node's name.
net_start() {
  NET=$((NET + 1))
  NET_NODES=()
  NET_NODE=()
  local i=1 role n
  for role in seed "$@"; do
    n=w$NET$role
    unset "NODE_SHOALD_ARGS[$n]"
    # shellcheck disable=SC2034 # lib.sh's per-node shoald flags
    [[ -z $BENCH_PEER_STREAMS ]] || NODE_SHOALD_ARGS["$n"]="--peer_max_streams_per_client=$BENCH_PEER_STREAMS"
    if [[ $role == seed ]]; then
      p2p_node_start "$n" "$BENCH_NET.$i"
    else
      p2p_node_start "$n" "$BENCH_NET.$i" "${NET_NODE[seed]}"
    fi
    NET_NODE[$role]=$n
    NET_NODES+=("$n")
    i=$((i + 1))
  done
  log "network $NET: ${NET_NODES[*]}"
}

# bench_node_destroy NODE: stop it, delete its root, forget it; its logs go
# too unless BENCH_KEEP_LOGS=1 (on a failure they stay: the run stops first).
bench_node_destroy() {
  local n=$1
  node_destroy "$n"
  unset "NODE_IP[$n]" "NODE_DHT[$n]" "NODE_METRICS[$n]" "NODE_BOOTSTRAP[$n]" "NODE_SHOALD_ARGS[$n]"
  if ((!BENCH_KEEP_LOGS)); then
    rm -f "$SHOAL_LOGS/$n-shoald.log" "$SHOAL_LOGS/$n-containerd.log" "$SHOAL_LOGS/$n-containerd-"*.toml
  fi
  # Forget the pids of the processes just stopped (and reaped), so that the
  # exit trap never signals a later process that reuses one of them.
  local keep=() p
  for p in "${SHOAL__PIDS[@]}"; do
    if alive "$p"; then keep+=("$p"); fi
  done
  SHOAL__PIDS=("${keep[@]}")
}

net_destroy() {
  local n
  for n in "${NET_NODES[@]}"; do bench_node_destroy "$n"; done
  NET_NODES=()
  NET_NODE=()
}

# ---------------------------------------------------------------- measuring

# measure MODE NODE REF: pull (with unpack) or fetch (no unpack) into the
# default namespace; the time in MS.
measure() {
  # Start with no dirty pages: the previous pull's writes (blobs, snapshots)
  # would otherwise be flushed during this one, always the next one's loss.
  sync
  case $1 in
  pull) pull "$2" default "$3" ;;
  fetch) fetch "$2" default "$3" ;;
  *) fail "measure: unknown mode $1" ;;
  esac
  MS=$PULL_MS
}

# lookups_record KIND NODE: NODE's lookup metrics into $LOOKUPS (the nodes
# are fresh: the totals are what the measured pull caused).
lookups_record() {
  local kind=$1 n=$2
  metrics_text "$n" | awk -v k="$kind" -v n="$n" '
    /^#/ { next }
    $1 ~ /^shoal_lookup_duration_seconds_bucket\{/ {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); print k, n, "bucket", le, $2; next }
    $1 ~ /^shoal_lookup_duration_seconds_sum/ { print k, n, "sum", $2; next }
    $1 ~ /^shoal_lookup_duration_seconds_count/ { print k, n, "count", $2; next }
    $1 ~ /^shoal_lookups_total\{/ {
      o = $1; sub(/.*outcome="/, "", o); sub(/".*/, "", o); print k, n, "outcome", o, $2 }' >>"$LOOKUPS"
}

# registry_all_blobs REQUESTS IMAGE: every blob of IMAGE (manifest by digest
# included) was fetched with a GET at the registry.
registry_all_blobs() {
  local reqs=$1 img=$2 digest size
  while read -r digest size; do
    grep -qE "^GET /v2/$REPO/(blobs|manifests)/$digest$" <<<"$reqs" ||
      fail "no GET of $digest ($size bytes) at the registry during a pull that had to come from it:
$reqs"
  done < <(image_blobs "$img")
}

# why_not NODE: what NODE's shoald says about blobs it did not get from
# peers: its fetch failures by reason, its last fetcher lines, and a hint
# when a serving peer refused a stream for its per-client limit.
why_not() {
  local n=$1 m out
  out="fetch failures on $n: $(metrics_text "$n" | awk '/^shoal_peer_fetch_failures_total\{/ && $2 != 0 {printf "%s %s; ", $1, $2}')
last fetcher lines of $n (full log: $SHOAL_LOGS/$n-shoald.log):
$(log_since "$n" | grep -E 'fetcher: (filled|falling back|lookup)' | tail -8 | cut -c1-300)"
  if log_since "$n" | grep -q 'RESOURCE_EXHAUSTED'; then
    out+="
HINT: a serving peer refused a stream (RESOURCE_EXHAUSTED: at most N concurrent
fetches per client, shoald --peer_max_streams_per_client, default 4; on one
machine every node connects from 127.0.0.1, so they all share one budget).
The fetcher counts that as a failure: the blob falls back to the registry and
the peer is shunned for 30 s, so the rest of the pull does too. A pull runs
more than 4 blob downloads at once (ctr: no limit by default), so any image
with 4 or more layers large enough to overlap hits it. To measure around it:
BENCH_PEER_STREAMS=16 (passes --peer_max_streams_per_client=16 to every node)."
  fi
  for m in "${NET_NODES[@]}"; do
    [[ $m == "$n" ]] && continue
    if log_since "$m" | grep -q 'too many streams'; then
      out+="
$m logged: $(log_since "$m" | grep -m1 'too many streams' | cut -c1-200)"
    fi
  done
  printf '%s\n' "$out"
}

# expect_counters NODE WHAT PEER_BYTES UPSTREAM_BYTES PEER0 UP0 [REGISTRY]:
# the deltas of NODE's byte counters since PEER0/UP0 must be exactly these,
# and REGISTRY (blob requests at the registry that should not have been)
# must be empty.
expect_counters() {
  local n=$1 what=$2 want_peer=$3 want_up=$4 peer0=$5 up0=$6 unexpected=${7:-} peer up
  peer=$(metric "$n" shoal_peer_received_bytes_total)
  up=$(metric "$n" shoal_upstream_written_bytes_total)
  if [[ $((peer - peer0)) != "$want_peer" || $((up - up0)) != "$want_up" || -n $unexpected ]]; then
    fail "$n ($what): shoal_peer_received_bytes_total grew by $((peer - peer0)) (expected $want_peer)," \
      "shoal_upstream_written_bytes_total by $((up - up0)) (expected $want_up)${unexpected:+; blobs or manifests by digest served by the registry:
$unexpected}
$(why_not "$n")"
  fi
}

# measure_from SOURCE MODE NODE IMG REF [KIND]: NODE gets IMG, which it does
# not hold, and the counters and the registry's log are checked:
#   SOURCE=registry: nobody can help; every blob from the registry, none from
#   peers; lookups recorded as KIND (default "miss").
#   SOURCE=peer: a peer holds IMG; every byte from peers, nothing but the tag
#   from the registry; lookups recorded as "hit".
measure_from() {
  local source=$1 mode=$2 n=$3 img=$4 ref=$5 kind=${6:-miss} total mark reqs peer0 up0
  total=$(image_total "$img")
  assert_no_blobs_on_disk "$n" "$img"
  peer0=$(metric "$n" shoal_peer_received_bytes_total)
  up0=$(metric "$n" shoal_upstream_written_bytes_total)
  mark=$(registry_log_mark)
  measure "$mode" "$n" "$ref"
  reqs=$(registry_requests_since "$mark")
  if [[ $source == registry ]]; then
    expect_counters "$n" "$mode from the registry" 0 "$total" "$peer0" "$up0"
    registry_all_blobs "$reqs" "$img"
  else
    expect_counters "$n" "$mode from peers" "$total" 0 "$peer0" "$up0" \
      "$(registry_blob_requests "$reqs")"
    kind=hit
  fi
  assert_blobs_on_disk "$n" "$img"
  lookups_record "$kind" "$n"
}

# ---------------------------------------------------------------- 1. registry vs peer

img_seq=0
for size in $SIZES; do
  for layers in $LAYERS; do
    img_seq=$((img_seq + 1))
    img=s${size}l$layers
    per_layer=$((size * 1048576 / layers))
    largs=()
    for ((i = 0; i < layers; i++)); do largs+=(--layer "$per_layer"); done
    t0=$(now_ms)
    image_make "$img" "${largs[@]}" --seed $((500 + img_seq))
    t1=$(now_ms)
    image_push "$img" "$REPO"
    rm -rf "$(image_layout "$img")" # the registry has it now
    total=$(image_total "$img")
    nblobs=$(image_blobs "$img" | wc -l)
    ref=$REGISTRY/$REPO:$img
    note "image $img: $layers x $per_layer bytes, $nblobs blobs, $total bytes in all" \
      "(generated in $(secs $((t1 - t0))), pushed in $(secs $(($(now_ms) - t1))))"
    modes=(pull)
    ((BENCH_FETCH)) && modes+=(fetch)
    for ((r = 1; r <= ROUNDS; r++)); do
      # Alternate which mode goes first in a round.
      order=("${modes[@]}")
      if ((r % 2 == 0 && ${#modes[@]} == 2)); then order=(fetch pull); fi
      for mode in "${order[@]}"; do
        net_start reg peer
        R=${NET_NODE[reg]} P=${NET_NODE[peer]}
        measure_from registry "$mode" "$R" "$img" "$ref"
        reg_ms=$MS
        echo "main $size $layers $mode registry $reg_ms" >>"$RESULTS"
        # P must be able to find R's blobs before it asks.
        dht_wait_provided "$R" "$img"
        measure_from peer "$mode" "$P" "$img" "$ref"
        peer_ms=$MS
        echo "main $size $layers $mode peer $peer_ms" >>"$RESULTS"
        note "$(printf '%5s MiB x%d  %-5s round %d/%d: registry %8s, peer %8s (network %d, every byte checked)' \
          "$size" "$layers" "$mode" "$r" "$ROUNDS" "$(secs "$reg_ms")" "$(secs "$peer_ms")" "$NET")"
        net_destroy
      done
    done
  done
done

# ---------------------------------------------------------------- 2. small blobs, DHT on vs off

SMALL_NBLOBS=0
if ((BENCH_SMALL)); then
  img=small
  largs=()
  for ((i = 0; i < SMALL_LAYERS; i++)); do largs+=(--layer "$SMALL_LAYER_SIZE"); done
  image_make "$img" "${largs[@]}" --seed 599
  image_push "$img" "$REPO"
  rm -rf "$(image_layout "$img")"
  SMALL_NBLOBS=$(image_blobs "$img" | wc -l)
  SMALL_TOTAL=$(image_total "$img")
  ref=$REGISTRY/$REPO:$img
  note "image $img: $SMALL_LAYERS x $SMALL_LAYER_SIZE, $SMALL_NBLOBS blobs, $SMALL_TOTAL bytes in all"
  modes=(pull)
  ((BENCH_FETCH)) && modes+=(fetch)
  for ((r = 1; r <= SMALL_ROUNDS; r++)); do
    if ((r % 2)); then order=(on off); else order=(off on); fi
    for mode in "${modes[@]}"; do
      line=""
      for dht in "${order[@]}"; do
        if [[ $dht == on ]]; then
          net_start reg
          measure_from registry "$mode" "${NET_NODE[reg]}" "$img" "$ref" small
          net_destroy
        else
          NET=$((NET + 1))
          n=w${NET}nodht
          unset "NODE_SHOALD_ARGS[$n]"
          node_start "$n" shoal
          assert_no_blobs_on_disk "$n" "$img"
          mark=$(registry_log_mark)
          measure "$mode" "$n" "$ref"
          registry_all_blobs "$(registry_requests_since "$mark")" "$img"
          assert_blobs_on_disk "$n" "$img"
          bench_node_destroy "$n"
        fi
        echo "small $mode $dht $MS" >>"$RESULTS"
        line+=" DHT $dht $(secs "$MS"),"
      done
      note "$(printf 'small image %-5s round %d/%d:%s' "$mode" "$r" "$SMALL_ROUNDS" "${line%,}")"
    done
  done
fi

# ---------------------------------------------------------------- report

runtime_s=$((($(now_ms) - BENCH_T0) / 1000))
# The exact command, with the knobs that differ from the defaults.
cmd="" args=""
if [[ -z $SIZES ]]; then
  args+=' --sizes ""'
elif [[ $SIZES != "10 100 1024" ]]; then
  cmd+="SIZES=\"$SIZES\" "
fi
[[ $LAYERS == "1 4" ]] || cmd+="LAYERS=\"$LAYERS\" "
[[ $ROUNDS == 3 ]] || cmd+="ROUNDS=$ROUNDS "
((BENCH_FETCH)) || cmd+="BENCH_FETCH=0 "
((BENCH_SMALL)) || cmd+="BENCH_SMALL=0 "
[[ $SMALL_ROUNDS == $((3 * ROUNDS)) ]] || cmd+="SMALL_ROUNDS=$SMALL_ROUNDS "
[[ $SMALL_LAYERS == 20 ]] || cmd+="SMALL_LAYERS=$SMALL_LAYERS "
[[ $SMALL_LAYER_SIZE == 100k ]] || cmd+="SMALL_LAYER_SIZE=$SMALL_LAYER_SIZE "
[[ -z $BENCH_PEER_STREAMS ]] || cmd+="BENCH_PEER_STREAMS=$BENCH_PEER_STREAMS "
[[ $SHOALD_ARGS == "--v=0 --vmodule=advertiser=1" ]] || cmd+="SHOALD_ARGS=\"$SHOALD_ARGS\" "
cmd+="integration/bench_p2p.sh$args"

"$SHOAL_PYTHON" - "$RESULTS" "$LOOKUPS" "$ROUNDS" "$SMALL_ROUNDS" "$RESOLVE_TIMEOUT" "$SMALL_NBLOBS" \
  "$SMALL_LAYERS layers of $SMALL_LAYER_SIZE" "$cmd" "$runtime_s" "$(nproc)" "$(containerd --version | awk '{print $3}')" \
  "$BIN_INFO" <<'EOF'
import collections, datetime, statistics, sys

(results, lookups, rounds, small_rounds, timeout, small_nblobs, small_desc, cmd, runtime_s,
 ncpu, ctrd, bin_info) = sys.argv[1:]
small_nblobs, runtime_s = int(small_nblobs), int(runtime_s)

main = collections.defaultdict(list)   # (size, layers, mode, path) -> [ms]
small = collections.defaultdict(list)  # (mode, dht) -> [ms]
for line in open(results):
    f = line.split()
    if f[0] == "main":
        main[(int(f[1]), int(f[2]), f[3], f[4])].append(int(f[5]))
    elif f[0] == "small":
        small[(f[1], f[2])].append(int(f[3]))

def med(v):
    return statistics.median(v) / 1000.0

def runs(v):
    return ", ".join("%.2f" % (x / 1000.0) for x in v)

combos = sorted({(s, l) for (s, l, _, _) in main})
modes = [m for m in ("pull", "fetch") if any(k[2] == m for k in main)]
label = {"pull": "pull with unpack (ctr images pull)", "fetch": "fetch, no unpack (ctr content fetch)"}

def size_name(mib):
    return "%d GiB" % (mib // 1024) if mib % 1024 == 0 else "%d MiB" % mib

print()
print("== 1. registry vs peer: median of %s rounds each, seconds (runs in parentheses)" % rounds)
for mode in modes:
    print()
    print("  %s" % label[mode])
    print("  %-8s %6s %10s %10s %8s   %s" % ("size", "layers", "registry", "peer", "reg/peer", "runs registry | peer"))
    for s, l in combos:
        reg, peer = main.get((s, l, mode, "registry")), main.get((s, l, mode, "peer"))
        if not reg or not peer:
            continue
        print("  %-8s %6d %9.2fs %9.2fs %8.2f   %s | %s" % (
            size_name(s), l, med(reg), med(peer), med(reg) / med(peer), runs(reg), runs(peer)))
print()
print("  every registry round: no byte from peers, the image's bytes written from upstream, every blob GET at")
print("  the registry; every peer round: shoal_peer_received_bytes_total grew by exactly the image's bytes,")
print("  nothing from upstream, no blob or manifest-by-digest request at the registry.")

# Lookups: KIND NODE (bucket LE CUM | sum S | count C | outcome O N)
acc = collections.defaultdict(lambda: {"nodes": set(), "sum": 0.0, "count": 0,
                                       "buckets": collections.defaultdict(float),
                                       "outcomes": collections.defaultdict(float)})
for line in open(lookups):
    f = line.split()
    a = acc[f[0]]
    a["nodes"].add(f[1])
    if f[2] == "bucket":
        a["buckets"][f[3]] += float(f[4])
    elif f[2] == "sum":
        a["sum"] += float(f[3])
    elif f[2] == "count":
        a["count"] += int(float(f[3]))
    elif f[2] == "outcome":
        a["outcomes"][f[3]] += float(f[4])

def le_key(le):
    return float("inf") if le == "+Inf" else float(le)

def le_ms(le):
    return "+Inf" if le == "+Inf" else ("%g ms" % (float(le) * 1000))

def describe(kind):
    a = acc.get(kind)
    if not a or a["count"] == 0:
        return None
    les = sorted(a["buckets"], key=le_key)
    top = next((le for le in les if a["buckets"][le] >= a["count"]), "+Inf")
    dist, prev = [], 0.0
    for le in les:
        c = a["buckets"][le]
        if c > prev:
            dist.append("<=%s: %d" % (le_ms(le), c - prev))
        prev = c
    outcomes = ", ".join("%s %d" % (o, n) for o, n in sorted(a["outcomes"].items()) if n)
    return {"n": a["count"], "nodes": len(a["nodes"]), "mean_ms": 1000 * a["sum"] / a["count"],
            "top": le_ms(top), "dist": "; ".join(dist), "outcomes": outcomes}

print()
print("== 2. miss cost: DHT lookups when no peer has the blob (--peer_resolve_timeout %s)" % timeout)
miss = describe("miss")
hit = describe("hit")
if miss:
    print("  registry-round nodes (%d): %d lookups (%s), mean %.2f ms per blob (sum/count of"
          % (miss["nodes"], miss["n"], miss["outcomes"], miss["mean_ms"]))
    print("  shoal_lookup_duration_seconds), all within the %s bucket; per bucket: %s"
          % (miss["top"], miss["dist"]))
if hit:
    print("  for comparison, peer-round nodes (%d): %d lookups (%s), mean %.2f ms, all within %s"
          % (hit["nodes"], hit["n"], hit["outcomes"], hit["mean_ms"], hit["top"]))
small_lines = []
if small:
    print()
    print("  image of %d blobs (%s), fresh node each time, median of %s rounds each:" % (small_nblobs, small_desc, small_rounds))
    print("  (on and off alternate within a round; the paired figure is the median of the per-round")
    print("  differences on - off, which the machine's drift between rounds affects less)")
    print("  %-6s %9s %9s %12s %12s %15s   %s" % ("mode", "DHT on", "DHT off", "diff of", "paired", "paired diff",
                                                "runs on | off"))
    print("  %-6s %9s %9s %12s %12s %15s" % ("", "median", "median", "medians", "diff", "per blob"))
    for mode in ("pull", "fetch"):
        on, off = small.get((mode, "on")), small.get((mode, "off"))
        if not on or not off:
            continue
        d = med(on) - med(off)
        paired = statistics.median(a - b for a, b in zip(on, off))  # ms
        print("  %-6s %8.3fs %8.3fs %+9.0f ms %+9.0f ms %+12.2f ms   %s | %s" % (
            mode, med(on), med(off), d * 1000, paired, paired / small_nblobs, runs(on), runs(off)))
        small_lines.append((mode, med(on), med(off), d * 1000 / small_nblobs, paired / small_nblobs))
    sm = describe("small")
    if sm:
        print("  its DHT-on nodes' lookups: %d (%s), mean %.2f ms, all within %s"
              % (sm["n"], sm["outcomes"], sm["mean_ms"], sm["top"]))

print()
print("== 3. summary (for README.md)")
print()
print("```sh")
print(cmd)
print("```")
print()
print("%s, %s cores, containerd %s, total runtime %d min %02d s; median of %s rounds, each on fresh nodes"
      % (datetime.date.today().isoformat(), ncpu, ctrd, runtime_s // 60, runtime_s % 60, rounds))
print("(registry: docker-registry on loopback, the DHT on but no node holding the image; peer: the image")
print("held by one other node). Every peer pull got all its bytes from the peer, every registry pull none.")
print("Binary: %s." % bin_info)
print()
hdr = "| image | layers |"
sep = "|---|---|"
for mode in modes:
    hdr += " %s: registry | %s: peer | ratio |" % (mode, mode)
    sep += "---|---|---|"
print(hdr)
print(sep)
for s, l in combos:
    row = "| %s | %d |" % (size_name(s), l)
    for mode in modes:
        reg, peer = main.get((s, l, mode, "registry")), main.get((s, l, mode, "peer"))
        if reg and peer:
            row += " %.2f s | %.2f s | %.2f |" % (med(reg), med(peer), med(reg) / med(peer))
        else:
            row += " | | |"
    print(row)
print()
if miss:
    print("Miss cost (--peer_resolve_timeout %s): %d lookups on the registry-round nodes, mean %.2f ms, all"
          % (timeout, miss["n"], miss["mean_ms"]))
    print("within the %s bucket (%s)." % (miss["top"], miss["outcomes"]))
for mode, on, off, per, paired in small_lines:
    print("%d-blob image (%s), %s, DHT on vs off (medians %.3f s, %.3f s): %+.2f ms per blob"
          % (small_nblobs, small_desc, mode, on, off, paired))
    print("  (median of per-round differences; difference of the medians: %+.2f ms per blob)." % per)
EOF
