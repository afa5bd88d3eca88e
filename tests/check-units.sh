#!/bin/sh
# check-units.sh: the systemd units parse cleanly and stay hardened (TAP).
#
# - `systemd-analyze verify` on each unit.  It runs without a running
#   systemd, but some of what it reports depends on the host (the binary is
#   not installed in /usr/sbin, targets missing in a container): only unit
#   file errors (FILE:LINE: ..., "Refusing", a bad setting, a missing man
#   page named in Documentation=) fail; the rest is shown as diagnostics.
#   /usr/sbin/patrol is pointed at the built binary, and man: links at the
#   pages in man/, so those are checked too.
# - `systemd-analyze security --offline=true`: the overall exposure of each
#   unit must be at most $MAX_EXPOSURE (1.5).
# - The settings the daemon contract relies on (SPEC section 6), and the
#   template's sandbox matching the daemon's line for line.
#
# PATROL_SRCDIR (set by `make check`) defaults to this script's parent folder;
# PATROL_BUILDDIR to PATROL_SRCDIR.

srcdir=${PATROL_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${PATROL_BUILDDIR:-$srcdir}
MAX_EXPOSURE=${MAX_EXPOSURE:-1.5}
units="patrol.service patrol-rotate-now@.service"

if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "1..0 # SKIP systemd-analyze not installed"
        exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-units.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; }
diag() { sed 's/^/# /'; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

echo "1..10"

# -- a copy of the units with the binary and man pages where verify finds them
mkdir -p "$tmp/units" "$tmp/man/man8" "$tmp/man/man5"
cp "$srcdir/man/patrol.8" "$tmp/man/man8/"
cp "$srcdir/man/patrol.conf.5" "$tmp/man/man5/"
bin=$builddir/src/patrol
[ -x "$bin" ] || bin=/bin/true
for u in $units; do
        sed "s|/usr/sbin/patrol|$bin|g" "$srcdir/systemd/$u" >"$tmp/units/$u"
done
man_opt=--man=no
if command -v man >/dev/null 2>&1; then
        man_opt=--man=yes
fi

# Lines that are about the unit file itself, not about this host.
unit_errors() {
        grep -E '^[^ ]+:[0-9]+: |Refusing|bad unit file setting|is not executable|Command .man .* failed|[Ff]ailed to (load|parse)|[Uu]nknown (key|section|lvalue)' "$1"
}

for u in $units; do
        out=$tmp/verify.out
        MANPATH=$tmp/man systemd-analyze verify $man_opt "$tmp/units/$u" >"$out" 2>&1
        rc=$?
        if unit_errors "$out" >/dev/null; then
                not_ok "systemd-analyze verify $u"
                diag <"$out"
        else
                ok "systemd-analyze verify $u"
                if [ $rc -ne 0 ] || [ -s "$out" ]; then
                        echo "# exit $rc, host-dependent messages only:"
                        diag <"$out"
                fi
        fi
done

# -- exposure
if ! systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
        for u in $units; do
                skip "exposure of $u <= $MAX_EXPOSURE" "systemd-analyze has no --offline (needs systemd 250)"
        done
else
        for u in $units; do
                out=$tmp/security.out
                systemd-analyze security --offline=true --no-pager "$srcdir/systemd/$u" >"$out" 2>&1
                level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$out")
                if [ -z "$level" ]; then
                        not_ok "exposure of $u <= $MAX_EXPOSURE (no score)"
                        diag <"$out"
                elif awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l + 0 <= m + 0) }'; then
                        ok "exposure of $u <= $MAX_EXPOSURE (is $level)"
                else
                        not_ok "exposure of $u <= $MAX_EXPOSURE (is $level)"
                        grep '✗' "$out" | diag
                fi
        done
fi

# -- the settings the contract relies on
# has UNIT KEY=VALUE: the line is in the unit, exactly.
has() { grep -qx "$2" "$srcdir/systemd/$1"; }

d=patrol.service
missing=
for kv in Type=notify ExecStart=/usr/sbin/patrol 'ExecReload=/bin/kill -HUP $MAINPID' \
          Restart=on-failure RestartPreventExitStatus=78 DynamicUser=yes \
          StateDirectory=patrol ConfigurationDirectory=patrol; do
        has $d "$kv" || missing="$missing [$kv]"
done
if [ -z "$missing" ]; then ok "$d: notify, reload, restart policy, directories"
else not_ok "$d: missing$missing"; fi

if grep -qE '^WatchdogSec=[1-9]' "$srcdir/systemd/$d"; then ok "$d: WatchdogSec set"
else not_ok "$d: WatchdogSec set"; fi

if grep -q '^IPAddressDeny=' "$srcdir/systemd/$d"; then not_ok "$d: no IPAddressDeny= (patrol must reach the APIs)"
else ok "$d: no IPAddressDeny= (patrol must reach the APIs)"; fi

t=patrol-rotate-now@.service
if has $t Type=oneshot && grep -qE '^ExecStart=/usr/sbin/patrol --rotate-now (-- )?%i$' "$srcdir/systemd/$t"; then
        ok "$t: oneshot running --rotate-now %i"
else
        not_ok "$t: oneshot running --rotate-now %i"
fi

# Same state_dir, same user, same sandbox: everything from DynamicUser= down.
sandbox() { sed -n '/^DynamicUser=/,/^\[/p' "$srcdir/systemd/$1" | grep -E '^[A-Za-z]+=' | grep -v '^\['; }
sandbox $d >"$tmp/d.sandbox"
sandbox $t >"$tmp/t.sandbox"
if [ -s "$tmp/d.sandbox" ] && diff "$tmp/d.sandbox" "$tmp/t.sandbox" >"$tmp/diff"; then
        ok "$t: same identity, directories and sandbox as $d"
else
        not_ok "$t: same identity, directories and sandbox as $d"
        diag <"$tmp/diff"
fi

if grep -q '^RestartPreventExitStatus=\|^Restart=\|^WatchdogSec=' "$srcdir/systemd/$t"; then
        not_ok "$t: no restart or watchdog in a oneshot"
else
        ok "$t: no restart or watchdog in a oneshot"
fi

[ "$n" -eq 10 ] || echo "# planned 10 tests, ran $n"
exit $failed
