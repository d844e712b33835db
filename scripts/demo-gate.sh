#!/usr/bin/env bash
# The Prometheus analysis gate, for `make demo` (scripts/demo.sh runs it in staging, after its
# own deploys): Debian's Prometheus scrapes the sample app's pods every second, found through the
# API server; under load on the active and the preview Service, v3 passes the gate on what
# Prometheus measured, then a v2 whose error ratio rises to 10% thirty seconds after it
# starts (after its switch) is rolled back by the gate within seconds. The gate counts no
# data, and an unreachable Prometheus, as a failure (tests/support/gate.py: DEMO_ANALYSIS);
# after each run its report is checked: every evaluation measured a value, or this script
# exits 1. Needs KUBECONFIG and PREFECT_API_URL; DEMO_NAMESPACE overrides staging's namespace.
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
python -m tests.support.gate write deployments "$work/good" "$url"
# The switch comes 20-25 s after the new pods start (the active version's baseline, then the
# preview, answer /readyz for 10 s first: tests/support/gate.py), so the errors start after
# it, inside the window.
python -m tests.support.gate write deployments "$work/bad" "$url" ERROR_RATE=10 ERROR_AFTER=30
ns="$(python -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["namespace"])' "$work/good/staging.yaml")"

bin="$(tests/cluster/build.sh)"
ip() { "$bin/kubectl" -n "$ns" get service "$1" -o jsonpath='{.spec.clusterIP}'; }
load() {  # load SERVICE RPS WORKERS
  nsenter --net=/run/netns/bascule python -m tests.support.load --url "http://$(ip "$1")/version" \
    --rps "$2" --workers "$3" --versions v1,v2,v3 --stop-file "$work/load.stop" \
    --out "$work/$1.json" --duration 300 &
  pids+=($!)
}
say "load from inside the cluster's network: 30 requests/s on sample-app, 10/s on sample-app-preview"
# Requests to the preview reach a new release before its switch: the gate's first
# evaluations after the switch measure its own traffic.
load sample-app 30 8
load sample-app-preview 10 4
python -m tests.support.gate wait "$url" "$ns"
echo "  Prometheus has scraped the clients' requests to the serving pods"

failed=0
gated() {  # gated DIR IMAGE EXPECTED-RESULT
  set +e
  bascule deploy staging --dir "$1" --image "$2" --redeploy 2>&1 \
    | grep --line-buffered -E "analysis (preview|active) |rolling back|Flow run '[^']*' - Finished in state" \
    | sed -u -E "s/^[0-9:.]+ \| [A-Z]+ +\| (Flow|Task) run '[^']*' - //; s/^/  /"
  local rc="${PIPESTATUS[0]}"
  set -e
  echo "  exit code $rc"
  python -m tests.support.gate check "$1" "$2" --expect "$3" || failed=1
}
say "staging ← v3: healthy, the gate lets it through"
gated "$work/good" bascule.local/sample-app:v3 succeeded
say "staging ← v2 with errors from 30 s after start, after its switch: the gate rolls it back"
gated "$work/bad" bascule.local/sample-app:v2 rolled-back
bascule history staging --dir "$work/good" --limit 2 | sed 's/^/  /'
((failed == 0)) || { echo "demo: the gate's runs were not decided on measured values (above)" >&2; exit 1; }
