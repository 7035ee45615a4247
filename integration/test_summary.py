#!/usr/bin/python3
"""Count test cases from a `bazel test` run: prints "N passed, N failed".

  test_summary.py BEP_JSON_FILE [--testlogs DIR] [--verbose]

BEP_JSON_FILE is Bazel's --build_event_json_file of the run. Which tests were
requested comes from its targetConfigured events (targets with a test size).
For each test that ran, the test.xml of its final attempt (per run and shard)
is parsed: every <testcase> counts once, failed if it holds <failure> or
<error>, skipped if it was not run (gtest's status="notrun", <skipped>). When
the XML is missing or holds no test case, Bazel's own status counts as one
test case. A requested test with no result at all (failed to build, or not
run because the build stopped) counts as one failed test case, and so does a
non-test target that failed to build, and a failed `bazel test` (--bazel-exit
other than 0 or 3) when nothing else was counted as failed. A test whose
status is not a pass but whose XML shows no failure counts one more failure,
so the total never hides a failing target.

Exit status: 0 when nothing failed, 1 otherwise. Python standard library only.
"""

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

PASS_STATUSES = {"PASSED", "FLAKY"}


def read_events(path):
    events = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a truncated last line if Bazel was killed
    return events


def uri_to_path(uri):
    if uri.startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    return None


def count_xml(path):
    """(passed, failed, skipped, failing test names) from a JUnit-style XML."""
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    names = []
    for tc in root.iter("testcase"):
        name = "%s.%s" % (tc.get("classname", ""), tc.get("name", ""))
        if tc.find("failure") is not None or tc.find("error") is not None:
            failed += 1
            names.append(name)
        elif (tc.find("skipped") is not None or tc.get("status") == "notrun"
              or tc.get("result") in ("skipped", "suppressed")):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, names


def label_testlogs_xml(testlogs, label):
    """bazel-testlogs/<package>/<name>/test.xml for an unsharded test."""
    pkg, _, name = label.lstrip("@").lstrip("/").partition(":")
    return os.path.join(testlogs, pkg, name, "test.xml")


def summarize(events, testlogs=None, bazel_exit=0):
    requested = []  # test labels, in BEP order
    results = {}    # label -> {(run, shard): (attempt, status, xml path)}
    summaries = {}  # label -> overall status
    aborted = {}    # label -> reason
    for ev in events:
        eid = ev.get("id", {})
        if "targetConfigured" in eid:
            cfg = ev.get("configured", {})
            if cfg.get("testSize") or cfg.get("targetKind", "").endswith("_test rule"):
                label = eid["targetConfigured"]["label"]
                if label not in requested:
                    requested.append(label)
        elif "testResult" in eid:
            tr = eid["testResult"]
            label = tr["label"]
            res = ev.get("testResult", {})
            xml = None
            for out in res.get("testActionOutput", []):
                if out.get("name") == "test.xml":
                    xml = uri_to_path(out.get("uri", ""))
            key = (tr.get("run", 1), tr.get("shard", 1))
            attempt = tr.get("attempt", 1)
            prev = results.setdefault(label, {}).get(key)
            if prev is None or attempt >= prev[0]:
                results[label][key] = (attempt, res.get("status", "NO_STATUS"), xml)
        elif "testSummary" in eid:
            summaries[eid["testSummary"]["label"]] = ev.get("testSummary", {}).get(
                "overallStatus", "NO_STATUS")
        elif "targetCompleted" in eid:
            label = eid["targetCompleted"]["label"]
            if ev.get("aborted") or not ev.get("completed", {}).get("success", True):
                reason = ev.get("aborted", {}).get("reason", "FAILED_TO_BUILD")
                aborted[label] = reason
    for label in list(results) + list(summaries):
        if label not in requested:
            requested.append(label)

    passed = failed = skipped = 0
    lines = []
    # Targets that are not tests but failed to build: one failure each.
    for label, reason in aborted.items():
        if label not in requested:
            failed += 1
            lines.append("FAILED  %s: not a test, failed to build (%s), counted as 1 failed"
                         % (label, reason))
    for label in requested:
        runs = results.get(label)
        if not runs:
            why = aborted.get(label) or summaries.get(label) or "NO_STATUS (not run)"
            failed += 1
            lines.append("FAILED  %s: no test result (%s), counted as 1 failed" % (label, why))
            continue
        t_p = t_f = t_s = 0
        notes = []
        target_failed = False
        for key in sorted(runs):
            _, status, xml = runs[key]
            if status not in PASS_STATUSES:
                target_failed = True
            if not xml or not os.path.exists(xml):
                if testlogs and len(runs) == 1:
                    alt = label_testlogs_xml(testlogs, label)
                    xml = alt if os.path.exists(alt) else None
                else:
                    xml = None
            counts = None
            if xml:
                try:
                    counts = count_xml(xml)
                except (ET.ParseError, OSError) as e:
                    notes.append("unreadable %s: %s" % (xml, e))
            if counts is None or sum(counts[:3]) == 0:
                if status in PASS_STATUSES:
                    t_p += 1
                else:
                    t_f += 1
                    notes.append("%s without test cases in XML" % status)
                continue
            p, f, s, names = counts
            if status not in PASS_STATUSES and f == 0:
                f += 1
                notes.append("%s although its XML shows no failure" % status)
            t_p, t_f, t_s = t_p + p, t_f + f, t_s + s
            notes.extend("failed: %s" % n for n in names[:10])
        passed, failed, skipped = passed + t_p, failed + t_f, skipped + t_s
        verdict = "FAILED " if (t_f or target_failed) else "passed "
        lines.append("%s %s: %d passed, %d failed%s%s" % (
            verdict, label, t_p, t_f, ", %d skipped" % t_s if t_s else "",
            "".join("\n          " + n for n in notes)))
    # Bazel failed (build error, crash, interrupt, no tests) without any
    # failure counted above: count that as a failure too.
    if bazel_exit not in (0, 3) and failed == 0:
        failed += 1
        lines.append("FAILED  bazel test exited with status %d, counted as 1 failed" % bazel_exit)
    return passed, failed, skipped, lines


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bep")
    ap.add_argument("--testlogs", help="bazel-testlogs directory (fallback for test.xml)")
    ap.add_argument("--verbose", action="store_true", help="one line per test target")
    ap.add_argument("--bazel-exit", type=int, default=0, help="exit status of `bazel test`")
    args = ap.parse_args(argv)
    try:
        events = read_events(args.bep)
    except OSError as e:
        print("test_summary: cannot read %s: %s" % (args.bep, e), file=sys.stderr)
        events = []
    passed, failed, skipped, lines = summarize(events, args.testlogs, args.bazel_exit)
    if args.verbose:
        for line in lines:
            print(line)
    if skipped:
        print("(%d test cases skipped or disabled, not counted below)" % skipped)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
