#!/usr/bin/env bash
# Debian packages the local cluster, the demo and the tests need. Idempotent: when every
# command is already present it touches nothing and takes milliseconds.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "$1" ]]; }
have runc || need+=(runc)
have /usr/lib/cni/bridge || need+=(containernetworking-plugins)
have iptables || need+=(iptables)
have conntrack || need+=(conntrack)
have openssl || need+=(openssl)
have ssh-keygen || need+=(openssh-client)  # signs and verifies approvals (ssh-keygen -Y)
have debootstrap || need+=(debootstrap)
have /usr/lib/postgresql/15/bin/postgres || need+=(postgresql-15)
have chromium || need+=(chromium)
# Monitoring: promtool and Prometheus, the Pushgateway, Alertmanager (run as plain processes by
# the tests and the demo; Debian's packages try to start services, which no init here does).
have promtool || need+=(prometheus)
have prometheus-pushgateway || need+=(prometheus-pushgateway)
have prometheus-alertmanager || need+=(prometheus-alertmanager)
if ((${#need[@]})); then
  echo "install-system: apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# kube-proxy and the CNI bridge program iptables through the legacy backend the kernel
# here offers; nft-backed iptables would need nf_tables rules instead.
if [[ "$(readlink -f "$(command -v iptables)")" != *legacy* ]] && have iptables-legacy; then
  update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
fi
