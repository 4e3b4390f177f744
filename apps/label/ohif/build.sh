#!/usr/bin/env bash
# Build the OHIF viewer that the label app serves at /ohif/ (apps/label/main.py), into apps/label/ohif/dist/.
#
#   bash apps/label/ohif/build.sh [DEST]
#
# No webpack build: OHIF publishes its production build as the npm package @ohif/app (dist/). This script
#   1. fetches that package, pinned by version and sha512 (npm pack: the tarball only, none of its dependencies);
#   2. copies its dist/ without what the radiograph mode never loads (ort/: onnxruntime for the SAM tools, 136 MB;
#      dicom-microscopy-viewer/: slide microscopy, 20 MB);
#   3. moves it from / to /ohif/: the package is built for the site root (PUBLIC_URL "/"), so webpack's public
#      path in the app and worker bundles, the absolute links of index.html and the font URLs of the stylesheets
#      are rewritten (the first two checked);
#   4. adds our app-config.js (data source: the label server's DICOMweb proxy) and the pneumonitor extension and
#      mode (pneumonitor/*.js: ES modules that OHIF loads at start-up through app-config.js, see mode.js).
# Re-running replaces DEST. Needs npm (registry access) and python3.
set -euo pipefail

OHIF_VERSION="3.12.10"
OHIF_INTEGRITY="sha512-0kuF66Mq9c9dMD++bUsTjMrJpXJwaZhz9B4uS244DawAjSkTwIYFU93pxPuRUQixaRi7QAHlF3Fe1qudBlZrmA=="
PUBLIC_URL="/ohif/"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="${1:-$HERE/dist}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

npm pack "@ohif/app@$OHIF_VERSION" --pack-destination "$WORK" --silent >/dev/null
TARBALL="$WORK/ohif-app-$OHIF_VERSION.tgz"
python3 - "$TARBALL" "$OHIF_INTEGRITY" <<'PY'
import base64, hashlib, sys
path, expected = sys.argv[1], sys.argv[2]
actual = "sha512-" + base64.b64encode(hashlib.sha512(open(path, "rb").read()).digest()).decode()
if actual != expected:
    sys.exit(f"{path}: integrity {actual} is not the pinned {expected}")
PY
tar -xzf "$TARBALL" -C "$WORK"
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
(cd "$WORK/package/dist" && tar -cf - --exclude=./ort --exclude=./dicom-microscopy-viewer .) | tar -xf - -C "$DEST.tmp"

python3 - "$DEST.tmp" "$PUBLIC_URL" <<'PY'
import pathlib, re, sys
dist, public_url = pathlib.Path(sys.argv[1]), sys.argv[2]
# webpack's public path: where the app and its workers load their chunks, wasm codecs and fonts from
marker = '__webpack_require__.p = "/";'
patched = 0
for bundle in dist.glob("*.js"):
    text = bundle.read_text()
    if marker in text:
        bundle.write_text(text.replace(marker, f'__webpack_require__.p = "{public_url}";'))
        patched += 1
if patched < 2 or 'app.bundle' not in " ".join(p.name for p in dist.glob("app.bundle.*.js")):
    sys.exit(f"expected the app bundle and its workers to carry {marker!r}; patched {patched} files")
# the stylesheets' fonts
for sheet in dist.glob("*.css"):
    text = sheet.read_text()
    sheet.write_text(re.sub(r"url\(/(?!/)", f"url({public_url}", text))
index = dist / "index.html"
html = index.read_text()
html, n_public = re.subn(r"window\.PUBLIC_URL = '/';", f"window.PUBLIC_URL = '{public_url}';", html)
html, n_links = re.subn(r'(href|src)="/(?!/)', rf'\1="{public_url}', html)
if n_public != 2 or n_links < 5:
    sys.exit(f"index.html: {n_public} PUBLIC_URL and {n_links} links rewritten; the package layout changed")
index.write_text(html)
PY

cp "$HERE/app-config.js" "$DEST.tmp/app-config.js"
cp -r "$HERE/pneumonitor" "$DEST.tmp/pneumonitor"
printf '@ohif/app %s %s\n' "$OHIF_VERSION" "$OHIF_INTEGRITY" > "$DEST.tmp/OHIF_VERSION"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "OHIF $OHIF_VERSION with the pneumonitor mode in $DEST ($(du -sh "$DEST" | cut -f1))"
