#!/usr/bin/env bash
# Fetch promtool 2.53.3 from Debian trixie into DIR: bookworm's promtool (2.42) cannot
# write a native histogram in a rule test's input series (`{{schema:... buckets:[...]}}`),
# 2.53 can, so config/prometheus/tests/*.native.test.yml run on it. The .deb comes from
# Debian's own archive, is checked against its sha256, and is unpacked, never installed
# (bookworm's prometheus package stays the one the other tests run). Prints DIR.
#   bash scripts/fetch-promtool.sh [DIR]      (default: .cache/promtool)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.cache/promtool}
deb=promtool_2.53.3+ds1-2_amd64.deb
sum=ff27654eacc95abd846d344e91fe4ba3b4f0588a50d606ed1d2f09ad3408722f
marker="$dir/.$deb.sha256"
if [ -x "$dir/promtool" ] && [ "$(cat "$marker" 2>/dev/null)" = "$sum" ]; then echo "$dir"; exit 0; fi

mkdir -p "$dir"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
curl -fsS --retry 3 -o "$download/$deb" "http://deb.debian.org/debian/pool/main/p/prometheus/$deb" >&2
if ! echo "$sum  $download/$deb" | sha256sum --check --status; then
  echo "fetch-promtool: $deb does not have sha256 $sum" >&2
  exit 1
fi
dpkg-deb -x "$download/$deb" "$download/root"
install -m 0755 "$download/root/usr/bin/promtool" "$dir/promtool"
echo "$sum" > "$marker"
echo "$dir"
