#!/usr/bin/env bash
# (c) Through shoald: two concurrent pulls of one image, first in two
# namespaces, then (another image) twice in the same namespace. Both pulls must
# succeed and every blob must read back intact. A throttling proxy in front of
# the registry makes each pull last long enough for the two to overlap.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shoal_init
registry_start
# 4 MiB/s per connection: each 6 MiB layer takes ~1.5 s to download, so the
# two pulls overlap even if one of them starts a few hundred ms late.
proxy_start proxy $((4 << 20))
image_make cc1 --busybox --layer 6m --layer 6m --seed 31
image_make cc2 --busybox --layer 6m --layer 6m --seed 32
image_push cc1 shoal/cc1
image_push cc2 shoal/cc2

node_start n1

# concurrent_pulls NS1 NS2 REF: start two pulls at once, wait for both.
concurrent_pulls() {
  local ns1=$1 ns2=$2 ref=$3 p1 p2 rc1=0 rc2=0
  local o1=$SHOAL_LOGS/pull-$ns1-1.out o2=$SHOAL_LOGS/pull-$ns2-2.out
  timeout 120 ctr --address "${NODE_DIR[n1]}/c.sock" -n "$ns1" images pull --plain-http \
    --snapshotter "$SHOAL_SNAPSHOTTER" "$ref" >"$o1" 2>&1 &
  p1=$!
  timeout 120 ctr --address "${NODE_DIR[n1]}/c.sock" -n "$ns2" images pull --plain-http \
    --snapshotter "$SHOAL_SNAPSHOTTER" "$ref" >"$o2" 2>&1 &
  p2=$!
  wait "$p1" || rc1=$?
  wait "$p2" || rc2=$?
  ((rc1 == 0)) || fail "first concurrent pull of $ref into $ns1 failed (exit $rc1):
$(tail -20 "$o1")"
  ((rc2 == 0)) || fail "second concurrent pull of $ref into $ns2 failed (exit $rc2):
$(tail -20 "$o2")"
  log "both pulls of $ref succeeded ($ns1, $ns2)"
}

step "two concurrent pulls of cc1 in namespaces a and b"
REF1=$PROXY/shoal/cc1:cc1
concurrent_pulls a b "$REF1"
verify_blobs n1 a cc1
verify_blobs n1 b cc1
# Both pulls opened their writers before either finished, so (whatever the
# sharing policy) each namespace downloaded the big layers itself.
overlapped=0
for digest in $(image_field cc1 '.layers[1:][]'); do
  gets=$(registry_blob_gets "$digest")
  log "registry GETs of layer $digest: $gets"
  ((gets >= 2)) && overlapped=1
done
((overlapped)) || fail "the two pulls did not overlap (every layer was downloaded once): the test proved nothing"
check_run n1 a "$REF1" cc1
check_run n1 b "$REF1" cc1

step "two concurrent pulls of cc2 in the same namespace c"
REF2=$PROXY/shoal/cc2:cc2
concurrent_pulls c c "$REF2"
verify_blobs n1 c cc2
for digest in $(image_field cc2 '.layers[1:][]'); do
  # One ingest per ref in a namespace: the second writer waits for the first
  # (UNAVAILABLE, retried) and then finds the blob committed.
  assert_eq 1 "$(registry_blob_gets "$digest")" "registry GETs of layer $digest by two pulls in one namespace"
done
check_run n1 c "$REF2" cc2
assert_blobs_on_disk n1 cc1
assert_blobs_on_disk n1 cc2

node_stop n1
log "PASS"
