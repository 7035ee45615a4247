#!/usr/bin/env bash
# (f) shoald killed with SIGKILL in the middle of a large-layer pull: the pull
# fails (or stalls); after shoald restarts on the same root, a re-pull
# completes and the blob is correct, whether the ingest was resumed (a Range
# request for the rest) or restarted from zero. A throttling proxy in front
# of the registry keeps the pull slow enough to be interrupted.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $SHOAL_STORE == shoal ]] || log "NOTE: SHOAL_STORE=$SHOAL_STORE; this test only means something with shoald"

shoal_init
registry_start
# 48 MiB/s per connection: the 96 MiB layer takes about 2 s.
proxy_start proxy $((48 << 20))
image_make big --busybox --layer 96m --seed 61
image_make tiny --layer 4k --seed 60
image_push big shoal/big
image_push tiny shoal/tiny
REF=$PROXY/shoal/big:big
BIG=$(image_field big '.layers[1]')
BIG_SIZE=$(jq -r --arg d "$BIG" '.blobs[] | select(.digest == $d) | .size' "$(image_json big)")

node_start n1
root=$(node_content_root n1)
# An image that stays referenced: reading its manifest back later shows that
# containerd talks to the restarted shoald. (Blobs of the interrupted pull are
# unreferenced once ctr drops its lease, and containerd's GC forgets them.)
pull n1 default "$PROXY/shoal/tiny:tiny"

# ingest_bytes: the largest partial blob, seen on disk (containerd's layout:
# ingest/<sha256(ref)>/data) or, failing that, as reported through containerd
# (`ctr content active`, i.e. shoald's Status).
ingest_bytes() {
  local on_disk=0 f s
  for f in "$root"/ingest/*/data; do
    [[ -f $f ]] || continue
    s=$(stat -c %s "$f")
    ((s > on_disk)) && on_disk=$s
  done
  if ((on_disk == 0)); then
    on_disk=$(nctr n1 -n default content active 2>/dev/null | awk 'NR > 1 && $2 ~ /^[0-9]+$/ && $2 > m {m = $2} END {print m + 0}')
  fi
  echo "$on_disk"
}
ingest_at_least() { (($(ingest_bytes) >= $1)); }

step "start pulling $REF (the big layer is $BIG_SIZE bytes)"
pull_out=$SHOAL_LOGS/pull-interrupted.out
timeout 300 ctr --address "${NODE_DIR[n1]}/c.sock" -n default images pull --plain-http \
  --snapshotter "$SHOAL_SNAPSHOTTER" "$REF" >"$pull_out" 2>&1 &
pull_pid=$!
wait_for_proc "16 MiB of the big layer in an ingest" 60 "$pull_pid" ingest_at_least $((16 << 20))
at_kill=$(ingest_bytes)
shoald_kill n1
log "shoald killed with $at_kill bytes of the big layer ingested"
((at_kill < BIG_SIZE)) || fail "the big layer was complete ($at_kill bytes) before shoald was killed: nothing interrupted"

step "the pull must fail or stall while shoald is down"
deadline=$(($(now_ms) + 30000))
while alive "$pull_pid" && (($(now_ms) < deadline)); do sleep 0.1; done
if alive "$pull_pid"; then
  log "the pull is stalled 30 s after the kill; stopping it"
  kill -TERM "$pull_pid"
  wait "$pull_pid" || true
else
  rc=0
  wait "$pull_pid" || rc=$?
  ((rc != 0)) || fail "ctr images pull reported success although shoald was killed mid-pull:
$(tail -20 "$pull_out")"
  log "the pull failed (exit $rc): $(grep -i -m1 'error\|fail' "$pull_out" || tail -1 "$pull_out")"
fi
assert_no_file "$root/blobs/sha256/${BIG#sha256:}" "the big layer must not be committed by an interrupted pull"

step "restart shoald on the same root"
shoald_start n1
containerd_wait_store n1 default tiny
verify_blobs n1 default tiny
run_ok "ctr content active" nctr n1 -n default content active
log "ingests after the restart:
$RUN_OUT"

step "re-pull $REF"
gets_before=$(registry_blob_gets "$BIG")
pull n1 default "$REF"
assert_eq $((gets_before + 1)) "$(registry_blob_gets "$BIG")" "registry GETs of the big layer by the re-pull"
range=$(grep -c -i '^[0-9.]* conn[0-9]* range: bytes=[1-9]' "$PROXY_LOG" || true)
if ((range > 0)); then
  log "the re-pull RESUMED the ingest: $(grep -i -m1 'range: bytes=[1-9]' "$PROXY_LOG" | cut -d' ' -f2-)"
else
  log "the re-pull RESTARTED the big layer from offset 0 (no Range request)"
fi
assert_blobs_on_disk n1 big
verify_blobs n1 default big
check_run n1 default "$REF" big
leftover=$(find "$root/ingest" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
assert_eq 0 "$leftover" "ingest directories left after the re-pull completed"

node_stop n1
log "PASS"
