#!/usr/bin/env bash
# Fetch promtool or prometheus 2.53.3 from Debian trixie into DIR. Bookworm's 2.42 cannot
# write a native histogram in a rule test's input series (`{{schema:... buckets:[...]}}`)
# nor keep classic and native histograms both (scrape_classic_histograms); 2.53 can, so
# config/prometheus/tests/*.native.test.yml run on its promtool, and
# benchmarks/native_series.py's "both" server is its prometheus. The .deb comes from
# Debian's own archive, is checked against its sha256, and is unpacked, never installed
# (bookworm's prometheus package stays the one the other tests run). Prints DIR.
#   bash scripts/fetch-prometheus-2.53.sh [promtool|prometheus] [DIR]
#     (default: promtool, into .cache/promtool; prometheus into .cache/prometheus-2.53)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-promtool}
case "$binary" in
  promtool)
    deb=promtool_2.53.3+ds1-2_amd64.deb
    sum=ff27654eacc95abd846d344e91fe4ba3b4f0588a50d606ed1d2f09ad3408722f
    dir=${2:-.cache/promtool} ;;
  prometheus)
    deb=prometheus_2.53.3+ds1-2_amd64.deb
    sum=58c3e6a86c56cb3bfd71032fa48d65945d526441a212f5815dfe5ed9cb787ecc
    dir=${2:-.cache/prometheus-2.53} ;;
  *)
    echo "fetch-prometheus-2.53: promtool or prometheus, not $binary" >&2
    exit 2 ;;
esac
marker="$dir/.$deb.sha256"
if [ -x "$dir/$binary" ] && [ "$(cat "$marker" 2>/dev/null)" = "$sum" ]; then echo "$dir"; exit 0; fi

mkdir -p "$dir"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
curl -fsS --retry 3 -o "$download/$deb" "http://deb.debian.org/debian/pool/main/p/prometheus/$deb" >&2
if ! echo "$sum  $download/$deb" | sha256sum --check --status; then
  echo "fetch-prometheus-2.53: $deb does not have sha256 $sum" >&2
  exit 1
fi
dpkg-deb -x "$download/$deb" "$download/root"
install -m 0755 "$download/root/usr/bin/$binary" "$dir/$binary"
echo "$sum" > "$marker"
echo "$dir"
