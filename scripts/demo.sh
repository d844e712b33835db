#!/usr/bin/env bash
# make demo: a blue-green deployment of the sample app, v1 then v2, through dev, staging
# and production, each run by that environment's own worker (bascule worker), and one attack
# refused. The workers clone the app's repository, made from examples/sample-app alone
# (configuration: an environment file and a Kustomize overlay per environment, the
# migrations), and run their own installed Bascule. On the embedded default: the local
# cluster and its PostgreSQL, which also holds the local Prefect server's database
# (prefect_demo). The approval of production is answered by the demo itself unless
# APPROVE=manual, in which case it waits for you in the Prefect UI.
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
# The app's Kustomize overlays render with this kubectl: the workers' runs and the commands here.
export BASCULE_KUBECTL="$bin/kubectl"

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

# The app's repository, as the workers clone it: configuration only, examples/sample-app's files
# (an environment file per environment, each on its Kustomize overlay; the sample app's
# migrations), none of Bascule's code: each worker runs its own installed Bascule. v1's tree is
# committed on main, then v2's on top of it: v1's migrations are revision 0001 only, v2's add
# the expand revision 0002, which the pipeline runs before v2's color starts. Both get this
# demo's signing keys and monitoring endpoints. The repository is kept across demos, each
# adding its v1 and v2 on top: production and staging run only commits that descend from the
# one they serve. A new one starts new environments.
repo="$cache/demo/sample-app"
bare="$cache/demo/sample-app.git"
# Earlier demos' trees, and their repository, which carried Bascule's code.
rm -rf "$cache/demo/v1" "$cache/demo/v2" "$cache/demo/repo" "$cache/demo/bascule.git"
if [[ ! -d "$bare" ]]; then
  for env in dev staging production; do
    kubectl delete namespace "bascule-$env" --ignore-not-found --wait=true >/dev/null
  done
  rm -rf "$repo"
  git init -q --bare "$bare"
  git -C "$bare" symbolic-ref HEAD refs/heads/main
  git init -q "$repo"
  git -C "$repo" symbolic-ref HEAD refs/heads/main
fi
git -C "$repo" checkout -q main 2>/dev/null || true
tree() {  # tree [REVISION LEFT OUT...]: lays the app's configuration into $repo
  local t="$repo"
  find "$t" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
  cp -rL examples/sample-app/. "$t/"  # the example's links to the migrations, as files
  find "$t" -name __pycache__ -prune -exec rm -rf {} +
  for rev in "$@"; do rm -f "$t/sampleapp/migrations/versions/${rev}_"*; done
  echo "demo@bascule.local namespaces=\"bascule-approval\" $(cat "$approver_key.pub")" \
    >>"$t/deployments/allowed_signers"
  echo "staging namespaces=\"bascule-evidence\" $(cat "$evidence_key.pub")" \
    >>"$t/deployments/evidence_signers"
  for env in dev staging production; do
    printf 'monitoring:\n  pushgateway: %s\n  alertmanager: %s\n' "$pushgateway" "$alertmanager" \
      >>"$t/deployments/$env.yaml"
  done
}
# Commits by a developer, whom production's four eyes tells apart from the demo's approver
# (demo@bascule.local); prints the commit.
commit() {
  git -C "$repo" add -A
  git -C "$repo" -c user.name="Demo Developer" -c user.email=developer@bascule.local \
    -c commit.gpgsign=false commit -q --allow-empty -m "$1"
  git -C "$repo" rev-parse HEAD
}
tree 0002
v1_sha="$(commit "demo: v1")"
echo "  v1 ($v1_sha): revisions $(cd "$repo/sampleapp/migrations/versions" && ls *.py | tr '\n' ' ')"
tree
v2_sha="$(commit "demo: v2")"
echo "  v2 ($v2_sha): revisions $(cd "$repo/sampleapp/migrations/versions" && ls *.py | tr '\n' ' ')"
git -C "$repo" push -q "$bare" HEAD:refs/heads/main
# The files as main has them: what the commands run here read (rbac, status, history, stats).
dir="$repo/deployments"
echo "  repository: $bare (main at v2), holding $(git -C "$repo" ls-tree --name-only HEAD | tr '\n' ' ')"

say "each environment's account: its Roles from its config (bascule rbac), a kubeconfig with only its token"
for env in dev staging production; do
  ns="bascule-$env"
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  # App namespaces admit only pods that Pod Security `restricted` allows (README: Permissions).
  kubectl label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
done
for env in dev staging production; do
  bascule rbac --dir "$dir" "$env" | kubectl apply -f - >/dev/null
  bascule kubeconfig --dir "$dir" "$env" --out "$cache/demo/$env.kubeconfig" --hours 2 | sed 's/^/  /'
done

say "three workers, one per environment, each with only its environment's credentials"
# Each polls its own pool (bascule-<env>), clones the repository for each run and checks the run
# against its own settings before any of the run's code runs (README: One worker per
# environment). Staging's holds the evidence key it signs verified releases with, runs only
# merged commits (--protected: a signing environment), and migrates in a Job, from a pod: the
# database by the name pods use. On a real setup each runs on its own machine or OS user.
mkdir -p "$cache/demo/workers"
for env in dev staging production; do
  pidfile="$cache/demo/workers/$env.pid"
  # A previous demo's worker (this script started it) makes way for this one.
  if [[ -f "$pidfile" ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  own=(KUBECONFIG="$cache/demo/$env.kubeconfig" PREFECT_WORKER_QUERY_SECONDS=2)
  flags=(--repository "$bare" --namespace "bascule-$env")
  if [[ "$env" == staging ]]; then
    own+=(BASCULE_EVIDENCE_KEY="$evidence_key" SAMPLE_APP_DATABASE_URL="$DEMO_APP_DATABASE_URL")
    flags+=(--protected)
  fi
  env "${own[@]}" setsid bascule worker "$env" "${flags[@]}" --name "demo-$env" \
    >"$cache/demo/workers/$env.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "  $env: pid $(cat "$pidfile"), pool bascule-$env, log $cache/demo/workers/$env.log"
done
for env in dev staging production; do
  for _ in $(seq 60); do curl -fsS "$PREFECT_API_URL/work_pools/bascule-$env" >/dev/null 2>&1 && break; sleep 0.5; done
done
# prefect.yaml's deployments (and the recover automations); the Kubernetes Jobs' pools first,
# which `prefect deploy` needs for their deployments.
python - <<'PY' | while read -r pool; do prefect work-pool create "$pool" --type kubernetes >/dev/null 2>&1 || true; done
import yaml
spec = yaml.safe_load(open("prefect.yaml"))
print("\n".join(sorted({d["work_pool"]["name"] for d in spec["deployments"] if d["work_pool"]["name"].endswith("kubernetes")})))
PY
prefect --no-prompt deploy --all >"$cache/demo/workers/deploy.log" 2>&1 \
  || { tail -20 "$cache/demo/workers/deploy.log" >&2; exit 1; }
echo "  prefect.yaml registered: $(prefect deployment ls 2>/dev/null | grep -c '│ [a-z]*/' || true) deployments"

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

# Every deploy goes through its environment's worker, as the workflows start them:
# `bascule trigger ENV --image --commit` (production: `bascule promote staging production
# --trigger`, the digest staging verified and signed, with its commit).
show() { grep --line-buffered -vE " STATE +(Scheduled|Pending|Submitting|Running)$|submitting flow run|View at" | sed -u 's/^/  /'; }
for version in v1 v2; do
  image="bascule.local/sample-app:$version"
  sha="$v2_sha"
  [[ "$version" == v1 ]] && sha="$v1_sha"
  for env in dev staging production; do
    say "$env ← $image (commit ${sha:0:12}, through the $env worker)"
    if [[ "$env" == production && "${APPROVE:-auto}" != manual ]]; then
      approver &
      helper=$!
    elif [[ "$env" == production ]]; then
      echo "  waiting for your approval: http://127.0.0.1:$port/runs (or: bascule pending; bascule approve RUN --key $approver_key)"
    fi
    run=(trigger "$env" --app sample-app --image "$image" --commit "$sha" --timeout 900)
    [[ "$env" == production ]] && run=(promote --dir "$dir" staging production --app sample-app --trigger)
    set +e
    bascule "${run[@]}" 2>&1 | show
    rc="${PIPESTATUS[0]}"
    set -e
    [[ -n "${helper:-}" ]] && { kill "$helper" 2>/dev/null || true; wait "$helper" 2>/dev/null || true; unset helper; }
    bascule status --dir "$dir" "$env" | sed 's/^/  /'
    ((rc == 0)) || { echo "demo: the $env deploy ended with exit code $rc" >&2; exit "$rc"; }
  done
done

say "an attack the dev worker refuses: a pushed branch whose dev.yaml aims at production's namespace"
git -C "$repo" checkout -q -B attack
sed -i 's/^namespace: bascule-dev$/namespace: bascule-production/' "$repo/deployments/dev.yaml"
attack_sha="$(commit "dev, pointed at production")"
git -C "$repo" push -q -f "$bare" HEAD:refs/heads/attack
git -C "$repo" checkout -q main
set +e
bascule trigger dev --app sample-app --image bascule.local/sample-app:v2 --commit "$attack_sha" 2>&1 \
  | grep -E "STATE +Refused|flow run ended" | sed 's/^/  /'
rc="${PIPESTATUS[0]}"
set -e
((rc == 2)) || { echo "demo: the dev worker did not refuse the attack (exit $rc)" >&2; exit 1; }

say "production's pods read their database by name (postgres.db.svc.cluster.local): GET /api/items"
kubectl get --raw "/api/v1/namespaces/bascule-production/services/sample-app:http/proxy/api/items" \
  | sed 's/^/  /'
echo

say "staging: taken back by hand (bascule rollback), which raises an alert"
KUBECONFIG="$cache/demo/staging.kubeconfig" bascule rollback staging --app sample-app --dir "$dir" 2>&1 | grep --line-buffered -E "metrics: |alerts: |^[A-Za-z]+: " \
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
  bascule stats "$env" --app sample-app --dir "$dir" | sed 's/^/  /'
done
scripts/demo-gate.sh

say "dev ← a second app, sample-api (deployments/apps/sample-api/dev.yaml), beside sample-app"
# From the repository's checkout, as the workflow runs it: the trigger checks the app there.
(cd "$repo" && bascule trigger dev --app sample-api --image bascule.local/sample-app:v2 \
  --commit "$v2_sha") 2>&1 | grep --line-buffered -E "^bascule: " | sed 's/^/  /'

say "status: every app of every environment"
bascule status --dir "$dir" | sed 's/^/  /'
say "history"
for env in dev staging production; do
  echo "$env:"; bascule history --dir "$dir" "$env" --app sample-app --limit 4 | sed 's/^/  /'
done
echo "dev, sample-api:"; bascule history --dir "$dir" dev --app sample-api --limit 4 | sed "s/^/  /"
say "where to look"
echo "  Prefect UI:    http://127.0.0.1:$port  (runs, reports under Artifacts, events; the refused attack's run)"
echo "  workers:       $cache/demo/workers/{dev,staging,production}.log; more runs: bascule trigger ENV --image REF --commit SHA"
echo "  kubectl:       KUBECONFIG=$KUBECONFIG $bin/kubectl get deploy,svc -A"
echo "  status:        PREFECT_API_URL=$PREFECT_API_URL bascule status --dir $dir"
echo "  from pods:      PREFECT_API_URL=$pod_api (flows as Kubernetes Jobs: make flow-image, README)"
echo "  metrics:       $pushgateway/metrics   alerts: $alertmanager/#/alerts"
echo "  stop:          kill \$(cat $cache/demo/workers/*.pid) \$(cat $cache/prefect/server.pid) \$(cat $relay); make cluster-down"
echo "                 kill \$(cat $mon/pushgateway.pid) \$(cat $mon/alertmanager.pid); rm -r $mon"
