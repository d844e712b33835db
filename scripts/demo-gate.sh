#!/usr/bin/env bash
# The Prometheus analysis gate, for `make demo` (scripts/demo.sh runs it once v2 is live in
# staging): Debian's Prometheus scrapes the sample app's pods every second, found through the
# API server; under load, v3 passes the gate, then a v2 whose error ratio rises to 10% nine
# seconds after it starts is rolled back by the gate within seconds. Needs KUBECONFIG and
# PREFECT_API_URL; DEMO_NAMESPACE overrides staging's namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
work="$(mktemp -d)"
pids=()
cleanup() {
  touch "$work/load.stop"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say "Prometheus (Debian's package) in the cluster's network namespace, scraping every second"
python -m tests.support.prometheus >"$work/prometheus.out" 2>&1 &
pids+=($!)
for _ in $(seq 120); do grep -q '^PROMETHEUS_URL=' "$work/prometheus.out" && break; sleep 0.5; done
url="$(sed -n 's/^PROMETHEUS_URL=//p' "$work/prometheus.out")"
[[ -n "$url" ]] || { cat "$work/prometheus.out" >&2; exit 1; }
echo "  $url"
python -m tests.support.gate deployments "$work/good" "$url"
python -m tests.support.gate deployments "$work/bad" "$url" ERROR_RATE=10 ERROR_AFTER=9
ns="$(python -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["namespace"])' "$work/good/staging.yaml")"

bin="$(tests/cluster/build.sh)"
ip="$("$bin/kubectl" -n "$ns" get service sample-app -o jsonpath='{.spec.clusterIP}')"
say "load: 30 requests/s on http://$ip/version from inside the cluster's network"
nsenter --net=/run/netns/bascule python -m tests.support.load --url "http://$ip/version" \
  --rps 30 --workers 8 --versions v1,v2,v3 --stop-file "$work/load.stop" \
  --out "$work/load.json" --duration 300 &
pids+=($!)
sleep 3

gated() {
  set +e
  bascule deploy staging --dir "$1" --image "$2" --redeploy 2>&1 \
    | grep --line-buffered -E "analysis (preview|active) |rolling back|Flow run '[^']*' - Finished in state" \
    | sed -u -E "s/^[0-9:.]+ \| [A-Z]+ +\| (Flow|Task) run '[^']*' - //; s/^/  /"
  local rc="${PIPESTATUS[0]}"
  set -e
  echo "  exit code $rc"
}
say "staging ← v3: healthy, the gate lets it through"
gated "$work/good" bascule.local/sample-app:v3
say "staging ← v2 with errors from 9 s after start: the gate rolls it back"
gated "$work/bad" bascule.local/sample-app:v2
bascule history staging --dir "$work/good" --limit 2 | sed 's/^/  /'
