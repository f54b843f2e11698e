#!/usr/bin/env bash
# Schemathesis against a live `cohort serve`: every operation of /v1/openapi.json, with the
# admin token and then with a tenant's token, EXAMPLES generated cases per operation (100 by
# default), checked for server errors (any status of 500 or more) and for answers that break
# the document (response schema, status code, content type). Exits non-zero on any finding.
#
#     tests/schemathesis.sh                          # target/debug/cohort
#     COHORT=target/release/cohort EXAMPLES=200 tests/schemathesis.sh
#
# Needs `st` (pip install schemathesis). The server and Schemathesis run in a network
# namespace of their own with only loopback (unshare -n, as root): receivers the fuzzer
# registers at made-up addresses can never be sent anything. Writes the summary to
# $OUT (default target/schemathesis).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
COHORT="${COHORT:-$TARGET_DIR/debug/cohort}"
EXAMPLES="${EXAMPLES:-100}"
OUT="${OUT:-$TARGET_DIR/schemathesis}"
command -v st >/dev/null || { echo "st (schemathesis) is not installed: pip install schemathesis" >&2; exit 2; }
[ -x "$COHORT" ] || { echo "no cohort binary at $COHORT (cargo build, or set COHORT)" >&2; exit 2; }

if [ -z "${COHORT_SCHEMATHESIS_NETNS:-}" ]; then
    # Again, inside a namespace with loopback only.
    exec unshare -n env COHORT_SCHEMATHESIS_NETNS=1 COHORT="$COHORT" EXAMPLES="$EXAMPLES" OUT="$OUT" bash "$0" "$@"
fi
ip link set lo up

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cohort-schemathesis.XXXXXX")"
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

"$COHORT" datagen --profile retail --scale 200 --seed 3 --out "$WORK/acme" 2>/dev/null
ADMIN="schemathesis-admin-token-0123456789"
mkfifo "$WORK/stdout"
COHORT_ADMIN_TOKEN="$ADMIN" COHORT_LOG=warn COHORT_WEBHOOK_GIVE_UP_SECONDS=5 "$COHORT" serve --listen 127.0.0.1:0 \
    --data-dir "$WORK/serve" --workers 2 >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
BASE=""
exec 3<"$WORK/stdout"
while IFS= read -r line <&3; do
    case "$line" in "cohort listening on "*) BASE="${line#cohort listening on }"; break ;; esac
done
[ -n "$BASE" ] || { cat "$WORK/stderr" >&2; exit 1; }
# Keep reading the server's standard output so it never blocks.
cat <&3 >/dev/null &

# A tenant with a model and a segment, so tenant-scoped operations meet real data.
TENANT_TOKEN=$(curl -sf -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d "{\"id\": \"acme\", \"region\": \"us-east\", \"data_root\": \"$WORK/acme\"}" "$BASE/v1/tenants" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -sf -X PUT -H "Authorization: Bearer $TENANT_TOKEN" -H 'content-type: application/json' \
    --data @"$WORK/acme/model.json" "$BASE/v1/tenants/acme/model" >/dev/null
python3 - "$WORK/acme/segments/lapsed_buyers.json" >"$WORK/segment.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d.pop("name", None)
print(json.dumps({"definition": d}))
PY
curl -sf -X PUT -H "Authorization: Bearer $TENANT_TOKEN" -H 'content-type: application/json' \
    --data @"$WORK/segment.json" "$BASE/v1/tenants/acme/segments/lapsed_buyers" >/dev/null
curl -sf -X POST -H "Authorization: Bearer $TENANT_TOKEN" -H 'content-type: application/json' \
    -d '{"as_of": "2026-11-01T00:00:00Z"}' "$BASE/v1/tenants/acme/segments/lapsed_buyers/runs" >/dev/null

status=0
for who in admin tenant; do
    token=$ADMIN
    [ "$who" = tenant ] && token=$TENANT_TOKEN
    echo "== schemathesis as the $who, $EXAMPLES examples per operation"
    st run "$BASE/v1/openapi.json" \
        -H "Authorization: Bearer $token" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
        --max-examples "$EXAMPLES" --phases examples,coverage,fuzzing --workers 2 --seed 1 \
        --no-color --report junit --report-junit-path "$OUT/$who.xml" 2>&1 | tee "$OUT/$who.txt" || status=1
done
if grep -q "panicked" "$WORK/stderr"; then
    echo "the server panicked:" >&2
    grep -n "panicked" "$WORK/stderr" >&2
    status=1
fi
exit $status
