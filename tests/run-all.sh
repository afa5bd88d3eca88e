#!/bin/bash
# The whole test suite, as CI runs it: install what is missing, build with
# -Werror, run every test (unit + end-to-end), then build again with
# AddressSanitizer + UndefinedBehaviorSanitizer and run everything once more.
# Ends with the line "N passed, N failed" counted over all suites.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./tests/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
./autogen.sh >/dev/null 2>&1 || { echo "autogen.sh failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
status=0

count() {   # count LOGFILE: add the automake summary of a `make check` run
    local p f e x
    p=$(sed -n 's/^# PASS: *\([0-9]*\)/\1/p' "$1" | tail -1)
    f=$(sed -n 's/^# FAIL: *\([0-9]*\)/\1/p' "$1" | tail -1)
    e=$(sed -n 's/^# ERROR: *\([0-9]*\)/\1/p' "$1" | tail -1)
    x=$(sed -n 's/^# XPASS: *\([0-9]*\)/\1/p' "$1" | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0} + ${x:-0}))
}

suite() {   # suite NAME CFLAGS LDFLAGS: configure + build + make check in build/NAME
    local name=$1 cflags=$2 ldflags=$3 dir="$top/build/$1"
    echo "=== $name: build"
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || return 1
    if ! "$top/configure" -q --enable-werror --enable-crash-points CFLAGS="$cflags" LDFLAGS="$ldflags" >configure.out 2>&1 ||
       ! make -j"$(nproc)" >make.out 2>&1; then
        cat configure.out make.out 2>/dev/null | tail -40
        failed=$((failed + 1)); status=1; cd "$top"; return 1
    fi
    echo "=== $name: test"
    make -j"$(nproc)" check >check.out 2>&1 || status=1
    grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP):|^# ' check.out | grep -vE '^PASS:' || true
    for log in $(find . -name '*.log' -newer configure.out ! -name test-suite.log ! -name config.log); do
        grep -qE '^(not ok|Bail out)' "$log" && { echo "--- $log"; grep -E '^(not ok|Bail out|#)' "$log" | head -60; }
    done
    count check.out
    cd "$top"
}

suite gcc "-O2 -g" ""
export LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
suite asan "-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" "-fsanitize=address,undefined"

# valgrind: the unit programs, and every patrol run of the rotation and
# report tests (PATROL_WRAPPER), must be free of invalid accesses and leaks.
echo "=== valgrind"
vg="valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --suppressions=$top/tests/valgrind.supp"
for t in build/gcc/tests/unit/test_*; do
    [ -x "$t" ] || continue
    if (cd build/gcc && CMOCKA_MESSAGE_OUTPUT=TAP PATROL_SRCDIR="$top" $vg "../../$t" >/dev/null 2>"../../$t.vg"); then
        passed=$((passed + 1))
    else
        echo "not ok - valgrind $t"; tail -20 "$t.vg"; failed=$((failed + 1)); status=1
    fi
done
PATROL_WRAPPER="$vg" PATROL_SRCDIR="$top" PATROL_BUILDDIR="$top/build/gcc" \
    tests/run-e2e.sh -k "rotate_vault or rotate_aws or rotate_azure or test_report" >build/valgrind-e2e.tap 2>build/valgrind-e2e.log
grep -E '^not ok' build/valgrind-e2e.tap && status=1
passed=$((passed + $(grep -cE '^ok ' build/valgrind-e2e.tap)))
failed=$((failed + $(grep -cE '^not ok' build/valgrind-e2e.tap)))
grep -qE '^1\.\.[1-9]' build/valgrind-e2e.tap || { echo "valgrind e2e ran no test"; failed=$((failed + 1)); status=1; }

# ThreadSanitizer: the runs in which worker threads share the issuer's
# sessions, the stores' logins, the HTTP client and the records, and the
# daemon's workers with its main thread: a data race makes patrol exit 66.
echo "=== tsan"
mkdir -p build/tsan
if (cd build/tsan && "$top/configure" -q --enable-werror --enable-crash-points \
        CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" >configure.out 2>&1 &&
    make -j"$(nproc)" src/patrol >make.out 2>&1); then
    TSAN_OPTIONS="halt_on_error=1:exitcode=66" PATROL_SRCDIR="$top" PATROL_BUILDDIR="$top/build/tsan" \
        tests/run-e2e.sh -k "test_scale or rotate_vault or rotate_aws or rotate_azure or (test_daemon and not wake_up)" \
        >build/tsan-e2e.tap 2>build/tsan-e2e.log
    grep -E '^not ok' build/tsan-e2e.tap && status=1
    passed=$((passed + $(grep -cE '^ok ' build/tsan-e2e.tap)))
    failed=$((failed + $(grep -cE '^not ok' build/tsan-e2e.tap)))
    grep -qE '^1\.\.[1-9]' build/tsan-e2e.tap || { echo "tsan e2e ran no test"; failed=$((failed + 1)); status=1; }
else
    tail -30 build/tsan/configure.out build/tsan/make.out; failed=$((failed + 1)); status=1
fi

# The release tarball builds and passes its tests from a clean tree.
echo "=== distcheck"
if make -C build/gcc distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-crash-points >build/distcheck.out 2>&1; then
    passed=$((passed + 1))
else
    tail -30 build/distcheck.out; failed=$((failed + 1)); status=1
fi

# A bounded fuzzing run of every harness (libFuzzer); crashes are kept in
# tests/fuzz/regress/ for the replay that make check runs.
echo "=== fuzz: ${PATROL_FUZZ_SECONDS:-60} s per harness"
tests/fuzz/run-fuzz.sh "${PATROL_FUZZ_SECONDS:-60}" >build/fuzz.out 2>&1 || status=1
grep -E '^(not ok|Bail out)' build/fuzz.out && status=1
passed=$((passed + $(grep -cE '^ok ' build/fuzz.out)))
failed=$((failed + $(grep -cE '^(not ok|Bail out)' build/fuzz.out)))

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
