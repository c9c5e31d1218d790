#!/usr/bin/env bash
# Fetch the Kubernetes Gateway API release this project tests against, from the Go module
# proxy into the Go module cache (the cache is the cache: a second run is offline), and
# print where its parts are.
#
#   tests/cluster/gateway_api.sh              # last stdout line: the CRD dir (standard channel)
#   tests/cluster/gateway_api.sh crds         # same
#   tests/cluster/gateway_api.sh conformance  # the conformance module's dir (tests/, base/)
#   tests/cluster/gateway_api.sh experimental-crds  # the experimental channel's CRD dir
#   tests/cluster/gateway_api.sh version      # the pinned version
#
# The version is pinned HERE and nowhere else (tests/cluster/gateway_api.py reads it from
# this script; tests/kube/test_gateway_api_crds.py checks the README names the same one).
# Environment: CONTROLPLANE_GATEWAY_API_VERSION overrides the pin; GO as in build.sh.
set -euo pipefail

GATEWAY_API_VERSION="${CONTROLPLANE_GATEWAY_API_VERSION:-v1.6.0}"

log() { printf '[gateway_api.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

what="${1:-crds}"
if [[ "${what}" == "version" ]]; then echo "${GATEWAY_API_VERSION}"; exit 0; fi

GO="${GO:-}"
if [[ -z "${GO}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else log "error: no Go toolchain found (set GO=/path/to/go)"; exit 1
  fi
fi

# `go mod download` needs no go.mod; run it outside any module or workspace.
export GOWORK=off GOFLAGS=-mod=mod
cd "$(mktemp -d)"
trap 'rm -rf "$(pwd)"' EXIT

module_dir() {
  local dir
  dir="$("${GO}" mod download -json "$1@${GATEWAY_API_VERSION}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -n "${dir}" && -d "${dir}" ]] || { log "error: could not download $1@${GATEWAY_API_VERSION}"; exit 1; }
  echo "${dir}"
}

case "${what}" in
  crds)
    dir="$(module_dir sigs.k8s.io/gateway-api)/config/crd/standard"
    [[ -f "${dir}/gateway.networking.k8s.io_gateways.yaml" ]] || { log "error: no CRDs in ${dir}"; exit 1; }
    echo "${dir}" ;;
  experimental-crds)
    dir="$(module_dir sigs.k8s.io/gateway-api)/config/crd/experimental"
    [[ -f "${dir}/gateway.networking.k8s.io_tlsroutes.yaml" ]] || { log "error: no CRDs in ${dir}"; exit 1; }
    echo "${dir}" ;;
  conformance)
    dir="$(module_dir sigs.k8s.io/gateway-api/conformance)"
    [[ -f "${dir}/base/manifests.yaml" ]] || { log "error: no base/manifests.yaml in ${dir}"; exit 1; }
    echo "${dir}" ;;
  *) log "usage: $0 [crds|experimental-crds|conformance|version]"; exit 2 ;;
esac
