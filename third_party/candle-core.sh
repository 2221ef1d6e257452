#!/usr/bin/env bash
# third_party/candle-core is Candle's published candle-core crate with fkd's patch (see its
# FKD-PATCH.md). This script rebuilds that tree from the registry's source plus
# third_party/candle-core.patch, so that drift is caught and upgrading Candle is one command:
#
#   candle-core.sh [check [VERSION]]  rebuild the tree in a temp dir, compare with the vendored
#                                     one; exit 1 and show the differences if they differ (CI)
#   candle-core.sh rebuild [VERSION]  replace the vendored tree with the rebuilt one (upgrade)
#   candle-core.sh diff               regenerate the .patch from the vendored tree (after a
#                                     deliberate edit of it)
#
# The rebuilt tree is the published .crate, unpacked, minus tests/ benches/ examples/ and cargo's
# packaging files (Cargo.lock, Cargo.toml.orig, .cargo_vcs_info.json): those are deleted here, not
# in the patch. Everything else (Cargo.toml's test/bench/example entries, src/backprop.rs,
# FKD-PATCH.md, cargo's .cargo-ok marker) is in the patch, which `patch -p1` applies in the crate.
# VERSION defaults to the vendored one. The crate comes from cargo's own download cache, fetched
# by a throwaway crate in a temp dir (offline first), so the workspace's Cargo.lock and target/
# are untouched. CANDLE_TREE overrides the vendored tree's path (to test the check).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=${CANDLE_TREE:-$root/third_party/candle-core}
patchfile=$root/third_party/candle-core.patch
drop=(tests benches examples Cargo.lock Cargo.toml.orig .cargo_vcs_info.json)
mode=${1:-check}
version=${2:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$tree/Cargo.toml" | head -n1)}
die() { echo "candle-core.sh: $*" >&2; exit 1; }
[ -n "$version" ] || die "no version given and none found in $tree/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LC_ALL=C

# The published candle-core $version, unpacked into $work/a, with the ${drop[@]} removed.
published() {
  local cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache crate
  crate=$(ls "$cache"/*/"candle-core-$version.crate" 2>/dev/null | head -n1 || true)
  if [ -z "$crate" ]; then
    mkdir -p "$work/fetch/src" && touch "$work/fetch/src/lib.rs"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\ncandle-core = "=%s"\n' \
      "$version" >"$work/fetch/Cargo.toml"
    local host; host=$(rustc -vV | sed -n 's/^host: //p')
    (cd "$work/fetch" && export CARGO_TARGET_DIR="$work/target" &&
      { cargo fetch -q --offline --target "$host" 2>/dev/null || cargo fetch -q --target "$host"; }) ||
      die "cargo could not fetch candle-core $version"
    crate=$(ls "$cache"/*/"candle-core-$version.crate" | head -n1)
  fi
  tar -xzf "$crate" -C "$work" && mv "$work/candle-core-$version" "$work/a"
  (cd "$work/a" && rm -rf "${drop[@]}")
}

# $work/b: the published crate with the patch applied; on failure show patch's report and stop.
patched() {
  published
  cp -R "$work/a" "$work/b"
  patch -d "$work/b" -p1 -E -N --no-backup-if-mismatch -i "$patchfile" >"$work/patch.log" 2>&1 || {
    cat "$work/patch.log" >&2
    trap - EXIT
    die "the patch does not apply to candle-core $version (see above; the .rej files are in" \
      "$work/b); $tree is untouched"
  }
}

case $mode in
  check)
    patched
    cp -R "$tree" "$work/vendored"
    mv "$work/b" "$work/expected"
    if (cd "$work" && diff -ru expected vendored) >"$work/diff.txt"; then
      echo "candle-core.sh: $tree = candle-core $version + $(basename "$patchfile")"
    else
      cat "$work/diff.txt"
      echo "candle-core.sh: $tree differs from candle-core $version + $(basename "$patchfile") in:" >&2
      (cd "$work" && diff -rq expected vendored | sed 's/^/  /') >&2 || true
      die "if the change is deliberate, run: bash third_party/candle-core.sh diff"
    fi
    ;;
  rebuild)
    patched
    cat "$work/patch.log"
    rm -rf "$tree.new" && cp -R "$work/b" "$tree.new" && rm -rf "$tree" && mv "$tree.new" "$tree"
    echo "candle-core.sh: $tree rebuilt from candle-core $version + $(basename "$patchfile")."
    echo "Now set candle-core's version in Cargo.toml and FKD-PATCH.md, run cargo update -p candle-core, re-measure."
    ;;
  diff)
    published
    cp -R "$tree" "$work/b"
    # diff exits 1 when the trees differ, which is the point; drop the timestamps from the headers.
    (cd "$work" && diff -ruN a b || [ $? -eq 1 ]) | sed -E 's/^((---|\+\+\+) [^\t]*)\t.*/\1/' >"$work/new.patch"
    mv "$work/new.patch" "$patchfile"
    echo "candle-core.sh: wrote $patchfile ($(grep -c '^+++ ' "$patchfile") files)"
    bash "$0" check "$version"
    ;;
  *) die "unknown mode '$mode' (check, rebuild [VERSION] or diff)" ;;
esac
