#!/usr/bin/env bash
# Generates the local cluster's CA, serving and client certificates and the service
# account key pair, all locally with openssl. Usage: pki.sh DIR NODE_NAME NODE_IP SERVICE_IP
# Makes only what DIR lacks: a running cluster's CA stays, and a newer part gets its certificate.
set -euo pipefail
dir="$1" node="$2" node_ip="$3" svc_ip="$4"
mkdir -p "$dir" && cd "$dir"
umask 077

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
if [[ ! -f ca.crt ]]; then
  key ca
  openssl req -x509 -new -key ca.key -subj "/CN=bascule-local-ca" -days 3650 -out ca.crt 2>/dev/null
fi

# cert NAME SUBJECT EXTKEYUSAGE [SANS]
cert() {
  local name="$1" subj="$2" usage="$3" sans="${4:-}"
  [[ -f "$name.crt" ]] && return
  key "$name"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$node_ip,IP:$svc_ip"
cert kubelet-serving "/CN=$node" serverAuth "DNS:$node,DNS:localhost,IP:127.0.0.1,IP:$node_ip"
cert admin "/O=system:masters/CN=bascule-admin" clientAuth
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$node" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert coredns "/CN=system:coredns" clientAuth
if [[ ! -f sa.pub ]]; then
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
fi
