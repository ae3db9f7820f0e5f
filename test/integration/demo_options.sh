#!/usr/bin/env bash
# Checks that stampede-demo rejects invalid options with exit status 2 and a message that
# names the problem, before it starts the emulator or any worker.
# Usage: demo_options.sh DEMO_BINARY
set -uo pipefail
demo="$1"
failures=0

# expect_rejected MESSAGE_PART [ENV=VALUE...] -- OPTIONS...
expect_rejected() {
    local expected="$1"
    shift
    local environment=()
    while [ "$1" != "--" ]; do
        environment+=("$1")
        shift
    done
    shift
    local output status
    output="$(env -u STAMPEDE_DEMO_REDIS_URL "${environment[@]}" "$demo" "$@" 2>&1 >/dev/null)"
    status=$?
    if [ "$status" -ne 2 ]; then
        echo "FAIL: stampede-demo $* exited $status, expected 2 (output: $output)"
        failures=$((failures + 1))
    elif [[ "$output" != *"$expected"* ]]; then
        echo "FAIL: stampede-demo $*: the message does not contain '$expected': $output"
        failures=$((failures + 1))
    fi
}

expect_rejected "whole number" -- --processes 0.5 --redis redis://127.0.0.1:1
expect_rejected "at most 1024" -- --processes 1e10 --redis redis://127.0.0.1:1
expect_rejected "at most 2147483647" -- --callers 3e9
expect_rejected "non-negative number" -- --duration -1
expect_rejected "positive number" -- --token-lifetime 0
expect_rejected "needs --redis" -- --processes 2
expect_rejected "edis" -- --processes 2 --redis notaurl
expect_rejected "edis" STAMPEDE_DEMO_REDIS_URL=notaurl -- --processes 2

if [ "$failures" -ne 0 ]; then
    exit 1
fi
echo "stampede-demo rejected every invalid option"
