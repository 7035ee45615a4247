#!/usr/bin/env bash
# (d) Through shoald: `ctr images rm --sync` runs containerd's garbage
# collector, which removes the image's blobs from shoald's root (List + Delete)
# but keeps a layer that another image still uses; a re-pull then works.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shoal_init
registry_start
# Both images share the busybox layer; their random layers differ.
image_make gc1 --busybox --layer 2m --layer 1m --seed 41
image_make gc2 --busybox --layer 1m --seed 42
image_push gc1 shoal/gc1
image_push gc2 shoal/gc2
REF1=$REGISTRY/shoal/gc1:gc1
REF2=$REGISTRY/shoal/gc2:gc2
shared=$(image_field gc1 '.layers[0]')
assert_eq "$shared" "$(image_field gc2 '.layers[0]')" "busybox layer shared by both test images"

node_start n1
root=$(node_content_root n1)

step "pull both images"
pull n1 default "$REF1"
pull n1 default "$REF2"
assert_blobs_on_disk n1 gc1
assert_blobs_on_disk n1 gc2

step "remove gc1 and collect garbage"
run_ok "ctr images rm --sync" nctr n1 images rm --sync "$REF1"
# GC runs before `rm --sync` returns; the deletions in shoald are expected by
# then, but allow shoald a short grace period to finish them.
only_gc1() { jq -r '.blobs[].digest' "$(image_json gc1)" | grep -vxF "$shared"; }
gc1_gone() {
  local d
  for d in $(only_gc1); do [[ ! -e $root/blobs/sha256/${d#sha256:} ]] || return 1; done
}
wait_for "gc1's own blobs to leave $root" 10 gc1_gone
for d in $(only_gc1); do
  assert_no_file "$root/blobs/sha256/${d#sha256:}" "gc1 blob $d after GC"
done
assert_blobs_on_disk n1 gc2 # includes the shared busybox layer
run_ok "ctr content ls" nctr n1 content ls -q
for d in $(only_gc1); do
  assert_not_contains "$RUN_OUT" "$d" "containerd's content list after GC"
done
verify_blobs n1 default gc2
check_run n1 default "$REF2" gc2

step "pull gc1 again"
before=$(registry_blob_gets "$(image_field gc1 '.layers[1]')")
pull n1 default "$REF1"
assert_eq $((before + 1)) "$(registry_blob_gets "$(image_field gc1 '.layers[1]')")" \
  "registry GETs of gc1's first random layer (re-pull must download it again)"
assert_blobs_on_disk n1 gc1
verify_blobs n1 default gc1
check_run n1 default "$REF1" gc1

step "remove both images: every blob goes"
run_ok "ctr images rm --sync" nctr n1 images rm --sync "$REF1" "$REF2"
all_gone() {
  [[ -z $(find "$root/blobs/sha256" -type f 2>/dev/null) ]]
}
wait_for "every blob to leave $root" 10 all_gone
left=$(find "$root/blobs/sha256" -type f 2>/dev/null | sed "s|$root/||")
assert_eq "" "$left" "blobs left in $root after removing every image"
run_ok "ctr snapshots ls" nctr n1 snapshots --snapshotter "$SHOAL_SNAPSHOTTER" ls
assert_eq 1 "$(wc -l <<<"$RUN_OUT")" "snapshot list after removing every image (header only):
$RUN_OUT"

node_stop n1
log "PASS"
