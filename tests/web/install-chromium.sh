#!/usr/bin/env bash
# Make a headless Chromium available for the browser tests (tests/web): Debian's own
# `chromium` package, installed with apt-get as `make test` (and so .ci/run) does on a fresh
# machine. Already installed: nothing to do. Not root and no sudo, or no apt-get: says why on
# stderr and exits 0, and the browser tests skip with that reason.
#
#   tests/web/install-chromium.sh      # last stdout line: the chromium binary, or nothing
set -uo pipefail

log() { printf '[install-chromium %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

find_chromium() {
  local b
  for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}

if found="$(find_chromium)"; then
  log "found ${found}"
  echo "${found}"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "no chromium and no apt-get on this machine: the browser tests will skip"
  exit 0
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    log "no chromium, not root and no password-less sudo: the browser tests will skip"
    exit 0
  fi
fi

# One installer at a time (parallel test sessions may start together).
exec 9>"${TMPDIR:-/tmp}/controlplane-install-chromium.lock"
command -v flock >/dev/null 2>&1 && flock 9
if found="$(find_chromium)"; then echo "${found}"; exit 0; fi

log "installing Debian's chromium with apt-get (about a minute)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >&2 || log "apt-get update failed; trying the lists there are"
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2; then
  log "apt-get install chromium failed: the browser tests will skip"
  exit 0
fi
find_chromium || true
