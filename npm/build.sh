#!/usr/bin/env bash
# Builds the npm packages: `cofre` (the JavaScript API and the `cofre`
# command) and `cofre-linux-x64` (the binary), as `npm pack` tarballs.
#
#   npm/build.sh [--debug] [--binary PATH] [OUT_DIR]
#
# By default the binary is built with `cargo build --release`; --debug
# packs the test build's binary instead (the test suite uses it, to spare
# a second build), --binary packs one built elsewhere. The versions come
# from Cargo.toml. Prints the two tarballs' paths.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
profile=release
binary=""
out=""
while (($#)); do
  case $1 in
    --debug) profile=debug ;;
    --binary) binary=$2; shift ;;
    *) out=$1 ;;
  esac
  shift
done
out=${out:-$root/target/npm}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "$binary" ]; then
  if [ "$profile" = release ]; then
    (cd "$root" && cargo build --release --locked --quiet)
  else
    (cd "$root" && cargo build --quiet)
  fi
  binary=$root/target/$profile/cofre
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)

# Each package is assembled in a staging directory, so the repository
# never holds a binary.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
set_version() { # package.json version
  node -e '
    const fs = require("fs"); const [file, v] = process.argv.slice(1);
    const p = JSON.parse(fs.readFileSync(file));
    p.version = v;
    for (const k of Object.keys(p.optionalDependencies || {})) p.optionalDependencies[k] = v;
    fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");' "$1" "$2"
}

for platform in "$here"/platforms/*/; do
  name=$(basename "$platform")
  # Only the platform this binary was built for is packed.
  [ "$name" = "linux-x64" ] || continue
  dir=$stage/cofre-$name
  mkdir -p "$dir/bin"
  cp "$platform/package.json" "$dir/"
  install -m 0755 "$binary" "$dir/bin/cofre"
  # What users download: no debug information (backtraces keep function names).
  if [ "$profile" = release ] && command -v strip >/dev/null; then
    strip --strip-debug "$dir/bin/cofre"
  fi
  set_version "$dir/package.json" "$version"
  (cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
  echo "$out/cofre-$name-$version.tgz"
done

dir=$stage/cofre
cp -r "$here/cofre" "$dir"
cp "$here/README.md" "$dir/README.md"
set_version "$dir/package.json" "$version"
(cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
echo "$out/cofre-$version.tgz"
