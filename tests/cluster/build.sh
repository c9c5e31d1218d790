#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd from Go modules into a cache directory
# outside the repository, so that only the first run pays for the build.
#
#   tests/cluster/build.sh            # builds if needed; last stdout line = bin dir
#
# Environment:
#   CONTROLPLANE_K8S_CACHE    cache root (default: $HOME/.cache/controlplane-k8s)
#   CONTROLPLANE_K8S_VERSION  k8s.io/kubernetes module version (default below)
#   CONTROLPLANE_ETCD_VERSION go.etcd.io/etcd/server/v3 version (default below)
#   GO                        go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#
# How: a throwaway Go module (generated in the cache, never in the repo) requires
# k8s.io/kubernetes at the pinned version and replaces every k8s.io staging module
# (listed in kubernetes' own go.mod as "=> ./staging/src/k8s.io/...") with its
# published v0.MINOR.PATCH tag. etcd comes from etcd's server module (etcdmain)
# through a three-line main package in the same throwaway module, so nothing
# depends on apt. Progress goes to stderr; the bin dir is printed on stdout last.
set -euo pipefail

K8S_VERSION="${CONTROLPLANE_K8S_VERSION:-v1.35.4}"
# The etcd version kubernetes v1.35.x itself requires (go.etcd.io/etcd/server/v3).
ETCD_VERSION="${CONTROLPLANE_ETCD_VERSION:-v3.6.5}"
CACHE_ROOT="${CONTROLPLANE_K8S_CACHE:-${HOME:-/root}/.cache/controlplane-k8s}"
DEST="${CACHE_ROOT}/${K8S_VERSION}"
BIN="${DEST}/bin"
SRC="${DEST}/src"
BINARIES=(kube-apiserver kubectl etcd)
# Bump when the way binaries are built changes, to force a rebuild.
RECIPE="recipe=2 k8s=${K8S_VERSION} etcd=${ETCD_VERSION}"

log() { printf '[build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have_all() {
  [[ -f "${BIN}/.stamp" ]] && [[ "$(cat "${BIN}/.stamp")" == "${RECIPE}" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "${BIN}/${b}" ]] || return 1; done
}

if have_all; then
  log "cached: ${BIN}"
  echo "${BIN}"
  exit 0
fi

# --- locate go --------------------------------------------------------------
GO="${GO:-}"
if [[ -z "${GO}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else log "error: no Go toolchain found (set GO=/path/to/go)"; exit 1
  fi
fi
log "using $("${GO}" version)"

mkdir -p "${DEST}"
# One builder at a time (parallel test sessions may start together).
exec 9>"${DEST}/.lock"
if command -v flock >/dev/null 2>&1; then
  log "waiting for build lock ${DEST}/.lock"
  flock 9
  if have_all; then log "built by another process: ${BIN}"; echo "${BIN}"; exit 0; fi
fi

k8s_minor_patch="${K8S_VERSION#v1.}"           # 35.4
STAGING_VERSION="v0.${k8s_minor_patch}"        # v0.35.4
major_minor="${K8S_VERSION#v}"; major_minor="${major_minor%.*}"  # 1.35

export CGO_ENABLED=0
export GOFLAGS="-mod=mod"
export GOWORK=off

# --- throwaway module ---------------------------------------------------------
rm -rf "${SRC}"
mkdir -p "${SRC}/cmd/etcd"
cd "${SRC}"

log "fetching k8s.io/kubernetes@${K8S_VERSION} go.mod"
k8s_gomod="$("${GO}" mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
[[ -f "${k8s_gomod}" ]] || { log "error: could not download k8s.io/kubernetes@${K8S_VERSION}"; exit 1; }

mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "${k8s_gomod}" | sort -u)
[[ ${#staging[@]} -gt 10 ]] || { log "error: found only ${#staging[@]} staging modules in ${k8s_gomod}"; exit 1; }
log "replacing ${#staging[@]} staging modules with ${STAGING_VERSION}"

go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${k8s_gomod}" | head -1)"
godebug_line="$(sed -n 's/^godebug \(.*\)$/\1/p' "${k8s_gomod}" | head -1)"
{
  echo "module controlplane.test/k8sbuild"
  echo
  echo "go ${go_line:-1.25.0}"
  [[ -n "${godebug_line}" ]] && echo && echo "godebug ${godebug_line}"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes ${K8S_VERSION}"
  echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
  echo ")"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	${m} => ${m} ${STAGING_VERSION}"; done
  echo ")"
} > go.mod

cat > cmd/etcd/main.go <<'GOEOF'
// Command etcd runs etcd's own server entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GOEOF

# --- build ------------------------------------------------------------------
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=${major_minor%%.*}"
  ldflags+=" -X ${pkg}.gitMinor=${major_minor#*.}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done

start=$(date +%s)
log "building kube-apiserver, kubectl, etcd (first run downloads modules into $("${GO}" env GOMODCACHE) and takes several minutes)"
rm -rf "${DEST}/bin.tmp"
mkdir -p "${DEST}/bin.tmp"
# go build is silent for minutes: -v names each package as it compiles, into a log that a
# heartbeat summarises every 30 s.
build_log="${DEST}/build.log"
"${GO}" build -v -trimpath -ldflags "${ldflags}" -o "${DEST}/bin.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kubectl \
  ./cmd/etcd 2>"${build_log}" &
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
for b in "${BINARIES[@]}"; do
  [[ -x "${DEST}/bin.tmp/${b}" ]] || { log "error: ${b} was not built"; exit 1; }
done
echo "${RECIPE}" > "${DEST}/bin.tmp/.stamp"
rm -rf "${BIN}"
mv "${DEST}/bin.tmp" "${BIN}"
log "built in $(( $(date +%s) - start ))s:"
"${BIN}/kube-apiserver" --version >&2 || true
"${BIN}/kubectl" version --client >&2 || true
"${BIN}/etcd" --version >&2 || true
echo "${BIN}"
