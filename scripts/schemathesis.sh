#!/usr/bin/env bash
# Schemathesis against the served OpenAPI: starts Tenantry (embedded PostgreSQL, its own data folder and
# port), loads the Circle K example, and runs Schemathesis with a tenant token and with an operator token.
# Checks: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance. Needs a build (dist/) and python3; the virtualenv is cached.
# SCHEMATHESIS_MAX_EXAMPLES bounds the run time (examples per operation; default 5: about 3 minutes
# for both runs on 2 cores, besides the coverage phase that covers every documented status and keyword).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TMPDIR:-/tmp}/tenantry-schemathesis-venv"
if [ ! -x "$VENV/bin/st" ]; then
  echo "== schemathesis: making a virtualenv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis>=4.32,<5'
fi
echo "== $("$VENV/bin/st" --version)"

# Its own data folder, reachable by the postgres user when run as root.
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tenantry-schemathesis.XXXXXX")"
chmod 755 "$DATA_DIR"
PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
URL="http://127.0.0.1:$PORT"
LOG="$DATA_DIR/server.log"

node bin/tenantry.js serve --port "$PORT" --data-dir "$DATA_DIR/data" >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fs "$URL/healthz" >/dev/null 2>&1 && break
  if ! kill -0 "$SERVER" 2>/dev/null; then cat "$LOG"; exit 1; fi
  sleep 1
done
curl -fs "$URL/healthz" >/dev/null || { cat "$LOG"; exit 1; }

OPERATOR="$(node bin/tenantry.js token create --data-dir "$DATA_DIR/data" --role platform-admin --subject schemathesis-operator)"
TENANTRY_SERVER="$URL" TENANTRY_TOKEN="$OPERATOR" node bin/tenantry.js apply -f examples/circlek >/dev/null
TENANT="$(node bin/tenantry.js token create --data-dir "$DATA_DIR/data" --tenant circlek-eu-prod --role tenant-admin --subject schemathesis-tenant)"

run() {
  echo "== schemathesis as $1"
  # Excluded: GET /v1/events/stream is a Server-Sent Events stream that stays open until the client
  # leaves; Schemathesis reads a response to its end, so every call would time out. Its contract is
  # tested in src/events/events.routes.test.ts. DELETE /v1/sessions/{id} (revokeSession): linked from
  # GET /v1/sessions it revokes the run's own session, and every later request of the run answers 401
  # (so the run stops testing anything); revocation is tested in src/identity/sessions.test.ts.
  # Run in the data folder: Schemathesis keeps a cache in its working directory.
  # Its banner lines ("==== 4 warnings in 41.05s ====") have pytest's closing-line form, and the CI
  # that lands submissions reads such a line as a test runner that ran no test ("ran no test" on
  # every landing since Schemathesis joined CI): they are shown as "-- schemathesis: …" instead
  # (the full log, with the banners, stays in the data folder for the summary check below).
  (cd "$DATA_DIR" && "$VENV/bin/st" run "$URL/openapi.json" \
    --header "Authorization: Bearer $2" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path /v1/events/stream \
    --exclude-operation-id revokeSession \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-5}" \
    --workers 2 \
    --request-timeout 10 \
    --seed 14 \
    --suppress-health-check all) 2>&1 | tee "$DATA_DIR/st-$3.log" |
    sed -E 's/^=+ (.*) =+$/-- schemathesis: \1/'
  local code=${PIPESTATUS[0]}
  [ "$code" -eq 0 ] && return 0
  # CPython 3.11 can raise "AST constructor recursion depth mismatch" inside Hypothesis while it
  # describes a lambda deep in a recursive draw (POST /v1/apply's manifests): a crash of the tool on
  # this interpreter, not an answer of the API. A run whose only problems are such crashes passes,
  # and says so; any failed check, or any other error, still fails it.
  local summary errors tool_bug
  summary=$(grep -E '^=+ .* in [0-9.]+s =+$' "$DATA_DIR/st-$3.log" | tail -1)
  errors=$(sed -nE 's/.* ([0-9]+) errors?[ ,].*/\1/p' <<<"$summary")
  tool_bug=$(grep -c 'AST constructor recursion depth mismatch' "$DATA_DIR/st-$3.log" || true)
  if ! grep -q 'fail' <<<"$summary" && [ -n "$errors" ] && [ "$errors" -le "$tool_bug" ]; then
    echo "== note: $errors Hypothesis crash(es) on CPython 3.11 (AST recursion depth), no failed check"
    return 0
  fi
  return "$code"
}
status=0
# The tenant first: the operator's run may change or delete the tenant objects.
run "a tenant (tenant-admin of circlek-eu-prod)" "$TENANT" tenant || status=1
run "an operator (platform-admin)" "$OPERATOR" operator || status=1
if [ "$status" -ne 0 ]; then
  echo "== server errors logged:"
  grep -E '"level":(50|60)' "$LOG" | tail -20 || true
fi
exit "$status"
