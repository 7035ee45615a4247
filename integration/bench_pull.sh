#!/usr/bin/env bash
# Pull benchmark: a 1 GiB image (4 uncompressed layers of 256 MiB random data)
# pulled with unpack from a loopback registry, through containerd's built-in
# content store, through shoald (its own HTTP/2 transport, the default) and
# through shoald --content_transport=grpc (gRPC C++'s server), taking turns,
# BENCH_ROUNDS times each (default 3), each time on a fresh containerd root.
# Prints every pull, the medians and each ratio to the built-in store.
# Then the unpack alone: on one node per content store that keeps the image's
# blobs, the image's snapshots are removed and it is pulled again
# BENCH_UNPACK_ROUNDS times (default 3), so containerd downloads nothing and
# reads every layer back through the store in 32 KiB Read streams; for each
# store the wall time and the CPU time containerd and shoald spent
# (/proc/PID/stat), per Read stream.
#
#   bazel run //integration:bench_pull
#   integration/bench_pull.sh     (after bazel build //plugin:shoald //plugin:shoal_health_probe)
#
# Knobs: BENCH_ROUNDS (3), BENCH_LAYERS (4), BENCH_LAYER_SIZE (256m),
# BENCH_STORES ("builtin shoal shoal-grpc").
# Disk: about 3 GiB at peak (registry copy, one node's blobs and snapshots);
# the OCI layout is deleted once pushed, each node's root after its pull.

shoal__find_lib() {
  local d
  for d in "${RUNFILES_DIR:-/nonexistent}/shoal/integration" "$0.runfiles/shoal/integration" \
    "$(dirname "$0")" "$PWD/integration"; do
    if [[ -f $d/lib.sh ]]; then
      echo "$d/lib.sh"
      return
    fi
  done
  echo "bench_pull.sh: lib.sh not found" >&2
  exit 1
}
source "$(shoal__find_lib)"

BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_LAYERS=${BENCH_LAYERS:-4}
BENCH_LAYER_SIZE=${BENCH_LAYER_SIZE:-256m}
read -r -a stores <<<"${BENCH_STORES:-builtin shoal shoal-grpc}"
# Quiet components: logging is not what is measured.
SHOAL_CONTAINERD_LOG_LEVEL=${SHOAL_CONTAINERD_LOG_LEVEL:-warn}
SHOALD_ARGS=${SHOALD_ARGS:---v=0}

shoal_init
# Steps run with their log lines silenced (2>/dev/null) to keep the tables
# readable; a failing step still says why, on the script's own stderr.
exec 3>&2
SHOAL_FAIL_FD=3
free_mib=$(df -m --output=avail "$SHOAL_WORK" | tail -1)
((free_mib > 4096)) || fail "bench_pull needs ~4 GiB free under /tmp, only $free_mib MiB available"
shoald_bin >/dev/null # fail early if it is missing

registry_start
layers=()
for ((i = 0; i < BENCH_LAYERS; i++)); do layers+=(--layer "$BENCH_LAYER_SIZE"); done
t0=$(now_ms)
image_make bench "${layers[@]}" --seed 4242
total=$(image_field bench .total_size)
log "generated $BENCH_LAYERS x $BENCH_LAYER_SIZE image ($total bytes) in $(($(now_ms) - t0)) ms"
t0=$(now_ms)
image_push bench shoal/bench
log "pushed in $(($(now_ms) - t0)) ms"
rm -rf "$(image_layout bench)" # keep disk tidy: the registry has it now
REF=$REGISTRY/shoal/bench:bench

# go_ms DURATION: a Go duration ("731.2ms", "12.5s", "1m2.5s") in ms.
go_ms() {
  "$SHOAL_PYTHON" -c '
import re, sys
units = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1, "us": 1e-3, "\u00b5s": 1e-3, "ns": 1e-6}
print(round(sum(float(v) * units[u] for v, u in re.findall(r"([0-9.]+)(h|ms|m|s|us|\u00b5s|ns)", sys.argv[1]))))' "$1"
}

results=$SHOAL_WORK/results.txt
: >"$results"
printf '\n%-6s %-8s %10s %10s %12s %12s\n' round store "pull ms" "MiB/s" "download ms" "unpack ms"
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
  # Rotate which store goes first, so none always runs on a warmer machine.
  order=()
  for ((i = 0; i < ${#stores[@]}; i++)); do order+=("${stores[(i + r - 1) % ${#stores[@]}]}"); done
  for store in "${order[@]}"; do
    n=r$r-$store
    case $store in
    shoal-grpc)
      NODE_SHOALD_ARGS[$n]=--content_transport=grpc
      node_start "$n" shoal 2>/dev/null
      ;;
    *) node_start "$n" "$store" 2>/dev/null ;;
    esac
    pull "$n" default "$REF" 2>/dev/null
    ms=$PULL_MS
    # ctr prints the download's progress ("elapsed: 12.3 s") and then
    # "unpacking ..." followed by "done: <Go duration>".
    unpack_ms=$(go_ms "$(grep -a -o 'done: [^[:space:]]*' <<<"$RUN_OUT" | tail -1 | cut -d' ' -f2)")
    dl_ms=$(grep -a -o 'elapsed: [0-9.]* s' <<<"$RUN_OUT" | tail -1 | awk '{printf "%d", $2 * 1000}')
    # containerd checked every digest at commit; make sure everything is there.
    assert_blobs_on_disk "$n" bench
    node_destroy "$n" 2>/dev/null
    echo "$store $ms ${dl_ms:-0} ${unpack_ms:-0}" >>"$results"
    printf '%-6s %-8s %10d %10.1f %12d %12d\n' "$r" "$store" "$ms" \
      "$(awk -v b="$total" -v ms="$ms" 'BEGIN {print b / 1048576 / (ms / 1000)}')" "${dl_ms:-0}" "${unpack_ms:-0}"
  done
done

"$SHOAL_PYTHON" - "$results" "$total" <<'EOF'
import statistics, sys
runs, dl, unpack = {}, {}, {}
for line in open(sys.argv[1]):
    store, ms, d, u = line.split()
    runs.setdefault(store, []).append(int(ms))
    dl.setdefault(store, []).append(int(d))
    unpack.setdefault(store, []).append(int(u))
total = int(sys.argv[2])
med = {s: statistics.median(v) for s, v in runs.items()}
print()
for s in runs:
    print("median %-10s %8.0f ms  (%.1f MiB/s; download %.0f ms, unpack %.0f ms; runs: %s)" % (
        s, med[s], total / 1048576 / (med[s] / 1000), statistics.median(dl[s]),
        statistics.median(unpack[s]), " ".join(map(str, runs[s]))))
if "builtin" in runs:
    for s in runs:
        if s == "builtin":
            continue
        print("ratio %s/builtin: %.2f  (> 1 means slower than the built-in store)" % (
            s, med[s] / med["builtin"]))
        for name, part in (("download", dl), ("unpack", unpack)):
            b, x = statistics.median(part["builtin"]), statistics.median(part[s])
            if b > 0:
                print("  %s ratio: %.2f" % (name, x / b))
EOF

# ---------------------------------------------------------------- unpack only
BENCH_UNPACK_ROUNDS=${BENCH_UNPACK_ROUNDS:-3}
clk_tck=$(getconf CLK_TCK)
# cpu_ms PID: user + system CPU time of PID so far, in ms.
cpu_ms() {
  sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$clk_tck" '{printf "%d", ($12 + $13) * 1000 / hz}'
}
# Read streams one unpack opens: about one per 32 KiB of each layer (the tar
# headers add a few small ones).
streams=$("$SHOAL_PYTHON" -c 'import sys; print(sum((s + 32767) // 32768 for s in map(int, sys.argv[1:])))' \
  $(image_field bench '.blobs[] | select(.kind == "layer") | .size'))
unpack_results=$SHOAL_WORK/unpack.txt
: >"$unpack_results"
has_store() { [[ " ${stores[*]} " == *" $1 "* ]]; }
if has_store builtin; then
  node_start u-builtin builtin 2>/dev/null
  pull u-builtin default "$REF" 2>/dev/null
fi
if has_store shoal || has_store shoal-grpc; then
  node_start u-shoal shoal 2>/dev/null
  pull u-shoal default "$REF" 2>/dev/null
fi
ustores=("${stores[@]}")
printf '\nunpack only (%d Read streams each):\n%-6s %-10s %10s %16s %12s\n' "$streams" round store "unpack ms" "containerd cpu ms" "shoald cpu ms"
for ((r = 1; r <= BENCH_UNPACK_ROUNDS; r++)); do
  for ((i = 0; i < ${#ustores[@]}; i++)); do
    store=${ustores[(i + r - 1) % ${#ustores[@]}]}
    case $store in
    builtin) n=u-builtin ;;
    *)
      n=u-shoal
      shoald_stop "$n"
      NODE_SHOALD_ARGS[$n]=$([[ $store == shoal-grpc ]] && echo --content_transport=grpc || echo "")
      shoald_start "$n" 2>/dev/null
      containerd_wait_store "$n" default bench 2>/dev/null
      ;;
    esac
    remove_snapshots "$n" default "$SHOAL_SNAPSHOTTER"
    c0=$(cpu_ms "${NODE_CTRD_PID[$n]}")
    s0=0
    [[ $store != builtin ]] && s0=$(cpu_ms "${NODE_SHOALD_PID[$n]}")
    pull "$n" default "$REF" 2>/dev/null
    c1=$(cpu_ms "${NODE_CTRD_PID[$n]}")
    s1=0
    [[ $store != builtin ]] && s1=$(cpu_ms "${NODE_SHOALD_PID[$n]}")
    echo "$store $PULL_MS $((c1 - c0)) $((s1 - s0))" >>"$unpack_results"
    printf '%-6s %-10s %10d %16d %12d\n' "$r" "$store" "$PULL_MS" $((c1 - c0)) $((s1 - s0))
  done
done

"$SHOAL_PYTHON" - "$unpack_results" "$streams" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    store, ms, c, s = line.split()
    rows.setdefault(store, []).append((int(ms), int(c), int(s)))
streams = int(sys.argv[2])
med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
print()
base = med.get("builtin")
for k, (ms, c, s) in med.items():
    line = "median %-10s unpack %6.0f ms  containerd cpu %6.0f ms  shoald cpu %6.0f ms" % (k, ms, c, s)
    if base and k != "builtin":
        line += ("  | per Read stream: +%.0f us wall, containerd +%.0f us cpu, shoald %.0f us cpu;"
                 " unpack ratio %.2f" % ((ms - base[0]) * 1e3 / streams, (c - base[1]) * 1e3 / streams,
                                         s * 1e3 / streams, ms / base[0]))
    print(line)
EOF
