#!/usr/bin/env bash
# (e) A node whose images were pulled with containerd's built-in content store
# keeps them all usable after the same containerd root is switched to shoald
# (shoald --root = <root>/io.containerd.content.v1.content), and again after
# switching back to the built-in store. "Usable" = every blob reads back
# intact, and the image unpacks again from the store (a fresh unpack with the
# native snapshotter reads every layer) and runs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shoal_init
registry_start
image_make before --busybox --layer 2m --layer 1m --seed 51
image_make during --busybox --layer 3m --seed 52
image_push before shoal/before
image_push during shoal/during
REF_B=$REGISTRY/shoal/before:before
REF_D=$REGISTRY/shoal/during:during

# usable NODE REF IMAGE: bytes, a fresh native unpack, and a run.
usable() {
  local n=$1 ref=$2 img=$3
  verify_blobs "$n" default "$img"
  remove_snapshots "$n" default native
  check_mount "$n" default "$ref" "$img" native
  check_run "$n" default "$ref" "$img"
}

step "phase 1: built-in content store; pull '$REF_B'"
node_start n1 builtin
pull n1 default "$REF_B"
usable n1 "$REF_B" before
node_stop n1

step "phase 2: same root, shoald as the content store"
node_start n1 shoal
usable n1 "$REF_B" before
pull n1 default "$REF_D"
usable n1 "$REF_D" during
gets=$(registry_blob_gets "$(image_field before '.layers[1]')")
assert_eq 1 "$gets" "registry GETs of a layer pulled before the switch (must not be fetched again)"
node_stop n1

step "phase 3: back to the built-in store"
node_start n1 builtin
usable n1 "$REF_B" before
usable n1 "$REF_D" during
run_ok "ctr images check" nctr n1 images check
assert_not_contains "$RUN_OUT" "incomplete" "ctr images check after switching back"
node_stop n1
log "PASS"
