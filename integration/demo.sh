#!/usr/bin/env bash
# Shoal demo: a registry and three containerd nodes whose content store is
# shoald, each on its own loopback address (n1 127.0.0.2, n2 127.0.0.3,
# n3 127.0.0.4), joined in one DHT. Generates a sample image (static busybox
# plus two random-data layers), pushes it, pulls it on n1 (from the
# registry), then on n2 and n3 (from their peers), runs it on n2 and n3, and
# says for each node how long the pull took, how many bytes came from the
# registry and from peers, and which peers served them. Cleans up everything
# it started when it ends.
#
#   ./dev.sh demo                 (installs packages, builds, runs this)
#   bazel run //integration:demo
#   integration/demo.sh           (after bazel build //plugin:shoald //plugin:shoal_health_probe)
#
# SHOAL_STORE=builtin runs the same three pulls on containerd's built-in
# store (no shoald, no peers: every node downloads from the registry).

shoal__find_lib() {
  local d
  for d in "${RUNFILES_DIR:-/nonexistent}/shoal/integration" "$0.runfiles/shoal/integration" \
    "$(dirname "$0")" "$PWD/integration"; do
    if [[ -f $d/lib.sh ]]; then
      echo "$d/lib.sh"
      return
    fi
  done
  echo "demo.sh: lib.sh not found" >&2
  exit 1
}
source "$(shoal__find_lib)"

SHOAL_CONTAINERD_LOG_LEVEL=${SHOAL_CONTAINERD_LOG_LEVEL:-info}
say() { printf '%s\n' "$*"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
# human BYTES: 0 B, 1.0 KiB, 33.9 MiB
human() {
  awk -v b="$1" 'BEGIN {
    if (b < 1024) printf "%d B", b
    else if (b < 1048576) printf "%.1f KiB", b / 1024
    else printf "%.1f MiB", b / 1048576 }'
}
secs() { awk -v ms="$1" 'BEGIN {printf "%.2f s", ms / 1000}'; }
NODES=(n1 n2 n3)

shoal_init

say "Shoal demo: containerd $(containerd --version | awk '{print $3}') x3 with content store: $SHOAL_STORE"
say "work dir $SHOAL_WORK (removed at the end), logs in $SHOAL_LOGS"
say ""

registry_start
say "1. registry: Debian's docker-registry on http://$REGISTRY (storage $SHOAL_WORK/registry/data)"

t0=$(now_ms)
image_make demo --busybox --layer 24m --layer 8m --seed 2024
say "2. image generated in $(secs $(($(now_ms) - t0))) by integration/mkimage.py (OCI layout, uncompressed tar layers):"
jq -r '.blobs[] | "     \(.kind | . + "        " | .[0:8]) \(.digest)  \(.size) bytes"' "$(image_json demo)"
TOTAL=$(image_total demo)
say "     total $(mib "$TOTAL")"

t0=$(now_ms)
image_push demo shoal/demo
REF=$REGISTRY/shoal/demo:demo
say "3. pushed with skopeo to $REF in $(secs $(($(now_ms) - t0)))"

p2p_node_start n1 "" "" "$SHOAL_STORE"
p2p_node_start n2 "" n1 "$SHOAL_STORE"
p2p_node_start n3 "" n1 "$SHOAL_STORE"
if [[ $SHOAL_STORE == shoal ]]; then
  say "4. three nodes, each a containerd using a shoald as its content store (proxy plugin 'shoal'):"
  for n in "${NODES[@]}"; do
    say "     $n: shoald pid ${NODE_SHOALD_PID[$n]}, DHT + peer service on ${NODE_DHT[$n]}, metrics http://${NODE_METRICS[$n]:-(none)}/metrics, seeds ${NODE_BOOTSTRAP[$n]:-none (first node)}"
  done
else
  say "4. three nodes, each a containerd with its built-in content store:"
  for n in "${NODES[@]}"; do say "     $n: containerd pid ${NODE_CTRD_PID[$n]}, root ${NODE_DIR[$n]}/root"; done
fi

# registry_bytes REQUESTS: bytes of the image's blobs the registry served
# (GETs of a manifest by digest or of a blob), and how many.
registry_bytes() {
  local digest size bytes=0 count=0
  while read -r digest size; do
    if grep -qE "^GET /v2/shoal/demo/(blobs|manifests)/$digest$" <<<"$1"; then
      bytes=$((bytes + size))
      count=$((count + 1))
    fi
  done < <(image_blobs demo)
  echo "$bytes $count"
}
# metric_or NODE NAME [FILTER]: the metric, or "n/a" without metrics.
metric_or() {
  if [[ -n ${NODE_METRICS[$1]:-} ]]; then metric "$@"; else echo n/a; fi
}

declare -A PULL_TIME=() REG_BYTES=() REG_BLOBS=()
step=5
for n in "${NODES[@]}"; do
  mark=$(registry_log_mark)
  pull "$n" default "$REF"
  PULL_TIME[$n]=$PULL_MS
  read -r REG_BYTES[$n] REG_BLOBS[$n] < <(registry_bytes "$(registry_requests_since "$mark")")
  verify_blobs "$n" default demo
  say "$step. $n: ctr images pull --plain-http $REF (unpack with $SHOAL_SNAPSHOTTER): $(secs "$PULL_MS");" \
    "${REG_BLOBS[$n]} blobs from the registry; every blob read back intact"
  step=$((step + 1))
  if [[ $SHOAL_STORE == shoal ]]; then
    # Before the next node pulls, its peers must know where the blobs are.
    dht_wait_provided "$n" demo
  fi
done

for n in n2 n3; do
  t0=$(now_ms)
  check_run "$n" default "$REF" demo
  say "$step. $n: ctr run --rm $REF ($(secs $(($(now_ms) - t0)))) printed:"
  printf '%s\n' "$RUN_OUT" | sed 's/^/     | /'
  step=$((step + 1))
done

say ""
say "Per node (image: $(image_blobs demo | wc -l) blobs, $(mib "$TOTAL")):"
printf '  %-4s %-10s %-10s %-22s %-14s %-14s %s\n' node address "pull" "from registry" "from peers" "served peers" "filled from (blobs)"
for n in "${NODES[@]}"; do
  peers=n/a reg_m=n/a served=n/a by=-
  if [[ $SHOAL_STORE == shoal ]]; then
    peers=$(metric_or "$n" shoal_peer_received_bytes_total)
    reg_m=$(metric_or "$n" shoal_upstream_written_bytes_total)
    served=$(metric_or "$n" shoal_peer_served_bytes_total)
    [[ $peers == n/a ]] || peers=$(human "$peers")
    [[ $served == n/a ]] || served=$(human "$served")
    by=$(filled_lines "$n" | sed -nE 's/.* from=([^ ]+).*/\1/p' | sort | uniq -c |
      while read -r c ep; do printf '%s (%s), ' "$(node_of_endpoint "$ep")" "$c"; done)
    by=${by%, }
    by=${by:--}
  fi
  reg="$(human "${REG_BYTES[$n]}") (${REG_BLOBS[$n]})"
  [[ $reg_m == n/a || $reg_m == "${REG_BYTES[$n]}" ]] ||
    reg+=" [metric: $(human "$reg_m")]"
  printf '  %-4s %-10s %-10s %-22s %-14s %-14s %s\n' "$n" "${NODE_IP[$n]}" "$(secs "${PULL_TIME[$n]}")" \
    "$reg" "$peers" "$served" "$by"
done
say "  pull: ctr images pull with unpack; from registry: the blobs the registry served during that pull"
say "  (count); from peers, served peers: shoald's metrics shoal_peer_received_bytes_total and"
say "  shoal_peer_served_bytes_total (served: to the later pulls too); filled from: the peers named in"
say "  shoald's 'fetcher: filled ... from=' log lines"
say ""

for n in "${NODES[@]}"; do node_stop "$n"; done
logdir=$SHOAL_LOGS
if [[ -z ${SHOAL_KEEP:-} && $SHOAL_LOGS == "$SHOAL_WORK"/* ]]; then
  # The work dir goes away at exit; keep the (small) logs.
  logdir=$(mktemp -d /tmp/shoal-demo-logs-XXXXXX)
  cp -a "$SHOAL_LOGS/." "$logdir/"
fi
if [[ $SHOAL_STORE == shoal ]]; then
  say "$step. containerd and shoald stopped on every node (each shoald exited 0 on SIGTERM); logs of every component in $logdir"
else
  say "$step. containerd stopped on every node; logs of every component in $logdir"
fi
say ""
say "demo OK"
