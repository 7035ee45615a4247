#!/usr/bin/env bash
# Shoal demo: a registry and one containerd node whose content store is
# shoald, all on loopback. Generates a sample image (static busybox plus two
# random-data layers), pushes it, pulls it with unpack through shoald, runs it,
# and says what happened. Cleans up everything it started when it ends.
#
#   ./dev.sh demo                 (installs packages, builds, runs this)
#   bazel run //integration:demo
#   integration/demo.sh           (after bazel build //plugin:shoald //plugin:shoal_health_probe)
#
# SHOAL_STORE=builtin runs the same demo on containerd's built-in store.

shoal__find_lib() {
  local d
  for d in "${RUNFILES_DIR:-/nonexistent}/shoal/integration" "$0.runfiles/shoal/integration" \
    "$(dirname "$0")" "$PWD/integration"; do
    if [[ -f $d/lib.sh ]]; then
      echo "$d/lib.sh"
      return
    fi
  done
  echo "demo.sh: lib.sh not found" >&2
  exit 1
}
source "$(shoal__find_lib)"

SHOAL_CONTAINERD_LOG_LEVEL=${SHOAL_CONTAINERD_LOG_LEVEL:-info}
say() { printf '%s\n' "$*"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
secs() { awk -v ms="$1" 'BEGIN {printf "%.2f s", ms / 1000}'; }

shoal_init

say "Shoal demo: containerd $(containerd --version | awk '{print $3}') with content store: $SHOAL_STORE"
say "work dir $SHOAL_WORK (removed at the end), logs in $SHOAL_LOGS"
say ""

registry_start
say "1. registry: Debian's docker-registry on http://$REGISTRY (storage $SHOAL_WORK/registry/data)"

t0=$(now_ms)
image_make demo --busybox --layer 8m --layer 4m --seed 2024
say "2. image generated in $(secs $(($(now_ms) - t0))) by integration/mkimage.py (OCI layout, uncompressed tar layers):"
jq -r '.blobs[] | "     \(.kind | . + "        " | .[0:8]) \(.digest)  \(.size) bytes"' "$(image_json demo)"
say "     total $(mib "$(image_field demo .total_size)")"

t0=$(now_ms)
image_push demo shoal/demo
REF=$REGISTRY/shoal/demo:demo
say "3. pushed with skopeo to $REF in $(secs $(($(now_ms) - t0)))"

node_start n1 "$SHOAL_STORE"
root=$(node_content_root n1)
if [[ $SHOAL_STORE == shoal ]]; then
  say "4. node n1: shoald (pid ${NODE_SHOALD_PID[n1]}) serves containerd's content API on ${NODE_DIR[n1]}/shoal.sock"
  say "   containerd (pid ${NODE_CTRD_PID[n1]}) uses it as proxy plugin 'shoal'; its built-in store is disabled:"
  nctr n1 plugins ls | awk '$1 == "io.containerd.content.v1" {print "     " $0}'
else
  say "4. node n1: containerd (pid ${NODE_CTRD_PID[n1]}) with its built-in content store"
fi

pull n1 default "$REF"
say "5. ctr images pull --plain-http $REF (unpack with $SHOAL_SNAPSHOTTER): $(secs "$PULL_MS")"
say "   registry served: $(grep -c '"GET /v2/[^ ]*/blobs/' "$REGISTRY_LOG") blob GETs"
say "   blobs now in $root/blobs/sha256 (containerd's own layout; that is shoald's --root):"
while read -r digest size; do
  f=$root/blobs/sha256/${digest#sha256:}
  if [[ -f $f ]]; then
    say "     $(stat -c '%A %10s' "$f")  ${digest#sha256:}"
  else
    say "     MISSING  ${digest#sha256:}"
  fi
done < <(image_blobs demo)
say "   unpacked snapshots:"
nctr n1 snapshots --snapshotter "$SHOAL_SNAPSHOTTER" ls | sed 's/^/     /'

t0=$(now_ms)
verify_blobs n1 default demo
say "6. every blob read back through containerd (ctr content get) equals what was pushed ($(secs $(($(now_ms) - t0))))"

t0=$(now_ms)
check_run n1 default "$REF" demo
say "7. ctr run --rm $REF ($(secs $(($(now_ms) - t0)))) printed:"
printf '%s\n' "$RUN_OUT" | sed 's/^/     | /'

gets0=$(grep -c '"GET /v2/[^ ]*/blobs/' "$REGISTRY_LOG")
pull n1 second "$REF"
gets1=$(grep -c '"GET /v2/[^ ]*/blobs/' "$REGISTRY_LOG")
say "8. the same image pulled into namespace 'second': $(secs "$PULL_MS"), $((gets1 - gets0)) blob GETs from the registry"
say "   (content_sharing_policy=$SHOAL_SHARING_POLICY: blobs already in the store are adopted, not downloaded)"

node_stop n1
logdir=$SHOAL_LOGS
if [[ -z ${SHOAL_KEEP:-} && $SHOAL_LOGS == "$SHOAL_WORK"/* ]]; then
  # The work dir goes away at exit; keep the (small) logs.
  logdir=$(mktemp -d /tmp/shoal-demo-logs-XXXXXX)
  cp -a "$SHOAL_LOGS/." "$logdir/"
fi
if [[ $SHOAL_STORE == shoal ]]; then
  say "9. containerd and shoald stopped (shoald exited 0 on SIGTERM)"
  say "   shoald committed $(grep -c 'committed' "$SHOAL_LOGS/n1-shoald.log" || true) blobs; logs of every component in $logdir"
else
  say "9. containerd stopped; logs of every component in $logdir"
fi
say ""
say "demo OK"
