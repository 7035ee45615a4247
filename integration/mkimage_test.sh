#!/usr/bin/env bash
# mkimage.py: the layout is deterministic, its JSON matches the blobs, the
# busybox layer has what `ctr run` needs, and the random files' sha256 in the
# JSON are those of the files in the layer tars.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mk=$here/mkimage.py
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/mkimage-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

args=(--busybox --layer 0 --layer 1m --layer 12345 --seed 9 --tag t1)
/usr/bin/python3 "$mk" --out "$tmp/a" "${args[@]}" >"$tmp/a.json"
/usr/bin/python3 "$mk" --out "$tmp/b" "${args[@]}" >"$tmp/b.json"
diff -r "$tmp/a" "$tmp/b" >/dev/null || fail "two runs with the same arguments differ"
[[ $(jq -r .manifest "$tmp/a.json") == "$(jq -r .manifest "$tmp/b.json")" ]] || fail "manifest digests differ"

# Every blob described exists with that digest and size.
n=0
while read -r digest size; do
  f=$tmp/a/blobs/sha256/${digest#sha256:}
  [[ -f $f ]] || fail "blob $digest missing"
  [[ $(stat -c %s "$f") == "$size" ]] || fail "size of $digest: $(stat -c %s "$f") != $size"
  [[ sha256:$(sha256sum <"$f" | cut -c1-64) == "$digest" ]] || fail "digest of $f"
  n=$((n + 1))
done < <(jq -r '.blobs[] | "\(.digest) \(.size)"' "$tmp/a.json")
[[ $n == 6 ]] || fail "expected 6 blobs (manifest, config, 4 layers), got $n"

# Manifest, config and index agree.
man=$tmp/a/blobs/sha256/$(jq -r '.manifest | ltrimstr("sha256:")' "$tmp/a.json")
cfg=$tmp/a/blobs/sha256/$(jq -r '.config | ltrimstr("sha256:")' "$tmp/a.json")
[[ $(jq -c '[.layers[].digest]' "$man") == "$(jq -c .layers "$tmp/a.json")" ]] || fail "manifest layers"
[[ $(jq -c .rootfs.diff_ids "$cfg") == "$(jq -c .layers "$tmp/a.json")" ]] || fail "config diff_ids"
[[ $(jq -r '.architecture + "/" + .os' "$cfg") == amd64/linux ]] || fail "config platform"
[[ $(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$tmp/a/index.json") == t1 ]] ||
  fail "index.json ref name"
[[ $(jq -r '.manifests[0].digest' "$tmp/a/index.json") == "$(jq -r .manifest "$tmp/a.json")" ]] || fail "index digest"

# The busybox layer.
bb=$tmp/a/blobs/sha256/$(jq -r '.layers[0] | ltrimstr("sha256:")' "$tmp/a.json")
list=$(tar -tvf "$bb")
grep -q ' bin/busybox$' <<<"$list" || fail "no bin/busybox in the first layer"
grep -q ' bin/sh -> busybox$' <<<"$list" || fail "no bin/sh symlink"
cmp -s <(tar -xOf "$bb" bin/busybox) /bin/busybox || fail "bin/busybox differs from /bin/busybox"

# Random files: sha256 in the JSON equals the tar member's.
i=1
while read -r path size sum; do
  layer=$tmp/a/blobs/sha256/$(jq -r ".layers[$i] | ltrimstr(\"sha256:\")" "$tmp/a.json")
  got=$(tar -xOf "$layer" "${path#/}" | sha256sum | cut -c1-64)
  [[ $got == "$sum" ]] || fail "sha256 of $path in layer $i: $got != $sum"
  [[ $(tar -xOf "$layer" "${path#/}" | wc -c) == "$size" ]] || fail "size of $path"
  i=$((i + 1))
done < <(jq -r '.files[] | "\(.path) \(.size) \(.sha256)"' "$tmp/a.json")

# A different seed gives different random layers but the same busybox layer.
/usr/bin/python3 "$mk" --out "$tmp/c" --busybox --layer 1m --seed 10 >"$tmp/c.json"
[[ $(jq -r '.layers[0]' "$tmp/c.json") == "$(jq -r '.layers[0]' "$tmp/a.json")" ]] || fail "busybox layer not shared"
[[ $(jq -r '.layers[1]' "$tmp/c.json") != "$(jq -r '.layers[2]' "$tmp/a.json")" ]] || fail "seed ignored"
echo PASS
