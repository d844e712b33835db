#!/usr/bin/env bash
# Builds actionlint from its Go module (the PyPI wrapper downloads a binary from the internet,
# which the test machines cannot reach) and prints the path of the binary.
# Cached in ${BASCULE_CACHE:-$HOME/.cache/bascule}/bin: a second run only prints the path.
set -euo pipefail

version=v1.7.12
cache=${BASCULE_CACHE:-$HOME/.cache/bascule}
bin_dir=$cache/bin
binary=$bin_dir/actionlint

# A binary of another version (after a bump of $version) is rebuilt, not reused.
if [[ -x $binary ]] && [[ "$("$binary" -version 2>/dev/null | head -n1)" == "$version" ]]; then
    echo "$binary"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "install-actionlint: 'go' not found; install Go (Debian: apt-get install golang-go)" >&2
    exit 1
fi

mkdir -p "$bin_dir"
# GOTOOLCHAIN=local: build with the installed Go, never download another toolchain.
GOTOOLCHAIN=local GOBIN="$bin_dir" \
    go install "github.com/rhysd/actionlint/cmd/actionlint@$version" >&2
echo "$binary"
