#!/usr/bin/env bash
# Runs examples/list_guests against stampede-emulator as docs/api-client.md describes.
# Given a token URL without an API URL, the example must exit before sending anything.
# Given both, with the API URL the token URL without "oauth/token", it must list the
# emulator's guests.
# Usage: list_guests_example.sh EMULATOR LIST_GUESTS WORK_DIR
set -euo pipefail

emulator="$1"
list_guests="$2"
work="$3"
rm -rf "$work"
mkdir -p "$work"

# The output file exists before the loop below reads it, since the background shell
# may open it later.
: >"$work/emulator.out"
"$emulator" --cert-out "$work/ca.pem" >"$work/emulator.out" 2>"$work/emulator.err" &
emulator_pid=$!
trap 'kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true' EXIT

# The first line on stdout is the token URL, written once the emulator listens.
while [ "$(wc -l <"$work/emulator.out")" -lt 1 ]; do
    if ! kill -0 "$emulator_pid" 2>/dev/null; then
        echo "FAIL: stampede-emulator exited before printing its token URL:" >&2
        cat "$work/emulator.err" >&2
        exit 1
    fi
    sleep 0.1
done
token_url="$(head -n 1 "$work/emulator.out")"
api_url="${token_url%oauth/token}"

export STAMPEDE_CLIENT_ID=demo-client STAMPEDE_CLIENT_SECRET=demo-secret
export STAMPEDE_TOKEN_URL="$token_url" STAMPEDE_CA_FILE="$work/ca.pem"

status=0
env -u STAMPEDE_API_URL "$list_guests" >"$work/no-api-url.out" 2>"$work/no-api-url.err" ||
    status=$?
if [ "$status" -ne 2 ]; then
    echo "FAIL: without STAMPEDE_API_URL the example exited with $status, expected 2" >&2
    cat "$work/no-api-url.err" >&2
    exit 1
fi
if ! grep -q "set STAMPEDE_API_URL" "$work/no-api-url.err"; then
    echo "FAIL: the message does not name STAMPEDE_API_URL:" >&2
    cat "$work/no-api-url.err" >&2
    exit 1
fi
if grep -q "POST /oauth/token" "$work/emulator.err"; then
    echo "FAIL: without STAMPEDE_API_URL the example still requested a token" >&2
    exit 1
fi

STAMPEDE_API_URL="$api_url" "$list_guests" >"$work/listed.out" 2>"$work/listed.err" || {
    echo "FAIL: with STAMPEDE_API_URL=$api_url the example exited with $?:" >&2
    cat "$work/listed.err" >&2
    exit 1
}
if ! tail -n 1 "$work/listed.out" | grep -Eq '^[1-9][0-9]* guests$'; then
    echo "FAIL: the example did not list the emulator's guests:" >&2
    tail -n 3 "$work/listed.out" >&2
    exit 1
fi
echo "PASS"
