#!/usr/bin/env bash
# (k) A restarted node still serves its peers: n1 pulls X, its shoald is
# stopped with SIGTERM (must exit 0) and started again on the same root
# (advertising what it holds, rejoining through n2), then n2 pulls X from
# n1: no blob at the registry, X's bytes received from peers.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

p2p_init
image_make x --busybox --layer 4m --layer 2m --seed 76
image_push x shoal/x
REF=$REGISTRY/shoal/x:x
TOTAL=$(image_total x)
TAG_RE='^(HEAD|GET) /v2/shoal/x/manifests/x$'

p2p_node_start n1
p2p_node_start n2 "" n1

step "n1 pulls X from the registry"
pull n1 default "$REF"
dht_wait_provided n1 x

step "restart n1's shoald on the same root"
shoald_restart n1
# Advertised again at start, from what is on disk.
dht_wait_provided n1 x
assert_contains "$(log_since n1)" "dht: advertising stored blobs count=$(image_blobs x | wc -l)" "n1's shoald log after the restart"
containerd_wait_store n1 default x
verify_blobs n1 default x
assert_eq 0 "$(metric n1 shoal_peer_served_bytes_total)" "n1: bytes served since the restart"

step "n2 pulls X: every blob from the restarted n1"
mark=$(registry_log_mark)
pull n2 default "$REF"
reqs=$(registry_requests_since "$mark")
log "registry requests during n2's pull:
$reqs"
others=$(grep -vE "$TAG_RE" <<<"$reqs" || true)
assert_eq "" "$others" "n2: registry requests other than the tag resolution"
assert_eq "$TOTAL" "$(metric n2 shoal_peer_received_bytes_total)" "n2: bytes received from peers"
assert_eq "$TOTAL" "$(metric n1 shoal_peer_served_bytes_total)" "n1: bytes served since the restart"
while read -r digest _; do
  assert_eq "${NODE_DHT[n1]}" "$(filled_from n2 "$digest")" "n2: the peer that filled $digest"
done < <(image_blobs x)
verify_blobs n2 default x
check_run n2 default "$REF" x

for n in n1 n2; do node_stop "$n"; done
log "PASS"
