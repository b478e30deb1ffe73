#!/usr/bin/env bash
# Installs what `make test` needs on a fresh machine, skipping what is already there:
# Debian packages for the real remote-write clients and peers, and the reference
# Prometheus and promtool of the prometheus module version in go.mod (built from the Go
# module proxy into ./bin).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v vmagent >/dev/null 2>&1 || [ -x /usr/bin/vmagent ] || need_pkgs+=(victoria-metrics)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_pkgs+=(prometheus-alertmanager)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "test-deps: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The packages start system services; the tests run their own instances.
  for svc in prometheus prometheus-node-exporter prometheus-alertmanager victoria-metrics; do
    (systemctl stop "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
  done
  pkill -x prometheus >/dev/null 2>&1 || true
  pkill -x prometheus-alertmanager >/dev/null 2>&1 || true
  pkill -x victoria-metrics >/dev/null 2>&1 || true
fi

promver=$(go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
mkdir -p bin
for tool in promtool prometheus; do
  stamp="bin/.${tool}-${promver}"
  if [ ! -x "bin/${tool}" ] || [ ! -f "$stamp" ]; then
    echo "test-deps: building reference ${tool} ${promver} (a few minutes, once)"
    GOBIN="$PWD/bin" GOFLAGS=-buildvcs=false go install "github.com/prometheus/prometheus/cmd/${tool}@${promver}"
    touch "$stamp"
  fi
done
