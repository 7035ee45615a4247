#!/usr/bin/env bash
# (b) Through shoald: the bytes containerd reads back (`ctr content get`) equal
# the bytes pushed, for every blob of an image whose layers straddle the sizes
# that matter (empty file, exactly 1 MiB of data, several 1 MiB writes plus a
# tail, more than one 16 MiB gRPC message). Also in a second namespace, which
# (with the shared policy) adopts the blobs through Info instead of writing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shoal_init
registry_start
image_make bytes --busybox --layer 0 --layer 1m --layer 5000123 --layer 17m --seed 21
image_push bytes shoal/bytes
REF=$REGISTRY/shoal/bytes:bytes

node_start n1

step "pull $REF into namespace one"
pull n1 one "$REF"

step "read every blob back with ctr content get"
verify_blobs n1 one bytes

step "the files in the content root are the pushed blobs"
root=$(node_content_root n1)
while read -r digest size; do
  assert_same_file "$(image_layout bytes)/blobs/sha256/${digest#sha256:}" \
    "$root/blobs/sha256/${digest#sha256:}" "on-disk blob $digest"
done < <(image_blobs bytes)
leftover=$(find "$root/ingest" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
assert_eq 0 "$leftover" "ingest directories left after a complete pull ($root/ingest)"

step "pull the same image into namespace two ($SHOAL_SHARING_POLICY policy)"
before=$(registry_blob_gets "$(image_field bytes '.layers[3]')")
pull n1 two "$REF"
verify_blobs n1 two bytes
after=$(registry_blob_gets "$(image_field bytes '.layers[3]')")
if [[ $SHOAL_SHARING_POLICY == shared ]]; then
  assert_eq "$before" "$after" "registry GETs of the 17 MiB layer for the second namespace (shared policy adopts the blob)"
else
  assert_eq $((before + 1)) "$after" "registry GETs of the 17 MiB layer for the second namespace (isolated policy downloads again)"
fi
check_run n1 two "$REF" bytes

node_stop n1
log "PASS"
