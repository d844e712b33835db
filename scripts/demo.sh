#!/usr/bin/env bash
# make demo: a blue-green deployment of the sample app, v1 then v2, through dev, staging
# and production, on the embedded default: the local cluster and its PostgreSQL, which also
# holds the local Prefect server's database (prefect_demo). The approval of production is
# answered by the demo itself unless APPROVE=manual, in which case it waits for you in the
# Prefect UI.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${BASCULE_CACHE:-$HOME/.cache/bascule}"
port="${BASCULE_PREFECT_PORT:-4200}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "local Kubernetes (first run builds it from upstream modules: ~10 min; later: seconds)"
kubeconfig_line="$(tests/cluster/up.sh | tail -n1)"
export KUBECONFIG="${kubeconfig_line#KUBECONFIG=}"
bin="$(tests/cluster/build.sh)"
kubectl() { "$bin/kubectl" "$@"; }

say "PostgreSQL in the cluster: a fresh database for the sample app (the deploys migrate it); Prefect's"
pgpass="$(cat /var/lib/bascule/clusters/bascule/postgres.password)"
pg="postgres:$pgpass@127.0.0.1:${BASCULE_PG_PORT:-15432}"
# The flow, on this machine, reads the URL from its environment (deployments/*.yaml:
# migrations.database_url); the app's pods reach the same database by the name the cluster's
# DNS gives PostgreSQL, through each release's Secret (the demo's files: secrets.DATABASE_URL).
export SAMPLE_APP_DATABASE_URL="postgresql://$pg/sampleapp_demo"
export DEMO_APP_DATABASE_URL="postgresql://postgres:$pgpass@postgres.db.svc.cluster.local:5432/sampleapp_demo"
unset pgpass
PG_ADMIN_URL="postgresql://$pg/postgres" python - <<'PY'
import os, psycopg2
conn = psycopg2.connect(os.environ["PG_ADMIN_URL"])
conn.autocommit = True
conn.cursor().execute("DROP DATABASE IF EXISTS sampleapp_demo WITH (FORCE)")
conn.cursor().execute("CREATE DATABASE sampleapp_demo")
cur = conn.cursor()
cur.execute("SELECT 1 FROM pg_database WHERE datname = 'prefect_demo'")
if cur.fetchone() is None:  # kept across demos, as the runs in its UI are
    cur.execute("CREATE DATABASE prefect_demo")
PY

say "Prefect server on 127.0.0.1:$port (its database: prefect_demo on the cluster's PostgreSQL)"
export PREFECT_API_URL="http://127.0.0.1:$port/api"
if ! curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then
  mkdir -p "$cache/prefect"
  # The URL (with the password) goes to the server's environment only, never to a log.
  PREFECT_HOME="$cache/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://$pg/prefect_demo" \
    setsid python -m prefect server start --host 127.0.0.1 --port "$port" \
    >"$cache/prefect/server.log" 2>&1 </dev/null &
  echo $! >"$cache/prefect/server.pid"
  for _ in $(seq 120); do curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1 && break; sleep 1; done
fi
curl -fsS "$PREFECT_API_URL/health" >/dev/null
unset pg
# Pods reach it too, by name (flows as Kubernetes Jobs: README); one relay across demos.
mkdir -p "$cache/prefect"
relay="$cache/prefect/host-service.pid"
if ! { [[ -f "$relay" ]] && kill -0 "$(cat "$relay")" 2>/dev/null; }; then
  tests/cluster/host-service.sh prefect-demo "$port" "$relay" >/dev/null
fi
pod_api="http://prefect-demo.bascule-system/api"
say "Slack and Discord: local webhook receivers print each message the deploys send"
rm -f "$cache/webhooks.env"
python -m tests.support.webhooks "$cache/webhooks.env" &
receivers=$!
trap 'kill "$receivers" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [[ -s "$cache/webhooks.env" ]] && break; sleep 0.2; done
# shellcheck disable=SC1091  # written just above
source "$cache/webhooks.env"
echo "  receivers on 127.0.0.1 (URLs in the flow's environment: DEMO_SLACK_WEBHOOK_URL, DEMO_DISCORD_WEBHOOK_URL)"

say "Pushgateway and Alertmanager on loopback: every run's metrics and alerts go there"
mon="$(mktemp -d "${TMPDIR:-/tmp}/bascule-demo-monitoring.XXXXXX")"
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pushgateway="http://127.0.0.1:$(free_port)"
alertmanager="http://127.0.0.1:$(free_port)"
setsid prometheus-pushgateway --web.listen-address="${pushgateway#http://}" \
  --persistence.file="$mon/pushgateway.data" >"$mon/pushgateway.log" 2>&1 </dev/null &
echo $! >"$mon/pushgateway.pid"
printf 'route:\n  receiver: keep\nreceivers:\n  - name: keep\n' >"$mon/alertmanager.yml"
setsid prometheus-alertmanager --config.file="$mon/alertmanager.yml" --storage.path="$mon/alertmanager" \
  --web.listen-address="${alertmanager#http://}" --cluster.listen-address= \
  >"$mon/alertmanager.log" 2>&1 </dev/null &
echo $! >"$mon/alertmanager.pid"
for url in "$pushgateway" "$alertmanager"; do
  for _ in $(seq 60); do curl -fsS "$url/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -fsS "$url/-/ready" >/dev/null
done
echo "  Pushgateway $pushgateway, Alertmanager $alertmanager (data and pids in $mon)"

# Production takes only approvals signed by a key in its allowed_signers: the demo's approver
# key is made once, and each tree's copy of that file lists it (the repository's lists nobody).
approver_key="$cache/demo/approver_ed25519"
if [[ ! -f "$approver_key" ]]; then
  mkdir -p "$cache/demo"
  ssh-keygen -q -t ed25519 -N '' -C "bascule demo approver" -f "$approver_key"
fi
# Production takes a digest only with staging's worker's signature of the release that verified
# it: the demo's staging runs hold this key (BASCULE_EVIDENCE_KEY), and each tree's
# evidence_signers lists its public half for staging (the repository's lists nobody).
evidence_key="$cache/demo/staging_evidence_ed25519"
if [[ ! -f "$evidence_key" ]]; then
  mkdir -p "$cache/demo"
  ssh-keygen -q -t ed25519 -N '' -C "bascule demo staging worker" -f "$evidence_key"
fi

# Each version deploys from its own commit's files: v1's carries revision 0001 only, v2's adds
# the expand revision 0002, which the pipeline runs before v2's color starts. Both get this
# demo's webhook receivers and monitoring endpoints.
tree() {  # tree NAME [REVISION LEFT OUT...]: prints the tree's deployments directory
  local t="$cache/demo/$1"
  shift
  rm -rf "$t" && mkdir -p "$t/sampleapp"
  cp -r deployments "$t/"
  cp sampleapp/alembic.ini "$t/sampleapp/"
  cp -r sampleapp/migrations "$t/sampleapp/"
  find "$t/sampleapp" -name __pycache__ -prune -exec rm -rf {} +
  for rev in "$@"; do rm -f "$t/sampleapp/migrations/versions/${rev}_"*; done
  echo "demo@bascule.local namespaces=\"bascule-approval\" $(cat "$approver_key.pub")" \
    >>"$t/deployments/allowed_signers"
  echo "staging namespaces=\"bascule-evidence\" $(cat "$evidence_key.pub")" \
    >>"$t/deployments/evidence_signers"
  for env in dev staging production; do
    cat >>"$t/deployments/$env.yaml" <<YAML
secrets:
  DATABASE_URL: {env: DEMO_APP_DATABASE_URL}
notifications:
  receivers:
    - {name: demo-slack, kind: slack, webhook_url: {env: DEMO_SLACK_WEBHOOK_URL}}
    - {name: demo-discord, kind: discord, webhook_url: {env: DEMO_DISCORD_WEBHOOK_URL}}
monitoring:
  pushgateway: $pushgateway
  alertmanager: $alertmanager
YAML
  done
  # A second app in dev beside the sample app: its own Deployments, Services, history and
  # lock in the same namespace, with dev's settings but one replica and no database.
  mkdir -p "$t/deployments/apps/sample-api"
  printf 'replicas: 1\nmigrations: null\n' >"$t/deployments/apps/sample-api/dev.yaml"
  # Production's four eyes reads who wrote the deployed commit from this checkout: the tree is
  # a commit by a developer, which the demo's approver (demo@bascule.local) did not write.
  git -C "$t" init -q
  git -C "$t" add -A
  git -C "$t" -c user.name="Demo Developer" -c user.email=developer@bascule.local \
    -c commit.gpgsign=false commit -q -m "demo $(basename "$t")"
  echo "$t/deployments"
}
v1_dir="$(tree v1 0002)"
v2_dir="$(tree v2)"
echo "  v1's revisions: $(cd "$v1_dir/../sampleapp/migrations/versions" && ls *.py | tr '\n' ' ')"
echo "  v2's revisions: $(cd "$v2_dir/../sampleapp/migrations/versions" && ls *.py | tr '\n' ' ')"

say "each environment's account: its Roles from its config (bascule rbac), a kubeconfig with only its token"
for env in dev staging production; do
  ns="bascule-$env"
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  # App namespaces admit only pods that Pod Security `restricted` allows (README: Permissions).
  kubectl label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
done
for env in dev staging production; do
  bascule rbac --dir "$v2_dir" "$env" | kubectl apply -f - >/dev/null
  bascule kubeconfig --dir "$v2_dir" "$env" --out "$cache/demo/$env.kubeconfig" --hours 2 | sed 's/^/  /'
done

# Answers production's approval gate as soon as it is asked, signed with the demo's key.
approver() {
  while sleep 1; do
    local line id
    line="$(bascule pending --flow deploy 2>/dev/null | awk '/env=production/ {print; exit}')"
    id="${line%% *}"
    if [[ -n "$id" ]]; then
      echo "  approval asked (bascule pending): preview at ${line##*preview=}"
      bascule approve "$id" --key "$approver_key" --comment "approved by make demo" && return
    fi
  done
}

for version in v1 v2; do
  image="bascule.local/sample-app:$version"
  dir="$v2_dir"
  [[ "$version" == v1 ]] && dir="$v1_dir"
  for env in dev staging production; do
    say "$env ← $image"
    if [[ "$env" == production && "${APPROVE:-auto}" != manual ]]; then
      approver &
      helper=$!
    elif [[ "$env" == production ]]; then
      echo "  waiting for your approval: http://127.0.0.1:$port/runs (or: bascule pending; bascule approve RUN --key $approver_key)"
    fi
    # Production takes only what staging verified (promote_from): its digest, not the tag.
    # The commit goes with the release to staging's history, and from there to production.
    run=(deploy --dir "$dir" "$env" --app sample-app --image "$image" --commit "$(git -C "$dir" rev-parse HEAD)")
    [[ "$env" == production ]] && run=(promote --dir "$dir" staging production --app sample-app)
    # Staging's runs hold its evidence key and migrate in a Job (runner: job), from a pod: the
    # database by the name pods use. The other environments' runs have no such key.
    worker=()
    [[ "$env" == staging ]] && worker=(BASCULE_EVIDENCE_KEY="$evidence_key" SAMPLE_APP_DATABASE_URL="$DEMO_APP_DATABASE_URL")
    set +e
    # The run holds its environment's credential only (production's reads staging's history
    # through the Role `bascule rbac production` gives it there).
    KUBECONFIG="$cache/demo/$env.kubeconfig" env "${worker[@]}" bascule "${run[@]}" 2>&1 \
      | grep --line-buffered -E "\| Flow run '|^[A-Za-z]+: " | grep --line-buffered -v "View at" \
      | sed -u -E "s/^[0-9:.]+ \| [A-Z]+ +\| Flow run '[^']*' - //; s/^/  /"
    rc="${PIPESTATUS[0]}"
    set -e
    [[ -n "${helper:-}" ]] && { kill "$helper" 2>/dev/null || true; wait "$helper" 2>/dev/null || true; unset helper; }
    bascule status --dir "$dir" "$env" | sed 's/^/  /'
    ((rc == 0)) || { echo "demo: the $env deploy ended with exit code $rc" >&2; exit "$rc"; }
  done
done

say "production's pods read their database by name (postgres.db.svc.cluster.local): GET /api/items"
kubectl get --raw "/api/v1/namespaces/bascule-production/services/sample-app:http/proxy/api/items" \
  | sed 's/^/  /'
echo

say "staging: taken back by hand (bascule rollback), which raises an alert"
KUBECONFIG="$cache/demo/staging.kubeconfig" bascule rollback staging --app sample-app --dir "$v2_dir" 2>&1 | grep --line-buffered -E "metrics: |alerts: |^[A-Za-z]+: " \
  | sed -u -E "s/^[0-9:.]+ \| [A-Z]+ +\| (Flow|Task) run '[^']*' - //; s/^/  /"

say "the Pushgateway's deployment metrics (group job=bascule, app, environment=staging)"
curl -fsS "$pushgateway/metrics" | grep -E '^bascule_' | grep 'environment="staging"' | sed 's/^/  /'
say "the alerts Alertmanager holds"
curl -fsS "$alertmanager/api/v2/alerts" | python -c '
import json, sys
for a in json.load(sys.stdin):
    l, n = a["labels"], a["annotations"]
    print("  %s [%s] %s/%s release %s: %s" % (
        l["alertname"], l["severity"], l["app"], l["environment"], l["release"], n["summary"]))
    print("    run: %s" % n.get("run_url", "-"))
'
say "DORA figures (bascule stats)"
for env in dev staging production; do
  bascule stats "$env" --app sample-app --dir "$v2_dir" | sed 's/^/  /'
done
scripts/demo-gate.sh

say "dev ← a second app, sample-api (deployments/apps/sample-api/dev.yaml), beside sample-app"
bascule deploy --dir "$v2_dir" dev --app sample-api --image bascule.local/sample-app:v2 2>&1 \
  | grep --line-buffered -E "^[A-Za-z]+: " | sed 's/^/  /'

say "status: every app of every environment"
bascule status --dir "$dir" | sed 's/^/  /'
say "history"
for env in dev staging production; do
  echo "$env:"; bascule history --dir "$dir" "$env" --app sample-app --limit 4 | sed 's/^/  /'
done
echo "dev, sample-api:"; bascule history --dir "$dir" dev --app sample-api --limit 4 | sed "s/^/  /"
say "where to look"
echo "  Prefect UI:    http://127.0.0.1:$port  (runs, reports under Artifacts, events)"
echo "  kubectl:       KUBECONFIG=$KUBECONFIG $bin/kubectl get deploy,svc -A"
echo "  status:        PREFECT_API_URL=$PREFECT_API_URL bascule status --dir $dir"
echo "  from pods:      PREFECT_API_URL=$pod_api (flows as Kubernetes Jobs: make flow-image, README)"
echo "  metrics:       $pushgateway/metrics   alerts: $alertmanager/#/alerts"
echo "  stop:          kill \$(cat $cache/prefect/server.pid) \$(cat $relay); make cluster-down"
echo "                 kill \$(cat $mon/pushgateway.pid) \$(cat $mon/alertmanager.pid); rm -r $mon"
