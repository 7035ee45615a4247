#!/usr/bin/env bash
# (l) One download for one digest wanted twice at once: n2 pulls X in two
# namespaces at the same time while n1, the only holder, serves slowly. The
# two pulls open two writers per blob (two refs); n2 must fetch every blob
# from n1 once: its peer bytes and n1's served bytes both equal X's bytes,
# and at least one fill waited for the other instead of downloading.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

p2p_init
# 48 MiB at 16 MB/s: the layer's transfer lasts about 3 s, far longer than
# the gap between the two pulls' starts.
image_make x --busybox --layer 48m --seed 91
image_push x shoal/x
REF=$REGISTRY/shoal/x:x
TOTAL=$(image_total x)

NODE_SHOALD_ARGS[n1]="--peer_upload_bytes_per_second=16000000"
p2p_node_start n1
p2p_node_start n2 "" n1

step "n1 pulls X from the registry"
pull n1 default "$REF"
dht_wait_provided n1 x

step "n2 pulls X in namespaces a and b at once"
mark=$(registry_log_mark)
pids=()
for ns in a b; do
  (pull n2 "$ns" "$REF") &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || fail "n2: one of the two concurrent pulls failed (see above)"
done
reqs=$(registry_requests_since "$mark")
others=$(grep -vE '^(HEAD|GET) /v2/shoal/x/manifests/x$' <<<"$reqs" || true)
assert_eq "" "$others" "n2: registry requests other than the tag resolutions"

assert_eq "$TOTAL" "$(metric n2 shoal_peer_received_bytes_total)" "n2: bytes received from peers (each blob once)"
assert_eq "$TOTAL" "$(metric n1 shoal_peer_served_bytes_total)" "n1: bytes served"
dedup=$(metric n2 shoal_peer_fetch_dedup_total)
log "n2: fills that waited for a download in flight: $dedup"
assert_ge "$dedup" 1 "n2: fills that shared a download in flight"
for ns in a b; do
  verify_blobs n2 "$ns" x
done
verify_store n2
check_run n2 b "$REF" x

for n in n1 n2; do node_stop "$n"; done
log "PASS"
