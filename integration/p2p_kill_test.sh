#!/usr/bin/env bash
# (i) A peer dies in the middle of serving a large layer. Uploads are capped
# (--peer_upload_bytes_per_second) so that a 256 MiB layer takes seconds to
# stream.
#   1. n1 and n3 hold image B; n2 fetches it; once one of them has streamed
#      16 MiB of the layer to n2 it is SIGKILLed: n2's fetch must complete
#      from the other peer, which serves the rest (each byte is received
#      once), byte-identical, without the registry.
#   2. Only the surviving node holds image C; n2 fetches it; the survivor is
#      SIGKILLed mid-stream: n2 must complete from the registry (which serves
#      the layer), byte-identical, and log the fallback.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Upload cap of the serving nodes (bytes per second, all streams together).
RATE=${SHOAL_KILL_TEST_RATE:-50000000}
# How far into the layer's stream the server is killed.
KILL_AFTER=$((16 << 20))

p2p_init
image_make b --layer 256m --seed 73
image_make c --layer 200m --seed 74
image_push b shoal/b
image_push c shoal/c
B_LAYER=$(image_field b '.layers[0]')
C_LAYER=$(image_field c '.layers[0]')
B_SIZE=$(blob_size b "$B_LAYER")
C_SIZE=$(blob_size c "$C_LAYER")

NODE_SHOALD_ARGS[n1]="--peer_upload_bytes_per_second=$RATE"
NODE_SHOALD_ARGS[n3]="--peer_upload_bytes_per_second=$RATE"
p2p_node_start n1
p2p_node_start n2 "" n1
p2p_node_start n3 "" n1

# fetch_bg NODE REF OUT: `ctr content fetch` in the background; pid in $BG_PID.
fetch_bg() {
  timeout 300 ctr --address "${NODE_DIR[$1]}/c.sock" -n default content fetch --plain-http "$2" >"$3" 2>&1 &
  BG_PID=$!
}
# fetch_wait PID OUT WHAT: the background fetch must succeed.
fetch_wait() {
  local rc=0
  wait "$1" || rc=$?
  ((rc == 0)) || fail "$3 failed (exit $rc):
$(tail -20 "$2")"
}
# shoal_peer_served_bytes_total of each serving node before n2's fetch.
declare -A SERVED0=()
# streaming_node NODE...: succeeds when one of NODEs has served more than
# KILL_AFTER bytes since SERVED0 was taken; its name in $STREAMING.
streaming_node() {
  local m s
  for m in "$@"; do
    s=$(metric "$m" shoal_peer_served_bytes_total)
    if ((s - SERVED0[$m] > KILL_AFTER)); then
      STREAMING=$m
      STREAMED=$((s - SERVED0[$m]))
      return 0
    fi
  done
  return 1
}
n2_has() { [[ -f $(node_content_root n2)/blobs/sha256/${1#sha256:} ]]; }

step "case 1: n1 fetches B ($B_SIZE-byte layer) from the registry, n3 from n1 (upload cap $RATE B/s)"
fetch n1 default "$REGISTRY/shoal/b:b"
dht_wait_provided n1 b
fetch n3 default "$REGISTRY/shoal/b:b"
n3_ms=$PULL_MS
assert_eq "$(image_total b)" "$(metric n3 shoal_peer_received_bytes_total)" "n3: bytes of B received from peers"
min_ms=$((B_SIZE * 700 / RATE))
log "n3 fetched B from n1 in $n3_ms ms; at $RATE B/s the layer needs $((B_SIZE * 1000 / RATE)) ms"
assert_ge "$n3_ms" "$min_ms" "n3's fetch time (ms) of B from n1 capped at $RATE B/s"
verify_blobs_on_disk n3 b
dht_wait_provided n3 b

step "case 1: n2 fetches B; kill whichever of n1/n3 streams the layer"
for m in n1 n3; do SERVED0[$m]=$(metric "$m" shoal_peer_served_bytes_total); done
mark=$(registry_log_mark)
out=$SHOAL_LOGS/n2-fetch-b.out
fetch_bg n2 "$REGISTRY/shoal/b:b" "$out"
pid=$BG_PID
t0=$(now_ms)
wait_for_proc "n1 or n3 to stream $KILL_AFTER bytes of B's layer to n2" 60 "$pid" streaming_node n1 n3
victim=$STREAMING
survivor=$([[ $victim == n1 ]] && echo n3 || echo n1)
n2_has "$B_LAYER" && fail "n2 already holds B's layer: nothing to interrupt"
shoald_kill "$victim"
log "$victim killed after streaming $STREAMED bytes of B ($(($(now_ms) - t0)) ms into n2's fetch)"
fetch_wait "$pid" "$out" "n2's fetch of B after $victim died"
log "n2's fetch of B completed $(($(now_ms) - t0)) ms after it started"
reqs=$(registry_requests_since "$mark")
log "registry requests during n2's fetch of B:
$reqs"
assert_eq "" "$(registry_blob_requests "$reqs")" "n2: manifest-by-digest and blob requests at the registry for B"
verify_blobs_on_disk n2 b
survivor_served=$(($(metric "$survivor" shoal_peer_served_bytes_total) - SERVED0[$survivor]))
log "$survivor served $survivor_served bytes to n2 after $victim died"
assert_ge "$survivor_served" 1 "bytes of B that $survivor served to n2"
# The rest, not the whole layer again: the fill resumes where the dead peer
# stopped, so n2 received each byte of B once.
((survivor_served < B_SIZE)) ||
  fail "$survivor served $survivor_served bytes, the whole $B_SIZE-byte layer again, instead of the rest"
assert_eq "$(image_total b)" "$(metric n2 shoal_peer_received_bytes_total)" "n2: bytes of B received from peers"
from=$(filled_from n2 "$B_LAYER")
log "n2: B's layer filled from: $from"
assert_contains "$from" "${NODE_DHT[$survivor]}" "n2: the peer that filled B's layer"
assert_eq 0 "$(metric n2 shoal_upstream_written_bytes_total)" "n2: bytes written from the registry"
log "n2 fetch failures: $(metrics_text n2 | grep '^shoal_peer_fetch_failures_total' | tr '\n' ' ')"

step "case 2: only $survivor holds C ($C_SIZE-byte layer); it dies while streaming to n2"
fetch "$survivor" default "$REGISTRY/shoal/c:c"
dht_wait_provided "$survivor" c
SERVED0[$survivor]=$(metric "$survivor" shoal_peer_served_bytes_total)
mark=$(registry_log_mark)
out=$SHOAL_LOGS/n2-fetch-c.out
fetch_bg n2 "$REGISTRY/shoal/c:c" "$out"
pid=$BG_PID
t0=$(now_ms)
wait_for_proc "$survivor to stream $KILL_AFTER bytes of C's layer to n2" 60 "$pid" streaming_node "$survivor"
n2_has "$C_LAYER" && fail "n2 already holds C's layer: nothing to interrupt"
shoald_kill "$survivor"
log "$survivor killed after streaming $STREAMED bytes of C ($(($(now_ms) - t0)) ms into n2's fetch)"
fetch_wait "$pid" "$out" "n2's fetch of C after $survivor died"
log "n2's fetch of C completed $(($(now_ms) - t0)) ms after it started"
reqs=$(registry_requests_since "$mark")
log "registry requests during n2's fetch of C:
$reqs"
grep -qE "^GET /v2/shoal/c/blobs/$C_LAYER$" <<<"$reqs" ||
  fail "n2: no GET of C's layer $C_LAYER at the registry after its only peer died"
verify_blobs_on_disk n2 c
assert_contains "$(log_since n2)" "fetcher: falling back to upstream digest=$C_LAYER" "n2's shoald log"
assert_eq "" "$(filled_from n2 "$C_LAYER")" "n2: peers that filled C's layer"
assert_ge "$(metric n2 shoal_upstream_written_bytes_total)" "$C_SIZE" "n2: bytes written from the registry"
assert_ge "$(metric n2 shoal_peer_fetch_failures_total)" 1 "n2: failed peer fetches"
log "n2 fetch failures: $(metrics_text n2 | grep '^shoal_peer_fetch_failures_total' | tr '\n' ' ')"
verify_store n2

node_stop n2
log "PASS"
