#!/usr/bin/env bash
# Builds the test Kubernetes control plane (kube-apiserver + kube-controller-manager) from the Go module
# proxy into a cache folder, once, and installs etcd and kubectl (Debian packages etcd-server,
# kubernetes-client) when they are missing.
# How and why: ../shared/notes/kubernetes-api-server.md. ~5 min cold per binary on 2 cores; a cached
# build returns at once. Used by test/infra/kube-apiserver.ts (which finds the binaries there) and .ci/run.
#   TENANTRY_KUBE_CACHE   cache folder (default ~/.cache/tenantry/kubernetes-<version>)
set -euo pipefail
VERSION="${TENANTRY_KUBE_VERSION:-1.34.4}"
MINOR="$(echo "$VERSION" | cut -d. -f2)"
CACHE="${TENANTRY_KUBE_CACHE:-$HOME/.cache/tenantry/kubernetes-$VERSION}"
BIN="$CACHE/bin"

if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd-server"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server) >/dev/null
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubernetes-client (kubectl)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client) >/dev/null
fi

if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  echo "Kubernetes v$VERSION binaries in $BIN (cached)"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is not on the PATH: cannot build kube-apiserver" >&2; exit 1; }

mkdir -p "$BIN"
export GOPATH="$CACHE/gopath" GOMODCACHE="$CACHE/gopath/pkg/mod" GOCACHE="$CACHE/gocache" GOTOOLCHAIN=local
go mod download -json "k8s.io/kubernetes@v$VERSION" >/dev/null
SRC="$CACHE/src"
if [ ! -f "$SRC/.patched" ]; then
  rm -rf "$SRC"
  cp -r "$GOMODCACHE/k8s.io/kubernetes@v$VERSION" "$SRC"
  chmod -R u+w "$SRC"
  # The module's replace directives point into staging/, which the module zip lacks: use the published
  # k8s.io/* modules of the same minor version instead.
  (cd "$SRC" && rm -rf vendor go.work go.work.sum &&
    sed -i -e '/^replace (/,/^)/d' -e "s#^\(\tk8s\.io/[a-z0-9-]*\) v0\.0\.0\$#\1 v0.$MINOR.${VERSION##*.}#" go.mod)
  touch "$SRC/.patched"
fi
export GOFLAGS="-mod=mod -buildvcs=false" GOWORK=off CGO_ENABLED=0
LD="-s -w -X k8s.io/component-base/version.gitVersion=v$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
cd "$SRC"
for cmd in kube-apiserver kube-controller-manager; do
  if [ ! -x "$BIN/$cmd" ]; then
    echo "== building $cmd v$VERSION (minutes, once)"
    started=$(date +%s)
    go build -p 1 -trimpath -ldflags "$LD" -o "$BIN/$cmd.tmp" "./cmd/$cmd"
    mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    echo "   $cmd built in $(( $(date +%s) - started )) s"
  fi
done
echo "Kubernetes v$VERSION binaries in $BIN"
