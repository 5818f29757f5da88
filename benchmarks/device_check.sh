#!/usr/bin/env bash
# The bootstrap on a real GPU machine, once: run from the repo root, as root.
#
# Made for a lent H100/H200 box with PyTorch importable by /usr/bin/python3 and no
# internet: the real bootstrap runs with the local runner in a temporary HOME, takes
# the reuse path (the host's torch already sees the GPU, nothing is downloaded), the
# notebooks URL is unreachable on purpose (falls back to the shipped notebook), and it
# prints the device check, nvidia-smi and the step timings. Under 4 minutes; stdout only.
# Optional: WHEELS=DIR, a folder of wheels (d2l, jupyterlab ...) for the offline steps.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d /tmp/gpubox-device-XXXXXX)
export HOME_FOR_HOST="$WORK/home"
mkdir -p "$HOME_FOR_HOST" "$WORK/gpubox-home"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)

echo "=== machine"
uname -srm
"$PY" -c 'import sys; print("python", sys.version.split()[0], sys.executable)'
nproc
echo "=== nvidia-smi"
nvidia-smi || echo "(no nvidia-smi)"
echo "=== host torch"
timeout 60 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -n 3
echo "=== what gpubox's own imports find here"
for mod in tomllib typer rich platformdirs boto3; do
  if "$PY" -c "import $mod" 2>/dev/null; then echo "$mod: yes"; else echo "$mod: MISSING"; fi
done
echo "uv: $(command -v uv || echo MISSING)"
"$PY" -c 'import ensurepip' 2>/dev/null && echo "ensurepip: yes" || echo "ensurepip: MISSING"

cleanup() {
  # The Jupyter the bootstrap may have started in the temporary HOME: by its PID.
  local pidfile="$HOME_FOR_HOST/.gpubox/state/jupyter.pid"
  if [[ -f $pidfile ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
}
trap cleanup EXIT

run_once() {
  timeout 150 env HOME="$HOME_FOR_HOST" GPUBOX_HOME="$WORK/gpubox-home" \
    GPUBOX_NOTEBOOKS_URL="http://127.0.0.1:9/d2l-en.zip" \
    GPUBOX_TORCH_INDEX_URL="http://127.0.0.1:9/whl" \
    GPUBOX_IDLE_STOP_MINUTES=0 GPUBOX_JUPYTER_PORT=18890 \
    ${WHEELS:+GPUBOX_PIP_FIND_LINKS="$WHEELS"} \
    "$PY" - <<'PY'
import json, sys, time
from gpubox import config, setup
from gpubox.errors import GpuboxError
from gpubox.remote.runner import LocalRunner

settings = config.load()
events = []
start = time.monotonic()
def show(e):
    events.append(e)
    if e.status != "start":
        print(f"  {e.step:<10} {e.status:<5} {e.seconds:>8.3f}s  {e.msg}", flush=True)
try:
    result = setup.run_setup(LocalRunner(), settings, box_name="gpu", on_event=show)
    print(f"setup finished in {time.monotonic() - start:.2f}s")
except GpuboxError as err:
    print(f"setup stopped after {time.monotonic() - start:.2f}s: {err.message}")
    if err.hint:
        print(f"hint: {err.hint}")
PY
}

if "$PY" -c 'import tomllib' 2>/dev/null; then
  echo "=== bootstrap, first run (fresh HOME $HOME_FOR_HOST)"
  run_once
  echo "=== bootstrap, second run (already set up)"
  run_once
else
  # Python < 3.11 cannot import gpubox.config (tomllib): run the script itself with the
  # environment setup.py would give it for a host that reuses its torch.
  echo "=== python < 3.11: running bootstrap.sh directly"
  mkdir -p "$HOME_FOR_HOST/.gpubox"
  cp src/gpubox/data/getting-started.ipynb "$HOME_FOR_HOST/.gpubox/"
  for pass in first second; do
    echo "=== bootstrap, $pass run"
    timeout 150 env HOME="$HOME_FOR_HOST" GPUBOX_FRAMEWORK=pytorch GPUBOX_FRAMEWORK_TAG=cu128 \
      GPUBOX_FRAMEWORK_PACKAGES="torch torchvision" GPUBOX_NOTEBOOKS_URL="http://127.0.0.1:9/x.zip" \
      GPUBOX_JUPYTER_PORT=18890 GPUBOX_JUPYTER_TOKEN="device-check-$RANDOM$RANDOM" \
      GPUBOX_IDLE_MINUTES=off ${WHEELS:+GPUBOX_FIND_LINKS="$WHEELS"} \
      bash src/gpubox/remote/scripts/bootstrap.sh
    echo "exit status $?"
  done
fi

echo "=== device check result ($HOME_FOR_HOST/.gpubox/state/device.json)"
cat "$HOME_FOR_HOST/.gpubox/state/device.json" 2>/dev/null || echo "(none: the device step did not run)"
echo
for step in python framework device; do
  echo "=== last lines of $step.log"
  tail -n 8 "$HOME_FOR_HOST/.gpubox/logs/$step.log" 2>/dev/null
done
