#!/usr/bin/env bash
# Copy the dashboard's pinned front-end packages from the npm registry into static/vendor/.
#
#   service/web/vendor.sh          fetch the pinned tarballs, verify their integrity, copy the files
#   service/web/vendor.sh --check  fetch and verify, then fail if static/vendor/ differs from them
#
# The dashboard needs no build step: the browser loads these ES modules through the import map in
# static/index.html. To upgrade a package, change its version and integrity below (`npm view
# <name>@<version> dist.integrity` prints it), run this script, and commit static/vendor/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/static/vendor"

# name version sha512-integrity (as the npm registry publishes it)
packages=(
  "preact 11.2.0 sha512-/HfHI/7N84e6GrWBJ3J280z3mLaRJiDcSvj/A+y/4AbLnND/1UlGHe1sR6oYuTGwId0nP7dqDU9OnLxMPZ7xBg=="
  "htm 3.1.1 sha512-983Vyg8NwUE7JkZ6NmOqpCZ+sh1bKv2iYTlUkzlWmA5JD2acKoxd4KVxbMmxX/85mtfdnDmTFoNKcg5DGAvxNQ=="
  "uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
)

# tarball path -> file name in static/vendor/
files=(
  "preact package/dist/preact.mjs preact.mjs"
  "preact package/hooks/dist/hooks.mjs preact-hooks.mjs"
  "preact package/LICENSE LICENSE.preact"
  "htm package/dist/htm.module.js htm.mjs"
  "htm package/LICENSE LICENSE.htm"
  "uplot package/dist/uPlot.esm.js uPlot.esm.js"
  "uplot package/dist/uPlot.min.css uPlot.min.css"
  "uplot package/LICENSE LICENSE.uplot"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for entry in "${packages[@]}"; do
  read -r name version integrity <<<"$entry"
  tarball="$(cd "$work" && npm pack --silent "$name@$version")"
  actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
  if [[ "$actual" != "$integrity" ]]; then
    echo "vendor.sh: $name@$version integrity mismatch: got $actual" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar xzf "$work/$tarball" -C "$work/$name"
done

mode="${1:-copy}"
status=0
[[ "$mode" == "--check" ]] || mkdir -p "$dest"
for entry in "${files[@]}"; do
  read -r name path target <<<"$entry"
  if [[ "$mode" == "--check" ]]; then
    if ! cmp -s "$work/$name/$path" "$dest/$target"; then
      echo "vendor.sh: static/vendor/$target differs from $name's $path" >&2
      status=1
    fi
  else
    cp "$work/$name/$path" "$dest/$target"
  fi
done

if [[ "$mode" != "--check" ]]; then
  {
    echo "# Written by service/web/vendor.sh; do not edit."
    for entry in "${packages[@]}"; do echo "$entry"; done
  } >"$dest/VERSIONS"
fi
exit "$status"
