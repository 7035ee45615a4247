#!/usr/bin/env bash
# (h) Peer-to-peer miss: image Y, which no node holds, pulled on n2 of a
# three-node DHT. Every blob must come from the registry, intact, with no
# byte from peers; the time the DHT lookups added is logged (each is bounded
# by --peer_resolve_timeout, 20 ms by default).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

p2p_init
image_make y --busybox --layer 5m --layer 3m --seed 72
image_push y shoal/y
REF=$REGISTRY/shoal/y:y
TOTAL=$(image_total y)
NBLOBS=$(image_blobs y | wc -l)

p2p_node_start n1
p2p_node_start n2 "" n1
p2p_node_start n3 "" n1

step "n2 pulls $REF, which no node holds"
mark=$(registry_log_mark)
pull n2 default "$REF"
pull_ms=$PULL_MS
reqs=$(registry_requests_since "$mark")
log "registry requests during the pull:
$reqs"
while read -r digest _; do
  grep -qE "^GET /v2/shoal/y/(blobs|manifests)/$digest$" <<<"$reqs" ||
    fail "n2: no GET of $digest at the registry, though no peer holds it"
done < <(image_blobs y)
assert_blobs_on_disk n2 y
verify_blobs n2 default y

assert_eq 0 "$(metric n2 shoal_peer_received_bytes_total)" "n2: bytes received from peers"
assert_eq "$TOTAL" "$(metric n2 shoal_upstream_written_bytes_total)" "n2: bytes written from the registry"
upstream=$(metric n2 shoal_blob_pulls_total 'source="upstream"')
assert_ge "$upstream" 1 "n2: blobs pulled from the registry"
assert_eq 0 "$(metric n2 shoal_blob_pulls_total 'source="peer"')" "n2: blobs pulled from peers"
assert_eq 0 "$(metric n2 shoal_lookups_total 'outcome="found"')" "n2: lookups that found a provider"
assert_eq "" "$(filled_lines n2)" "n2: blobs filled from peers"
for n in n1 n3; do
  assert_eq 0 "$(metric "$n" shoal_peer_served_bytes_total)" "$n: bytes served to peers"
done

lookups=$(metric n2 shoal_lookups_total)
lookup_s=$(metric n2 shoal_lookup_duration_seconds_sum)
not_found=$(metric n2 shoal_lookups_total 'outcome="not_found"')
timeouts=$(metric n2 shoal_lookups_total 'outcome="timeout"')
log "n2: pull of $NBLOBS blobs ($TOTAL bytes) took $pull_ms ms; $upstream blobs from the registry;" \
  "$lookups DHT lookups ($not_found not found, $timeouts timed out) took $lookup_s s in total," \
  "$(awk -v s="$lookup_s" -v n="$lookups" 'BEGIN {printf "%.1f", n ? 1000 * s / n : 0}') ms each on average" \
  "(bound: the resolve timeout, 20 ms by default, per blob)"

for n in n1 n2 n3; do node_stop "$n"; done
log "PASS"
