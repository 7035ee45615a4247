#!/usr/bin/env bash
# Shoal developer entry point.
#
#   ./dev.sh demo   install the Debian packages Shoal needs, build shoald and
#                   run integration/demo.sh (registry + three containerd +
#                   shoald nodes on loopback: push, pull on one node, then on
#                   the others from it, run, say where the bytes came from)
#   ./dev.sh test   install the packages, run `bazel test //...` (unit and
#                   integration tests) and print "N passed, N failed" as the
#                   last line, counted from Bazel's own results
#   ./dev.sh bench  install, build, run integration/bench_pull.sh (1 GiB pulls,
#                   built-in store against shoald) and integration/bench_p2p.sh
#                   (pulls from a peer against from the registry)
#
# Extra arguments after `test` go to `bazel test` (e.g. //integration/...).
# Must run as root (or with sudo available): apt-get, containerd, mounts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PACKAGES=(
  bazel-bootstrap containerd runc docker-registry skopeo
  golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev golang-google-grpc-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libc-ares-dev rapidjson-dev libgoogle-glog-dev libgflags-dev
  libcurl4-openssl-dev libgtest-dev libgmock-dev libssl-dev libmicrohttpd-dev libnghttp2-dev
  busybox-static iproute2 python3
  # used by the integration scripts
  jq curl
)

SUDO=()
if [[ $(id -u) != 0 ]]; then SUDO=(sudo); fi

install_packages() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    echo "dev.sh: missing packages: ${missing[*]}; running apt-get update" >&2
    "${SUDO[@]}" apt-get update
  fi
  # Idempotent: a no-op when everything is installed.
  local aptlog
  aptlog=$(mktemp /tmp/shoal-apt-XXXXXX.log)
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" \
    </dev/null >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    echo "dev.sh: apt-get install failed" >&2
    exit 1
  fi
  rm -f "$aptlog"
}

bazel_flags() {
  if [[ -n ${CI:-} ]]; then
    echo --curses=no --color=no --show_progress_rate_limit=30
  fi
}

build_daemon() {
  # shellcheck disable=SC2046
  bazel build $(bazel_flags) //plugin:shoald //plugin:shoal_health_probe
}

cmd_demo() {
  install_packages
  build_daemon
  SHOALD=$PWD/bazel-bin/plugin/shoald SHOAL_HEALTH_PROBE=$PWD/bazel-bin/plugin/shoal_health_probe \
    integration/demo.sh
}

cmd_bench() {
  install_packages
  build_daemon
  SHOALD=$PWD/bazel-bin/plugin/shoald SHOAL_HEALTH_PROBE=$PWD/bazel-bin/plugin/shoal_health_probe \
    integration/bench_pull.sh
  SHOALD=$PWD/bazel-bin/plugin/shoald SHOAL_HEALTH_PROBE=$PWD/bazel-bin/plugin/shoal_health_probe integration/bench_p2p.sh
}

cmd_test() {
  install_packages
  local bep rc=0
  bep=$(mktemp /tmp/shoal-bep-XXXXXX.json)
  # --keep_going: a target that fails to build does not stop the other tests;
  # it is counted as failed below.
  # shellcheck disable=SC2046
  bazel test $(bazel_flags) --keep_going --test_summary=short \
    --build_event_json_file="$bep" "${@:-//...}" || rc=$?
  local testlogs
  testlogs=$(bazel info $(bazel_flags) bazel-testlogs 2>/dev/null || echo bazel-testlogs)
  local src=0
  echo
  if ((rc != 0)); then echo "dev.sh: bazel test exited with status $rc"; fi
  # Last line of output: "N passed, N failed".
  /usr/bin/python3 integration/test_summary.py --verbose --testlogs "$testlogs" \
    --bazel-exit "$rc" "$bep" || src=$?
  rm -f "$bep"
  # Non-zero if any test case failed or Bazel itself failed (build errors, no
  # tests found, interrupted).
  if ((src != 0)); then exit 1; fi
  if ((rc != 0)); then exit "$rc"; fi
}

case ${1:-} in
demo) cmd_demo ;;
test)
  shift
  cmd_test "$@"
  ;;
bench) cmd_bench ;;
*)
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
