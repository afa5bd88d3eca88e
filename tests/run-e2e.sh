#!/bin/sh
# End-to-end tests for `make check`: runs pytest over tests/e2e with Debian's Python and
# turns its JUnit XML into TAP on stdout (pytest's own output goes to stderr, i.e. the log).
# Extra arguments go to pytest (e.g. tests/run-e2e.sh -k onplana); so does $PATROL_E2E_ARGS.
# Exit 0 whenever TAP was produced: the TAP driver judges the results.
set -u

PY=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
srcdir=${PATROL_SRCDIR:-$(dirname "$here")}
builddir=${PATROL_BUILDDIR:-$srcdir}
export PATROL_SRCDIR="$srcdir" PATROL_BUILDDIR="$builddir"

if ! $PY -c 'import pytest, requests, cryptography' 2>/dev/null; then
    echo "run-e2e.sh: $PY cannot import pytest, requests and cryptography;" \
         "install python3-pytest python3-requests python3-cryptography" >&2
    echo "Bail out! $PY lacks pytest/requests/cryptography"
    exit 1
fi

mkdir -p "$builddir/tests" || exit 1
junit="$builddir/tests/e2e-junit.xml"
rm -f "$junit"

# No bytecode or cache writes into a (possibly read-only, distcheck) source tree.
cd "$srcdir" || exit 1
PYTHONDONTWRITEBYTECODE=1 $PY -m pytest -q -p no:cacheprovider -o console_output_style=classic --continue-on-collection-errors \
    --junitxml="$junit" ${PATROL_E2E_ARGS:-} "$@" tests/e2e >&2
rc=$?

if [ ! -s "$junit" ]; then
    echo "Bail out! pytest exited $rc without results (see the log)"
    exit 1
fi

exec $PY - "$junit" "$rc" <<'EOF'
import sys
import xml.etree.ElementTree as ET

junit, rc = sys.argv[1], int(sys.argv[2])
root = ET.parse(junit).getroot()
cases = list(root.iter("testcase"))
print(f"1..{len(cases)}")
for n, case in enumerate(cases, 1):
    cls = case.get("classname", "")
    name = (cls.rsplit(".", 1)[-1] + "::" if cls else "") + case.get("name", "?")
    name = name.replace("#", "%23")
    bad = case.find("failure")
    if bad is None:
        bad = case.find("error")
    skip = case.find("skipped")
    if bad is not None:
        print(f"not ok {n} - {name}")
        detail = (bad.get("message") or "") + "\n" + (bad.text or "")
        for line in detail.strip().splitlines()[-40:]:
            print(f"# {line}")
    elif skip is not None:
        why = (skip.get("message") or "").splitlines()
        print(f"ok {n} - {name} # SKIP {why[0] if why else ''}")
    else:
        print(f"ok {n} - {name}")
if not cases:
    # pytest ran but reported nothing (e.g. an error before collection): make it visible.
    print(f"# pytest exited {rc} with no test cases")
    if rc not in (0, 5):
        print("Bail out! pytest failed before running tests")
EOF
