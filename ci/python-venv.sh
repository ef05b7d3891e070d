#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment of the tests, with the
# pinned versions of ci/requirements.txt, and prints its directory.
#
#   ci/python-venv.sh [DIR]      default DIR: target/python-venv
#
# Idempotent: a stamp file holds the SHA-256 of requirements.txt the venv was
# built from; an up-to-date venv is reused without touching the network.
# Concurrent callers serialise on a lock file. Needs python3 with venv and pip
# (Debian: apt-get install python3-venv); exits non-zero, saying so, without.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/ci/requirements.txt"
venv="${1:-${CARGO_TARGET_DIR:-$root/target}/python-venv}"
mkdir -p "$(dirname "$venv")"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "python-venv: $python not found; install Python 3 (Debian: apt-get install python3-venv)" >&2
  exit 1
fi

exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$venv/.requirements.sha256" \
      && "$(cat "$venv/.requirements.sha256")" == "$want" ]]; then
  echo "$venv"
  exit 0
fi

rm -rf "$venv"
if ! "$python" -m venv "$venv" >&2; then
  echo "python-venv: cannot create a virtual environment with $python; install python3-venv" >&2
  exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
echo "$want" >"$venv/.requirements.sha256"
echo "$venv"
