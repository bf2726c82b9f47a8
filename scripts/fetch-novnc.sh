#!/bin/sh
# Fetch noVNC (the browser VNC client, plain ES modules) into web/vendor/novnc.
# Idempotent: does nothing when the wanted version is already there.
# Source: the npm registry package @novnc/novnc (no nodejs needed at runtime;
# Debian's `novnc` package would pull nodejs in). Called by scripts/setup.sh.
set -eu

VERSION="${NOVNC_VERSION:-1.4.0}"
NOVNC_SHA256="005d4676126a252fcdf6e4851433dc7913947542b7f8f8b941af594c9dcd94cc"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/web/vendor/novnc"
STAMP="$DEST/.version"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ] && [ -f "$DEST/core/rfb.js" ]; then
    echo "noVNC $VERSION already in $DEST"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TARBALL="$WORK/novnc-$VERSION.tgz"
# The npm registry's tarball, fetched with curl (no nodejs/npm needed) and pinned.
curl -fsSL --retry 3 -o "$TARBALL" "https://registry.npmjs.org/@novnc/novnc/-/novnc-$VERSION.tgz"
if [ "$VERSION" = "1.4.0" ]; then
    echo "$NOVNC_SHA256  $TARBALL" | sha256sum -c --quiet - || {
        echo "fetch-novnc: checksum mismatch for noVNC $VERSION" >&2; exit 1; }
fi
tar -xzf "$TARBALL" -C "$WORK"
[ -f "$WORK/package/core/rfb.js" ] || { echo "fetch-novnc: unexpected package layout" >&2; exit 1; }

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
# core/ and vendor/ are the ES modules; LICENSE.txt must travel with them.
cp -R "$WORK/package/core" "$DEST.tmp/core"
[ -d "$WORK/package/vendor" ] && cp -R "$WORK/package/vendor" "$DEST.tmp/vendor"
for f in LICENSE.txt README.md package.json; do
    [ -f "$WORK/package/$f" ] && cp "$WORK/package/$f" "$DEST.tmp/$f"
done
echo "$VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "noVNC $VERSION installed in $DEST"
