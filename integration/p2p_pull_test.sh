#!/usr/bin/env bash
# (g) Peer-to-peer pull: three shoald nodes (n1-n3 on 127.0.0.2-4) in one
# DHT. Image X is pulled on n1 from the registry, then on n2 and n3, which
# must get every blob from peers: the registry sees only the tag being
# resolved, their metrics count exactly X's bytes as received from peers,
# every blob reads back byte for byte and the image runs on n3.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

p2p_init
image_make x --busybox --layer 6m --layer 4m --layer 3m --seed 71
image_push x shoal/x
REF=$REGISTRY/shoal/x:x
TOTAL=$(image_total x)
NBLOBS=$(image_blobs x | wc -l)
# The only requests allowed at the registry for a pull served by peers:
# resolving the tag (HEAD, or GET if HEAD is refused).
TAG_RE='^(HEAD|GET) /v2/shoal/x/manifests/x$'

p2p_node_start n1
p2p_node_start n2 "" n1
p2p_node_start n3 "" n1

step "n1 pulls $REF from the registry ($NBLOBS blobs, $TOTAL bytes)"
mark=$(registry_log_mark)
pull n1 default "$REF"
reqs=$(registry_requests_since "$mark")
while read -r digest _; do
  grep -qE "^GET /v2/shoal/x/(blobs|manifests)/$digest$" <<<"$reqs" ||
    fail "n1: no GET of $digest at the registry, though no peer holds it:
$reqs"
done < <(image_blobs x)
assert_eq 0 "$(metric n1 shoal_peer_received_bytes_total)" "n1: bytes received from peers"
assert_eq "$TOTAL" "$(metric n1 shoal_upstream_written_bytes_total)" "n1: bytes written from the registry"
dht_wait_provided n1 x

for n in n2 n3; do
  step "$n pulls $REF: every blob must come from a peer"
  mark=$(registry_log_mark)
  pull "$n" default "$REF"
  reqs=$(registry_requests_since "$mark")
  log "$n: registry requests during the pull:
$reqs"
  grep -qE "$TAG_RE" <<<"$reqs" || fail "$n: the pull did not resolve the tag at the registry:
$reqs"
  others=$(grep -vE "$TAG_RE" <<<"$reqs" || true)
  assert_eq "" "$others" "$n: registry requests other than the tag resolution"
  assert_eq "$TOTAL" "$(metric "$n" shoal_peer_received_bytes_total)" "$n: bytes received from peers"
  assert_eq 0 "$(metric "$n" shoal_upstream_written_bytes_total)" "$n: bytes written from the registry"
  assert_eq "$NBLOBS" "$(metric "$n" shoal_blob_pulls_total 'source="peer"')" "$n: blobs pulled from peers"
  assert_eq 0 "$(metric "$n" shoal_blob_pulls_total 'source="upstream"')" "$n: blobs pulled from the registry"
  while read -r digest size; do
    from=$(filled_from "$n" "$digest")
    [[ -n $from ]] || fail "$n: no 'fetcher: filled digest=$digest' line in the shoald log"
    log "$n: $digest ($size bytes) filled from $(node_of_endpoint "$from") ($from)"
  done < <(image_blobs x)
  assert_blobs_on_disk "$n" x
  verify_blobs "$n" default x
  dht_wait_provided "$n" x
done

step "what the peers served"
served=0
for n in n1 n2 n3; do
  s=$(metric "$n" shoal_peer_served_bytes_total)
  log "$n: served $s bytes to peers"
  served=$((served + s))
done
assert_eq $((2 * TOTAL)) "$served" "bytes served by all nodes together (n2 and n3 each got X once)"
assert_ge "$(metric n1 shoal_lookups_total 'outcome="not_found"')" 1 "n1: lookups that found no provider"
assert_eq 0 "$(metric n1 shoal_lookups_total 'outcome="found"')" "n1: lookups that found a provider"
assert_ge "$(metric n2 shoal_lookups_total 'outcome="found"')" "$NBLOBS" "n2: lookups that found a provider"

step "run X on n3"
check_run n3 default "$REF" x

for n in n1 n2 n3; do node_stop "$n"; done
log "PASS"
