# Shared set-up for scripts/demo, scripts/test and scripts/bench: installs the Debian
# packages that are missing, then configures and builds with CMake.
# Source it; it defines functions and changes nothing by itself.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Packages every build needs. libhiredis-dev builds stampede::redis (fleet mode), and
# the tests labelled "redis" start their own redis-server on loopback.
base_packages=(
    g++ cmake ninja-build pkg-config openssl ca-certificates
    libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-test1.81-dev
    libssl-dev
    libhiredis-dev redis-server
)

# Installs the given Debian packages that are not installed yet.
ensure_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "Installing missing packages: ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Installs the npm packages of the interop tests into test/interop/node_modules, at the
# versions pinned in test/interop/package-lock.json, with Node.js and npm from Debian when
# the machine has none. Skips npm when the installed packages match the lock file.
ensure_interop_packages() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        ensure_packages nodejs npm
    fi
    local dir="$repo_root/test/interop"
    local stamp="$dir/node_modules/.stampede-package-lock.json"
    if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
        return 0
    fi
    echo "Installing the interop test servers with npm ci in test/interop" >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    cp "$dir/package-lock.json" "$stamp"
}

# Configures (once) and builds the project in the given directory, with
# CMAKE_BUILD_PARALLEL_LEVEL compile jobs when it is set, else one per processor.
# Usage: build_project BUILD_DIR [cmake arguments...] [-- targets...]
# Without targets it builds everything.
build_project() {
    local build_dir="$1"
    shift
    local cmake_args=()
    local targets=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        cmake_args+=("$1")
        shift
    done
    if [ $# -gt 0 ]; then
        shift
        targets=("$@")
    fi
    if [ ! -f "$build_dir/build.ninja" ]; then
        cmake -S "$repo_root" -B "$build_dir" -G Ninja "${cmake_args[@]}"
    else
        cmake "$build_dir" "${cmake_args[@]}" >/dev/null
    fi
    local jobs
    jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
    if [ "${#targets[@]}" -gt 0 ]; then
        cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
    else
        cmake --build "$build_dir" -j "$jobs"
    fi
}
