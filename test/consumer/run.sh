#!/usr/bin/env bash
# Builds test/consumer against the SDK both ways: find_package after an install into a
# temporary prefix, and add_subdirectory of the source tree. Run by ctest.
# Usage: run.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
source_dir="$1"
build_dir="$2"
work_dir="$3"

rm -rf "$work_dir"
mkdir -p "$work_dir"

cmake --install "$build_dir" --prefix "$work_dir/prefix" >/dev/null
cmake -S "$source_dir/test/consumer" -B "$work_dir/installed" -G Ninja \
    -DCMAKE_PREFIX_PATH="$work_dir/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work_dir/installed" >/dev/null
"$work_dir/installed/consumer"
"$work_dir/installed/consumer_redis"

# A component the package lacks must fail find_package with a message that names it.
if cmake -S "$source_dir/test/consumer" -B "$work_dir/unknown-component" -G Ninja \
    -DCMAKE_PREFIX_PATH="$work_dir/prefix" -DSTAMPEDE_CONSUMER_COMPONENT=postgres \
    >"$work_dir/unknown-component.log" 2>&1; then
    echo "find_package(stampede COMPONENTS postgres) succeeded; expected it to fail" >&2
    exit 1
fi
grep -q "no component 'postgres'" "$work_dir/unknown-component.log"

cmake -S "$source_dir/test/consumer" -B "$work_dir/subdirectory" -G Ninja \
    -DSTAMPEDE_SOURCE_DIR="$source_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work_dir/subdirectory" --target consumer consumer_redis >/dev/null
"$work_dir/subdirectory/consumer"
"$work_dir/subdirectory/consumer_redis"
echo "consumer project built with find_package and add_subdirectory"
