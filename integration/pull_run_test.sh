#!/usr/bin/env bash
# (a) Through shoald: `ctr images pull --plain-http` of a generated image, with
# unpack; the blobs land in shoald's root in containerd's layout; `ctr run --rm`
# of the busybox image prints what it should; the unpacked files are right.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shoal_init
registry_start
image_make app --busybox --layer 3m --layer 1m --seed 11
image_push app shoal/app
REF=$REGISTRY/shoal/app:app

node_start n1

step "pull $REF with unpack ($SHOAL_SNAPSHOTTER)"
pull n1 default "$REF"
assert_blobs_on_disk n1 app
run_ok "ctr images check" nctr n1 images check
assert_contains "$RUN_OUT" "complete" "ctr images check of $REF"
assert_not_contains "$RUN_OUT" "incomplete" "ctr images check of $REF"
while read -r digest _; do
  assert_eq 1 "$(registry_blob_gets "$digest")" "registry GETs of $digest during one pull"
done < <(jq -r '.blobs[] | select(.kind != "manifest") | "\(.digest) \(.size)"' "$(image_json app)")

step "run a container from the image"
check_run n1 default "$REF" app

step "check the unpacked files on the host"
check_mount n1 default "$REF" app

step "stop containerd and shoald (SIGTERM must exit 0)"
node_stop n1
log "PASS"
