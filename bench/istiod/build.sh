#!/usr/bin/env bash
# Build istiod's `pilot-discovery` from the Go module proxy into a cache directory outside
# the repository (next to the kube binaries of tests/cluster/build.sh), so that only the first
# `make bench-istiod` pays for the build (~10 min on a loaded 2-core machine).
#
#   bench/istiod/build.sh            # builds if needed; last stdout line = the binary's path
#
# Environment:
#   CONTROLPLANE_K8S_CACHE        cache root (default: $HOME/.cache/controlplane-k8s)
#   CONTROLPLANE_ISTIO_VERSION    istio.io/istio module version (default: the pin below)
#   GO                            go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#
# The module proxy serves istio.io/istio only as pseudo-versions of master (istio tags its
# releases 1.x.y, which are not Go semver for a v0 module path). The pin is the newest one
# `go list -m istio.io/istio@latest` answered on 2026-12-07; its VERSION file says 1.31, so
# the binary reports 1.31-dev like istio's own `make` would.
set -euo pipefail

# THE pin (the only place it is written; bench/peer.py reads it from this line).
ISTIO_VERSION="${CONTROLPLANE_ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
CACHE_ROOT="${CONTROLPLANE_K8S_CACHE:-${HOME:-/root}/.cache/controlplane-k8s}"
DEST="${CACHE_ROOT}/istio-${ISTIO_VERSION}"
BIN="${DEST}/bin"
SRC="${DEST}/src"
RECIPE="recipe=1 istio=${ISTIO_VERSION}"

log() { printf '[istiod/build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have_it() {
  [[ -f "${BIN}/.stamp" ]] && [[ "$(cat "${BIN}/.stamp")" == "${RECIPE}" ]] \
    && [[ -x "${BIN}/pilot-discovery" ]]
}

if have_it; then
  log "cached: ${BIN}/pilot-discovery"
  echo "${BIN}/pilot-discovery"
  exit 0
fi

GO="${GO:-}"
if [[ -z "${GO}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else log "error: no Go toolchain found (set GO=/path/to/go)"; exit 1
  fi
fi
log "using $("${GO}" version)"

mkdir -p "${DEST}"
exec 9>"${DEST}/.lock"
if command -v flock >/dev/null 2>&1; then
  log "waiting for build lock ${DEST}/.lock"
  flock 9
  if have_it; then log "built by another process"; echo "${BIN}/pilot-discovery"; exit 0; fi
fi

export CGO_ENABLED=0
export GOFLAGS="-mod=mod"
export GOWORK=off

# A throwaway module (in the cache, never in the repo) that requires istio.io/istio at the
# pin. istio's go.mod has no replace directives, so minimal version selection with istio as
# the only requirement picks exactly istio's own dependency versions.
rm -rf "${SRC}"
mkdir -p "${SRC}"
cd "${SRC}"
log "fetching istio.io/istio@${ISTIO_VERSION}"
istio_dir="$("${GO}" mod download -json "istio.io/istio@${ISTIO_VERSION}" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
[[ -d "${istio_dir}" ]] || { log "error: could not download istio.io/istio@${ISTIO_VERSION}"; exit 1; }
go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${istio_dir}/go.mod" | head -1)"
istio_release="$(cat "${istio_dir}/VERSION" 2>/dev/null || echo unknown)"
{
  echo "module controlplane.test/istiodbuild"
  echo
  echo "go ${go_line:-1.26.0}"
  echo
  echo "require istio.io/istio ${ISTIO_VERSION}"
} > go.mod

rev="${ISTIO_VERSION##*-}"
ldflags="-s -w"
ldflags+=" -X istio.io/istio/pkg/version.buildVersion=${istio_release}-dev"
ldflags+=" -X istio.io/istio/pkg/version.buildGitRevision=${rev}"
ldflags+=" -X istio.io/istio/pkg/version.buildStatus=Clean"
ldflags+=" -X istio.io/istio/pkg/version.buildTag=${ISTIO_VERSION}"

start=$(date +%s)
log "building pilot-discovery (first run downloads modules into $("${GO}" env GOMODCACHE) and takes several minutes)"
rm -rf "${DEST}/bin.tmp"
mkdir -p "${DEST}/bin.tmp"
build_log="${DEST}/build.log"
# istio's own release build uses the agent/vtprotobuf-free default tags; the same here.
"${GO}" build -v -trimpath -ldflags "${ldflags}" -o "${DEST}/bin.tmp/pilot-discovery" \
  istio.io/istio/pilot/cmd/pilot-discovery 2>"${build_log}" &
build_pid=$!
while kill -0 "${build_pid}" 2>/dev/null; do
  for _ in $(seq 30); do kill -0 "${build_pid}" 2>/dev/null || break; sleep 1; done
  kill -0 "${build_pid}" 2>/dev/null || break
  log "still building: $(grep -vc '^go: downloading' "${build_log}" || true) packages compiled, $(( $(date +%s) - start ))s so far"
done
if ! wait "${build_pid}"; then
  tail -n 40 "${build_log}" >&2
  log "error: go build failed (full log: ${build_log})"
  exit 1
fi
[[ -x "${DEST}/bin.tmp/pilot-discovery" ]] || { log "error: pilot-discovery was not built"; exit 1; }
echo "${RECIPE}" > "${DEST}/bin.tmp/.stamp"
echo "$(( $(date +%s) - start ))" > "${DEST}/bin.tmp/.build_seconds"
rm -rf "${BIN}"
mv "${DEST}/bin.tmp" "${BIN}"
log "built in $(( $(date +%s) - start ))s:"
"${BIN}/pilot-discovery" version -s >&2 || true
echo "${BIN}/pilot-discovery"
