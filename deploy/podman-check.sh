#!/usr/bin/env bash
# Build the Dockerfile's images with podman and check the slim one end to end, on loopback only.
#
#   sudo deploy/podman-check.sh            # base image (debootstrap if needed), slim build, run, probes
#   sudo deploy/podman-check.sh --full     # also the default (full) target, and the same probes against it
#
# What it checks on the slim image: it builds; `import torch` fails inside it; started with its own CMD and
# config/openai.yaml (both tiers moved to a fake upstream in a second container, read-only root, all
# capabilities dropped) /readyz answers 200 within READY_WITHIN_S, one routed chat request answers 200 with a
# routing decision, the router runs on ONNX Runtime, the image's HEALTHCHECK passes, and SIGTERM stops it
# cleanly. It prints the image sizes (`podman images`) and the build times. See docs/CONTAINER.md.
#
# Environment (all optional):
#   BASE_IMAGE       the image for the Dockerfile's PYTHON_IMAGE build arg. Default: a local stand-in for
#                    python:3.11-slim-bookworm (Debian bookworm's python3.11 + venv via debootstrap), built
#                    once, for machines that reach package mirrors but no container registry.
#   DEBIAN_MIRROR    debootstrap's mirror (http://deb.debian.org/debian).
#   PIP_CA_BUNDLE    a CA bundle mounted into the build's RUN steps with a pip.conf naming it, for networks
#                    that intercept TLS (default: /etc/ssl/certs/ca-certificates.crt when present; "" = none).
#   TORCH_WHEELS     a directory holding the CPU torch wheel the lock pins; with --full, the build reads torch
#                    from a one-package index over it instead of download.pytorch.org.
#   TIERGATE_BUILTINS  passed to the full build (all | none | names); default all.
#   WORK             scratch directory (/tmp/tiergate-podman-check); BENCH_LOCK: the flock file CPU-heavy
#                    steps run under (/tmp/tiergate-bench.lock); READY_WITHIN_S (90).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/tiergate-podman-check}
BENCH_LOCK=${BENCH_LOCK:-/tmp/tiergate-bench.lock}
READY_WITHIN_S=${READY_WITHIN_S:-90}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STAND_IN=localhost/tiergate-base:py311-bookworm
BASE_IMAGE=${BASE_IMAGE:-$STAND_IN}
SLIM=localhost/tiergate:slim
FULL=localhost/tiergate:full
FULL_TOO=0
[[ ${1:-} == --full ]] && FULL_TOO=1

say() { printf '== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
locked() { if command -v flock >/dev/null; then flock "$BENCH_LOCK" "$@"; else "$@"; fi; }

for tool in podman curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install -y podman buildah runc debootstrap curl)"
done
mkdir -p "$WORK"

# podman's defaults ask runc for rlimits above what unprivileged VMs allow ("error setting rlimit type 7/6:
# operation not permitted"): cap nofile and nproc, and name runc (crun is not installed on Debian by default).
cat > "$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"

# ------------------------------------------------------------------------------------------- base image
if [[ $BASE_IMAGE == "$STAND_IN" ]] && ! podman image exists "$STAND_IN"; then
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install -y debootstrap)"
  [[ $(id -u) == 0 ]] || die "building the stand-in base image needs root (debootstrap)"
  say "base image: debootstrap bookworm + python3.11 into $WORK/rootfs"
  rm -rf "$WORK/rootfs"
  # python3-distutils: python3.11-venv depends on it and debootstrap's resolver does not pick it by itself.
  locked timeout 900 debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-distutils,python-is-python3 \
    bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $WORK/debootstrap.log"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"* \
    "$WORK/rootfs/usr/share/doc/"* "$WORK/rootfs/usr/share/man/"* "$WORK/rootfs/debootstrap"
  tar --numeric-owner -C "$WORK/rootfs" -c . \
    | podman import -q --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$STAND_IN" >/dev/null
  rm -rf "$WORK/rootfs"
fi
podman image exists "$BASE_IMAGE" || die "base image $BASE_IMAGE is not in local storage (podman pull it)"

# ---------------------------------------------------------------------------------------------- builds
build_args=(--format docker --build-arg "PYTHON_IMAGE=$BASE_IMAGE")  # docker format keeps HEALTHCHECK
PIP_CA_BUNDLE=${PIP_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
if [[ -n $PIP_CA_BUNDLE && -f $PIP_CA_BUNDLE ]]; then
  # Build-time mounts only: nothing of this lands in an image layer.
  printf '[global]\ncert = /etc/tiergate-build-ca.crt\n' > "$WORK/pip.conf"
  build_args+=(-v "$PIP_CA_BUNDLE:/etc/tiergate-build-ca.crt:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
fi

build() {  # build TAG LOG [args...]: one podman build under the bench lock, timed from taking the lock
  local tag=$1 log=$2
  shift 2
  # shellcheck disable=SC2016  # $0 and $@ are the inner shell's
  locked sh -c 'date +%s > "$0"; exec "$@"' "$WORK/build-start" \
    timeout 2400 podman build "${build_args[@]}" "$@" -t "$tag" "$REPO" > "$log" 2>&1 \
    || { tail -30 "$log" >&2; die "podman build of $tag failed: see $log"; }
  say "$tag built in $(( $(date +%s) - $(cat "$WORK/build-start") )) s (log: $log)"
}

say "building the slim target"
build "$SLIM" "$WORK/slim-build.log" --target slim

if (( FULL_TOO )); then
  full_args=(--build-arg "TIERGATE_BUILTINS=${TIERGATE_BUILTINS:-all}")
  if [[ -n ${TORCH_WHEELS:-} ]]; then
    wheel=$(find "$TORCH_WHEELS" -maxdepth 1 -name 'torch-*+cpu-cp311-*.whl' | sort | tail -1)
    [[ -n $wheel ]] || die "no CPU torch cp311 wheel in $TORCH_WHEELS"
    name=$(basename "$wheel")
    mkdir -p "$WORK/torch-index/torch"
    printf '<a href="file:///opt/torch-wheels/%s#sha256=%s">%s</a>\n' "${name//+/%2B}" \
      "$(sha256sum "$wheel" | cut -d' ' -f1)" "$name" > "$WORK/torch-index/torch/index.html"
    full_args+=(--build-arg TORCH_INDEX_URL=file:///opt/torch-index
                -v "$WORK/torch-index:/opt/torch-index:ro" -v "$TORCH_WHEELS:/opt/torch-wheels:ro")
  fi
  say "building the full (default) target"
  build "$FULL" "$WORK/full-build.log" "${full_args[@]}"
fi

# ------------------------------------------------------------------------------------------------ runs
UP=tiergate-check-upstream
GW=tiergate-check-gateway
cleanup() { podman rm -f -t 0 "$GW" >/dev/null 2>&1 || true; podman rm -f -t 0 "$UP" >/dev/null 2>&1 || true; }
trap cleanup EXIT

probe() {  # probe IMAGE: fake upstream + the image's own CMD on config/openai.yaml, on a loopback port
  local image=$1 port code i answer headers logs
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cleanup
  # The fake upstream listens on 127.0.0.1:9000 inside its network namespace; the gateway joins that
  # namespace, and only the gateway's port 8000 is published, on the host's loopback.
  # Without systemd, podman logs an error for each healthcheck timer it cannot create (harmless: the check
  # below runs the HEALTHCHECK itself with `podman healthcheck run`); those go to $WORK/podman.log.
  timeout 60 podman run -d --name "$UP" -p "127.0.0.1:$port:8000" "$image" \
    tiergate fake-upstream --host 127.0.0.1 --port 9000 >/dev/null 2>>"$WORK/podman.log"
  timeout 60 podman run -d --name "$GW" --network "container:$UP" \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    -e TIERGATE_CONFIG=/app/config/openai.yaml -e OPENAI_API_KEY=sk-fake-for-the-check \
    -e TIERGATE_TIERS__SMALL__BASE_URL=http://127.0.0.1:9000/v1 \
    -e TIERGATE_TIERS__LARGE__BASE_URL=http://127.0.0.1:9000/v1 \
    "$image" >/dev/null 2>>"$WORK/podman.log"
  code=000
  for (( i = 0; i < READY_WITHIN_S * 2; i++ )); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/readyz" || true)
    [[ $code == 200 ]] && break
    sleep 0.5
  done
  [[ $code == 200 ]] || { podman logs "$GW" >&2; die "$image: /readyz answered $code after ${READY_WITHIN_S} s"; }
  say "$image: /readyz 200 after about $(( i / 2 )) s"
  headers="$WORK/headers.txt"
  answer=$(curl -s --max-time 30 -D "$headers" "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d '{"model": "tiergate-auto", "messages": [{"role": "user", "content": "Prove that there are infinitely many primes."}]}')
  grep -q '^HTTP/1.1 200' "$headers" || die "$image: chat request failed: $(head -1 "$headers") $answer"
  if ! grep -qi '^x-tiergate-tier: ' "$headers" || ! grep -qi '^x-tiergate-reason: score_' "$headers"; then
    die "$image: the answer carries no classifier decision: $(cat "$headers")"
  fi
  grep -q '"content":"Hello from the fake upstream."' <<< "$answer" || die "$image: unexpected body: $answer"
  say "$image: routed chat request 200 ($(grep -i -E '^x-tiergate-(tier|score|reason):' "$headers" | tr -d '\r' | tr '\n' ' '))"
  # Read the whole log first: `podman logs | grep -q` fails under pipefail when grep stops reading early.
  logs=$(timeout 30 podman logs "$GW" 2>&1)
  grep -q 'router builtin: onnx runtime' <<< "$logs" || die "$image: the router did not start on ONNX Runtime: $logs"
  timeout 30 podman healthcheck run "$GW" >/dev/null || die "$image: HEALTHCHECK failed"
  say "$image: router on ONNX Runtime, HEALTHCHECK passes"
  timeout 60 podman stop -t 40 "$GW" >/dev/null 2>>"$WORK/podman.log"
  code=$(podman inspect "$GW" --format '{{.State.ExitCode}}')
  [[ $code == 0 || $code == 143 ]] || die "$image: exit code $code after SIGTERM"
  say "$image: stopped on SIGTERM (exit $code)"
  cleanup
}

if out=$(timeout 60 podman run --rm --network none "$SLIM" python -c 'import torch' 2>&1); then
  die "torch imports inside the slim image"
fi
grep -q "No module named 'torch'" <<< "$out" || die "unexpected output of 'import torch': $out"
say "$SLIM: import torch fails (No module named 'torch')"
probe "$SLIM"
if (( FULL_TOO )); then
  version=$(timeout 120 podman run --rm --network none "$FULL" python -c 'import torch; print(torch.__version__)' \
    2>>"$WORK/podman.log")
  say "$FULL: torch $version"
  probe "$FULL"
fi

say "image sizes"
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^localhost/tiergate'
say "all checks passed"
