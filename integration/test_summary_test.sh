#!/usr/bin/env bash
# test_summary.py counts test cases from a synthetic build event file.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/summary-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$tmp/gtest.xml" <<'X'
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1" disabled="1" errors="0" name="AllTests">
  <testsuite name="Store" tests="4" failures="1" disabled="1" errors="0">
    <testcase name="Commit" status="run" result="completed" classname="Store" />
    <testcase name="Abort" status="run" result="completed" classname="Store" />
    <testcase name="Read" status="run" result="completed" classname="Store">
      <failure message="boom" type=""/>
    </testcase>
    <testcase name="DISABLED_Slow" status="notrun" result="suppressed" classname="Store" />
  </testsuite>
</testsuites>
X
cat >"$tmp/sh.xml" <<'X'
<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="integration/gc_test" tests="1" failures="0" errors="1">
<testcase name="integration/gc_test" status="run" duration="10" time="10"><error message="exited with error code 1"></error></testcase>
</testsuite></testsuites>
X
cat >"$tmp/ok.xml" <<'X'
<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="x" tests="1"><testcase name="x" status="run"></testcase></testsuite></testsuites>
X

ev() { printf '%s\n' "$1" >>"$tmp/bep.json"; }
cfg() { ev "{\"id\":{\"targetConfigured\":{\"label\":\"$1\"}},\"configured\":{\"targetKind\":\"$2\"${3:+,\"testSize\":\"$3\"}}}"; }
res() {
  local out=""
  [[ -n ${4:-} ]] && out=',"testActionOutput":[{"name":"test.xml","uri":"file://'"$4"'"}]'
  ev "{\"id\":{\"testResult\":{\"label\":\"$1\",\"run\":1,\"shard\":1,\"attempt\":$2}},\"testResult\":{\"status\":\"$3\"$out}}"
}

cfg //plugin:store_test "cc_test rule" SMALL
cfg //integration:gc_test "sh_test rule" LARGE
cfg //integration:flaky_test "sh_test rule" LARGE
cfg //integration:nobuild_test "sh_test rule" LARGE
cfg //plugin:shoald "cc_binary rule"
cfg //integration:noxml_test "sh_test rule" SMALL
res //plugin:store_test 1 FAILED "$tmp/gtest.xml"
res //integration:gc_test 1 FAILED "$tmp/sh.xml"
res //integration:flaky_test 1 FAILED "$tmp/sh.xml"
res //integration:flaky_test 2 PASSED "$tmp/ok.xml"
res //integration:noxml_test 1 PASSED "$tmp/missing.xml"
ev '{"id":{"targetCompleted":{"label":"//integration:nobuild_test"}},"aborted":{"reason":"ANALYSIS_FAILURE"}}'
ev '{"id":{"targetCompleted":{"label":"//plugin:shoald"}},"completed":{"success":true}}'
echo '{"id":{"truncated' >>"$tmp/bep.json"

rc=0
out=$(/usr/bin/python3 "$here/test_summary.py" --verbose --bazel-exit 3 "$tmp/bep.json") || rc=$?
echo "$out"
# store_test: 2 passed, 1 failed, 1 skipped; gc_test: 1 failed; flaky: 1
# passed (last attempt); nobuild: 1 failed; noxml: 1 passed.
[[ $(tail -1 <<<"$out") == "4 passed, 3 failed" ]] || fail "wrong totals: $(tail -1 <<<"$out")"
[[ $rc == 1 ]] || fail "exit status $rc, want 1"
grep -q 'skipped' <<<"$out" || fail "skipped test not reported"

# All good, bazel exit 0.
: >"$tmp/bep.json"
cfg //a:t "sh_test rule" SMALL
res //a:t 1 PASSED "$tmp/ok.xml"
out=$(/usr/bin/python3 "$here/test_summary.py" "$tmp/bep.json") || fail "exit status $? for a passing run"
[[ $out == "1 passed, 0 failed" ]] || fail "wrong output for a passing run: $out"

# Bazel failed but nothing was counted: one failure.
out=$(/usr/bin/python3 "$here/test_summary.py" --bazel-exit 1 "$tmp/bep.json") && fail "exit 0 although bazel failed"
[[ $(tail -1 <<<"$out") == "1 passed, 1 failed" ]] || fail "bazel failure not counted: $out"

# A non-test target that failed to build counts as a failure.
ev '{"id":{"targetCompleted":{"label":"//plugin:shoald"}},"completed":{"success":false}}'
out=$(/usr/bin/python3 "$here/test_summary.py" --bazel-exit 1 "$tmp/bep.json") && fail "exit 0 with a build failure"
[[ $(tail -1 <<<"$out") == "1 passed, 1 failed" ]] || fail "build failure not counted: $out"
echo PASS
