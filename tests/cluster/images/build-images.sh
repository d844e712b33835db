#!/usr/bin/env bash
# Builds the local cluster's images as OCI archives for `ctr -n k8s.io images import`, with no
# registry and no image builder: the pause image (a static Go binary) and the sample app's v1, v2
# and v3 (a debootstrap'd Debian rootfs with python3, psycopg2 and Alembic, plus the app). The rootfs layer is
# the slow part; it is cached outside the repository, keyed by what goes into it.
#
#   build-images.sh OUTDIR     prints the archive paths, one a line, when done
#   build-images.sh --rootfs   builds (or finds) the rootfs layer alone, prints its path
#
# Environment: BASCULE_CACHE (default ~/.cache/bascule); BASCULE_DEBIAN_MIRROR overrides the
# Debian mirror, otherwise the one this machine's apt uses is taken.
set -euo pipefail

# Bump when the rootfs recipe below changes, so cached rootfs layers are rebuilt.
ROOTFS_RECIPE=2
SUITE=bookworm
# Alembic and SQLAlchemy: the app's migrations run from its own image (Bascule's Job runner).
PACKAGES=python3,python3-psycopg2,python3-alembic,python3-sqlalchemy
PAUSE_IMAGE=bascule.local/pause:3.10
APP_REPO=bascule.local/sample-app
APP_TAGS=(v1 v2 v3)

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR|--rootfs" >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
if [[ "$1" != --rootfs ]]; then
  mkdir -p "$1"
  outdir="$(cd "$1" && pwd)"
fi
cache="${BASCULE_CACHE:-$HOME/.cache/bascule}/images"
mkdir -p "$cache"
log() { echo "images: $*" >&2; }
start=$SECONDS

# Two builds at once (a developer and CI) would debootstrap into the same directory.
exec 9>"$cache/.lock"
flock 9

# The first Debian archive (not the security one) that this machine's apt is set up with.
debian_mirror() {
  if [[ -n "${BASCULE_DEBIAN_MIRROR:-}" ]]; then
    echo "$BASCULE_DEBIAN_MIRROR"
    return
  fi
  local f uri
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    uri="$(awk 'BEGIN { RS = ""; FS = "\n" }
      {
        uri = ""; types = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
          if ($i ~ /^Types:/) types = $i
          if ($i ~ /^Suites:/) suites = $i
        }
        if (uri != "" && types ~ /[ \t]deb([ \t]|$)/ && suites !~ /-security/ && uri !~ /security/) {
          print uri; exit
        }
      }' "$f")"
    if [[ -n "$uri" ]]; then echo "$uri"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    uri="$(awk '$1 == "deb" && $0 !~ /security/ {
        for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit }
      }' "$f")"
    if [[ -n "$uri" ]]; then echo "$uri"; return; fi
  done
  echo "images: no Debian mirror found in /etc/apt; set BASCULE_DEBIAN_MIRROR" >&2
  return 1
}

# Lazily unmounts whatever debootstrap left mounted below a directory (it mounts proc and sys).
unmount_below() {
  local dir="$1" mnt
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd -P)"
  # No match is the usual case: awk, not grep, so that is not a failure under pipefail.
  awk -v dir="$dir" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do
      umount -l "$mnt" || true
    done
}

arch="$(dpkg --print-architecture 2>/dev/null || go env GOARCH)"
key="$(printf '%s\n' "$ROOTFS_RECIPE" "$SUITE" "$arch" "$PACKAGES" | sha256sum | cut -c1-16)"
base="$cache/base-$SUITE-$arch-$key"

build_base() {
  local tmp="$base.tmp" rootfs mirror
  rootfs="$tmp/rootfs"
  unmount_below "$tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'unmount_below "'"$tmp"'"' EXIT
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get install -y debootstrap >&2 || { apt-get update >&2 && apt-get install -y debootstrap >&2; }
  fi
  mirror="$(debian_mirror)"
  log "debootstrap $SUITE ($PACKAGES) from $mirror; log in $tmp/debootstrap.log"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$tmp/debootstrap.log" 2>&1; then
    tail -n 30 "$tmp/debootstrap.log" >&2
    [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    log "debootstrap failed"
    return 1
  fi
  unmount_below "$rootfs"

  log "trimming the rootfs"
  # Nothing in a container reads these; they are a third of a minbase rootfs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/debootstrap
  find "$rootfs/var/log" -type f -delete
  # The kubelet mounts its own; the builder's would only leak into the image.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"

  # Layer mtimes are pinned to 0, which would make every timestamp-checked .pyc stale, and the
  # app runs as nobody and cannot rewrite them: compile the stdlib with unchecked hashes instead.
  log "compiling python bytecode"
  find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -name __pycache__ -type d -prune \
    -exec rm -rf {} +
  chroot "$rootfs" /usr/bin/python3 -m compileall -q -f --invalidation-mode unchecked-hash \
    /usr/lib/python3.11 /usr/lib/python3/dist-packages >/dev/null
  chroot "$rootfs" /usr/bin/python3 -c 'import psycopg2, http.server; print("python", __import__("sys").version.split()[0], "psycopg2", psycopg2.__version__)' >&2

  log "writing the rootfs layer"
  python3 "$here/oci.py" layer "$rootfs" "$tmp/rootfs.tar.gz" \
    --empty-dir dev --empty-dir proc --empty-dir sys >/dev/null
  trap - EXIT
  rm -rf "$base"
  mv "$tmp" "$base"
  touch "$base/.complete"
}

if [[ -f "$base/.complete" ]]; then
  log "rootfs layer cached: $base"
else
  build_base
fi
if [[ "$1" == --rootfs ]]; then
  echo "$base/rootfs.tar.gz"
  exit 0
fi

work="$(mktemp -d "$cache/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "building pause"
mkdir -p "$work/pause-root"
(cd "$here/../pause" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -buildvcs=false \
  -ldflags='-s -w' -o "$work/pause-root/pause" .)
python3 "$here/oci.py" layer "$work/pause-root" "$work/pause.tar.gz" >/dev/null

log "writing the app layer"
mkdir -p "$work/app-root/app"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - sampleapp | tar -C "$work/app-root/app" -xf -
# The repository's modes depend on the checkout's umask; the image's must not.
find "$work/app-root" -type d -exec chmod 0755 {} +
find "$work/app-root" -type f -exec chmod 0644 {} +
python3 "$here/oci.py" layer "$work/app-root" "$work/app.tar.gz" >/dev/null

cat >"$work/pause.json" <<EOF
{"images": [{"name": "$PAUSE_IMAGE", "layers": ["pause.tar.gz"],
  "config": {"Entrypoint": ["/pause"], "User": "65535:65535"}}]}
EOF
app_image() {
  local tag="$1"
  cat <<EOF
{"name": "$APP_REPO:$tag", "layers": ["$base/rootfs.tar.gz", "app.tar.gz"],
 "config": {
  "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          "PYTHONPATH=/app", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
          "APP_VERSION=$tag"],
  "Cmd": ["python3", "-m", "sampleapp.app"],
  "WorkingDir": "/app",
  "User": "65534:65534",
  "ExposedPorts": {"8080/tcp": {}},
  "StopSignal": "SIGTERM",
  "Labels": {"org.opencontainers.image.version": "$tag"}}}
EOF
}
{
  echo '{"images": ['
  sep=""
  for tag in "${APP_TAGS[@]}"; do
    printf '%s' "$sep"
    app_image "$tag"
    sep=","
  done
  echo ']}'
} >"$work/sample-app.json"

pause_out="$outdir/pause-3.10.oci.tar"
app_out="$outdir/sample-app.oci.tar"
log "writing $pause_out"
python3 "$here/oci.py" archive "$work/pause.json" "$pause_out"
log "writing $app_out"
python3 "$here/oci.py" archive "$work/sample-app.json" "$app_out"
python3 "$here/oci.py" verify "$pause_out"
python3 "$here/oci.py" verify "$app_out"
log "done in $((SECONDS - start)) s"
echo "$pause_out"
echo "$app_out"
