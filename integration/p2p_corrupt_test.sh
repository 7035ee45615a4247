#!/usr/bin/env bash
# (j) A peer serves corrupt bytes: n1 runs with --fault_corrupt_uploads (its
# peer service flips bytes in what it sends) and holds image Z. n2's pull of
# Z must complete from the registry with every blob intact, count the
# corrupt transfers, and keep no wrong blob: every file in either node's
# content root hashes to its name.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

p2p_init
image_make z --busybox --layer 3m --layer 1m --seed 75
image_push z shoal/z
REF=$REGISTRY/shoal/z:z
NBLOBS=$(image_blobs z | wc -l)

NODE_SHOALD_ARGS[n1]="--fault_corrupt_uploads"
p2p_node_start n1
p2p_node_start n2 "" n1

step "n1 (corrupting its uploads) pulls Z from the registry"
pull n1 default "$REF"
dht_wait_provided n1 z
verify_blobs n1 default z

step "n2 pulls Z: n1 serves corrupt bytes, the registry must fill in"
mark=$(registry_log_mark)
pull n2 default "$REF"
reqs=$(registry_requests_since "$mark")
log "registry requests during n2's pull:
$reqs"
while read -r digest _; do
  grep -qE "^GET /v2/shoal/z/(blobs|manifests)/$digest$" <<<"$reqs" ||
    fail "n2: no GET of $digest at the registry, though its only peer serves corrupt bytes"
done < <(image_blobs z)
assert_blobs_on_disk n2 z
verify_blobs n2 default z
corrupt=$(metric n2 shoal_peer_fetch_failures_total 'reason="corrupt"')
log "n2: $corrupt peer fetches failed as corrupt; all failures: $(metrics_text n2 | grep '^shoal_peer_fetch_failures_total' | tr '\n' ' ')"
assert_ge "$corrupt" 1 "n2: peer fetches that failed as corrupt"
assert_eq 0 "$(metric n2 shoal_blob_pulls_total 'source="peer"')" "n2: blobs pulled from peers"
assert_eq "$NBLOBS" "$(metric n2 shoal_blob_pulls_total 'source="upstream"')" "n2: blobs pulled from the registry"
assert_eq "" "$(filled_lines n2)" "n2: blobs filled from peers"
assert_contains "$(log_since n2)" "fetcher: falling back to upstream digest=" "n2's shoald log"
assert_ge "$(metric n1 shoal_peer_served_bytes_total)" 1 "n1: bytes served (corrupted) to n2"

step "no wrong blob in any store"
verify_store n1
verify_store n2
for n in n1 n2; do
  leftover=$(find "$(node_content_root "$n")/ingest" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  assert_eq 0 "$leftover" "$n: ingest directories left after the pulls"
done
check_run n2 default "$REF" z

for n in n1 n2; do node_stop "$n"; done
log "PASS"
