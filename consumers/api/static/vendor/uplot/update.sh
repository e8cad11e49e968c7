#!/bin/sh
# Refresh the vendored uPlot from the npm registry: ./update.sh [VERSION]   (default: latest)
# Copies the minified IIFE build, its CSS and the licence here, and records the version.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack "uplot@${1:-latest}" >/dev/null
tar xzf uplot-*.tgz
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE "$here/"
node -p 'require("./package/package.json").version' > "$here/VERSION"
echo "uPlot $(cat "$here/VERSION") -> $here"
