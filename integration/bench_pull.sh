#!/usr/bin/env bash
# Pull benchmark: a 1 GiB image (4 uncompressed layers of 256 MiB random data)
# pulled with unpack from a loopback registry, through containerd's built-in
# content store, through shoald (its own HTTP/2 transport, the default) and
# through shoald --content_transport=grpc (gRPC C++'s server), taking turns,
# BENCH_ROUNDS times each (default 3), each time on a fresh containerd root.
# Prints every pull, the medians and each ratio to the built-in store.
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
