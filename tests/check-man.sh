#!/bin/sh
# check-man.sh: the manual pages are lint-clean and complete (TAP).
#
# - `mandoc -T lint -W warning` on patrol.8 and patrol.conf.5: STYLE
#   messages are fine, WARNING and worse fail.
# - patrol(8) documents, as flags (.Fl), every option `patrol --help` lists
#   and every option of SPEC.md section 1; it lists every exit status, the
#   environment variables patrol reads, the JSON fields and the report
#   findings.
# - doc/patrol.catalog has one entry per MESSAGE_ID of src/log.c, and
#   `journalctl --update-catalog` accepts it (in a scratch --root).
# - patrol.conf(5) documents, as keywords (.Ic), every configuration key of
#   SPEC.md section 2, and every store authentication method.
#
# Markup is read from `mandoc -T html`: <code class="Fl">--json</code> and
# <code class="Ic">ttl</code>.  PATROL_SRCDIR (set by `make check`) defaults
# to this script's parent folder, PATROL_BUILDDIR (for src/patrol) to
# PATROL_SRCDIR.

srcdir=${PATROL_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=${PATROL_BUILDDIR:-$srcdir}
page8=$srcdir/man/patrol.8
page5=$srcdir/man/patrol.conf.5

if ! command -v mandoc >/dev/null 2>&1; then
        echo "1..0 # SKIP mandoc not installed"
        exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-man.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /'; }

# result NAME: ok when $missing is empty, else not ok listing it.
result() {
        if [ -z "$missing" ]; then ok "$1"
        else not_ok "$1: missing$missing"; fi
}

# words CLASS FILE: the text of every <code class="CLASS" ...> in FILE's HTML
# (mandoc adds an id= to the first one of a paragraph).
words() {
        mandoc -T html "$2" 2>/dev/null |
                sed -n "s/<code class=\"$1\"[^>]*>\([^<]*\)<\/code>/\n@@\1\n/gp" |
                sed -n 's/^@@//p' | sed 's/&#x2011;/-/g; s/&#x2010;/-/g' | sort -u
}

echo "1..13"

# -- lint
for page in "$page8" "$page5"; do
        name=${page##*/}
        mandoc -T lint -W warning "$page" >"$tmp/lint" 2>&1
        rc=$?
        # "outdated mandoc.db" and STYLE lines are about the host or taste.
        if [ $rc -ge 2 ] || grep -Eq ': (WARNING|ERROR|UNSUPP|BADARG|SYSERR): ' "$tmp/lint"; then
                not_ok "mandoc -T lint -W warning $name"
                diag <"$tmp/lint"
        else
                ok "mandoc -T lint -W warning $name"
        fi
done

# -- patrol(8)
words Fl "$page8" >"$tmp/flags"
words Ic "$page5" >"$tmp/keys5"
mandoc -T ascii "$page8" 2>/dev/null | col -b >"$tmp/text8"
mandoc -T ascii "$page5" 2>/dev/null | col -b >"$tmp/text5"

bin=$builddir/src/patrol
if [ -x "$bin" ]; then
        "$bin" --help >"$tmp/help" 2>&1
        opts=$(grep -oE -- '(^|[ ,[|])--?[a-z][a-z-]*' "$tmp/help" | sed 's/^[ ,[|]//' | sort -u)
        missing=
        for o in $opts; do
                grep -qxF -- "$o" "$tmp/flags" || missing="$missing $o"
        done
        if [ -z "$opts" ]; then not_ok "patrol.8 has every option of patrol --help: no options in the help"
        else result "patrol.8 has every option of patrol --help ($(echo $opts | wc -w) options)"; fi
else
        skip "patrol.8 has every option of patrol --help" "$bin not built"
fi

# SPEC.md section 1.
missing=
for o in -c --config --rotate-now --dry-run --check-config --status --report \
         --revoke-strays --json -v -q --verbose --quiet --version --help; do
        grep -qxF -- "$o" "$tmp/flags" || missing="$missing $o"
done
result "patrol.8 has every option of SPEC section 1"

missing=
for s in NAME SYNOPSIS DESCRIPTION OPTIONS 'EXIT STATUS' ENVIRONMENT FILES EXAMPLES 'SEE ALSO'; do
        grep -qx "$s" "$tmp/text8" || missing="$missing [$s]"
done
for code in 0 1 64 78; do
        sed -n '/^EXIT STATUS$/,/^[A-Z]/p' "$tmp/text8" | grep -qE "^[[:space:]]+$code([[:space:]]|$)" || missing="$missing [exit $code]"
done
result "patrol.8 has the usual sections and exit statuses 0 1 64 78"

missing=
for e in PATROL_CONFIG CREDENTIALS_DIRECTORY JOURNAL_STREAM \
         AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
         AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_WEB_IDENTITY_TOKEN_FILE \
         AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
         AWS_EC2_METADATA_DISABLED AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_FEDERATED_TOKEN_FILE \
         PATROL_INTEGRATION PATROL_TOKEN_ID PATROL_SECRET; do
        grep -qw -- "$e" "$tmp/text8" || missing="$missing $e"
done
result "patrol.8 has the environment patrol reads and gives on_rotate"

# The --json shapes of SPEC section 1, and the records of section 4.
missing=
for f in results integration result old_token_id new_token_id expires_at store secret \
         version error integrations name token_id next_rotation last_result \
         last_rotation pending kind step due rotated failed incomplete planned none \
         state.json state.journal audit.jsonl lock recovered revoked adopted; do
        grep -qF -- "$f" "$tmp/text8" || missing="$missing $f"
done
result "patrol.8 has the JSON fields and records"

missing=
for f in current retiring wildcard no-expiry expires-soon never-used stale stray unmanaged; do
        grep -qE -- "^[[:space:]]+$f[[:space:]]+(info|warning)[[:space:]]" "$tmp/text8" || missing="$missing $f"
done
result "patrol.8 has every finding of the report"

if grep -q 'SIGHUP' "$tmp/text8" && grep -q 'SIGTERM' "$tmp/text8" && grep -q 'READY=1' "$tmp/text8" &&
   grep -q 'WATCHDOG=1' "$tmp/text8"; then
        ok "patrol.8 describes signals and systemd notification"
else
        not_ok "patrol.8 describes signals and systemd notification"
fi

# -- patrol.conf(5): every key of SPEC.md section 2, as a keyword.
missing=
for k in state_dir max_parallel oneshot_timeout metrics_file policy onplana accounts stores integrations \
         ttl renew_before revoke_after retry_min retry_max \
         url ca_file \
         name org client_id client_secret client_secret_file \
         type mount kv_version namespace auth method \
         token token_file role_id secret_id secret_id_file role jwt_file \
         region profile access_key_id secret_access_key secret_access_key_file \
         session_token session_token_file role_arn external_id session_name \
         endpoint sts_endpoint imds_endpoint container_endpoint \
         tenant_id authority_url resource \
         account scopes projects store secret format on_rotate adopt allow_wildcard; do
        grep -qxF -- "$k" "$tmp/keys5" || missing="$missing $k"
done
result "patrol.conf.5 has every configuration key of SPEC section 2"

missing=
for m in token approle kubernetes default static assume_role client_secret managed_identity workload_identity; do
        grep -qF "method = \"$m\"" "$tmp/text5" || missing="$missing $m"
done
result "patrol.conf.5 has every store authentication method"

missing=
for s in json raw managed_by custom_metadata SecretString AWSPENDING AWSCURRENT contentType attributes.exp; do
        grep -qF -- "$s" "$tmp/text5" || missing="$missing $s"
done
result "patrol.conf.5 says what lands in each store (SPEC section 3)"

# -- the journal catalog: one entry per MESSAGE_ID of src/log.c, and
# journalctl accepts it.
catalog=$srcdir/doc/patrol.catalog
if [ ! -f "$catalog" ] || [ ! -f "$srcdir/src/log.c" ]; then
        skip "doc/patrol.catalog covers every MESSAGE_ID of src/log.c" "not in this tree"
else
        grep -o '"[0-9a-f]\{32\}"' "$srcdir/src/log.c" | tr -d '"' | sort -u >"$tmp/ids"
        sed -n 's/^-- \([0-9a-f]\{32\}\)$/\1/p' "$catalog" | sort >"$tmp/entries"
        missing=$(comm -23 "$tmp/ids" "$tmp/entries" | tr '\n' ' ')
        extra=$(comm -13 "$tmp/ids" "$tmp/entries" | tr '\n' ' ')
        dups=$(uniq -d "$tmp/entries" | tr '\n' ' ')
        bad=
        if command -v journalctl >/dev/null 2>&1; then
                mkdir -p "$tmp/root/usr/lib/systemd/catalog" "$tmp/root/var/lib/systemd/catalog"
                cp "$catalog" "$tmp/root/usr/lib/systemd/catalog/"
                journalctl --root="$tmp/root" --update-catalog >"$tmp/jc" 2>&1 &&
                        journalctl --root="$tmp/root" --list-catalog >"$tmp/list" 2>>"$tmp/jc" ||
                        bad="journalctl --update-catalog failed"
                [ -n "$bad" ] || [ "$(wc -l <"$tmp/list")" -eq "$(wc -l <"$tmp/entries")" ] ||
                        bad="journalctl lists $(wc -l <"$tmp/list") of $(wc -l <"$tmp/entries") entries"
        fi
        if [ ! -s "$tmp/ids" ] || [ -n "$missing$extra$dups$bad" ]; then
                not_ok "doc/patrol.catalog covers every MESSAGE_ID of src/log.c"
                echo "# missing: $missing extra: $extra duplicate: $dups $bad"
                [ -s "$tmp/jc" ] && diag <"$tmp/jc"
        else
                ok "doc/patrol.catalog covers every MESSAGE_ID of src/log.c ($(wc -l <"$tmp/ids") ids)"
        fi
fi

[ "$n" -eq 13 ] || echo "# planned 13 tests, ran $n"
exit $failed
