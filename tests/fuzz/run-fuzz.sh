#!/bin/sh
# Fuzz patrol's parsers with libFuzzer: tests/fuzz/run-fuzz.sh [SECONDS] [HARNESS...]
# Builds every tests/fuzz/fuzz_*.c with clang -fsanitize=fuzzer,address against the
# sources in src/ (compiled directly, not through configure) and runs each for SECONDS
# (default $PATROL_FUZZ_SECONDS, else 60) from its seed corpus tests/fuzz/corpus/NAME.
# TAP on stdout, one line per harness.  A crash is `not ok`; its input is copied to
# tests/fuzz/regress/NAME/ so that `make check` (tests/fuzz/replay) replays it.
# Build folder: $PATROL_FUZZ_BUILD (default a fresh temporary folder).
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-${PATROL_FUZZ_SECONDS:-60}}
[ $# -gt 0 ] && shift
CLANG=${CLANG:-clang}
SAN=${FUZZ_SANITIZERS:-address}

harnesses=${*:-$(cd "$here" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "1..0 # SKIP $CLANG is not installed"
    exit 0
fi

build=${PATROL_FUZZ_BUILD:-}
if [ -z "$build" ]; then
    build=$(mktemp -d "${TMPDIR:-/tmp}/patrol-fuzz.XXXXXX") || exit 1
fi
mkdir -p "$build/obj" "$build/work" || exit 1

# What configure would have written, for a build without it.
cat >"$build/autoconfig.h" <<'EOF'
#define _GNU_SOURCE 1
#define HAVE_SYSTEMD 1
#define PACKAGE "patrol"
#define PACKAGE_VERSION "fuzz"
#define PACKAGE_STRING "patrol fuzz"
EOF

CFLAGS="-g -O1 -fno-omit-frame-pointer -I$build -include $build/autoconfig.h -I$top/src -I$here \
 -DSYSCONFDIR=\"/etc\" -DLOCALSTATEDIR=\"/var\" $(pkg-config --cflags json-c libconfig libcurl 2>/dev/null)"
LIBS="-lpthread -lcurl -ljson-c -lconfig -lcrypto -lsystemd"

log="$build/build.log"
: >"$log"
objs=""
failed_build=0
for c in "$top"/src/*.c; do
    name=$(basename "$c" .c)
    [ "$name" = main ] && continue
    o="$build/obj/$name.o"
    if ! $CLANG $CFLAGS -fsanitize=fuzzer-no-link,$SAN -c "$c" -o "$o" >>"$log" 2>&1; then
        failed_build=1
    fi
    objs="$objs $o"
done

n=0
total=$(echo $harnesses | wc -w)
echo "1..$total"
if [ $failed_build = 1 ]; then
    sed 's/^/# /' "$log" | tail -30
fi

for h in $harnesses; do
    n=$((n + 1))
    bin="$build/fuzz_$h"
    if ! $CLANG $CFLAGS -fsanitize=fuzzer,$SAN "$here/fuzz_$h.c" $objs $LIBS -o "$bin" >"$build/link-$h.log" 2>&1; then
        echo "not ok $n - fuzz_$h: does not build"
        sed 's/^/# /' "$build/link-$h.log" | tail -20
        continue
    fi
    work="$build/work/$h"
    art="$build/artifacts/$h"
    rm -rf "$work" "$art"
    mkdir -p "$work" "$art" "$here/corpus/$h"
    # The seed corpus stays as it is: new inputs go to $work.
    LSAN_OPTIONS="suppressions=$here/lsan-fuzz.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$art/" "$work" "$here/corpus/$h" >"$build/run-$h.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/run-$h.log" | tail -1)
    crashes=$(ls "$art" 2>/dev/null)
    if [ $rc -eq 0 ] && [ -z "$crashes" ]; then
        echo "ok $n - fuzz_$h: ${secs}s, ${execs:-?} runs, $(ls "$work" | wc -l) new inputs"
        continue
    fi
    echo "not ok $n - fuzz_$h: exit $rc"
    mkdir -p "$here/regress/$h"
    for a in $crashes; do
        cp "$art/$a" "$here/regress/$h/$a"
        echo "# input kept as tests/fuzz/regress/$h/$a"
    done
    grep -E 'ERROR: |SUMMARY: |^    #[0-9] ' "$build/run-$h.log" | head -20 | sed 's/^/# /'
done
exit 0
