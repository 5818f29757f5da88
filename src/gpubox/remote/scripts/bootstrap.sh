#!/usr/bin/env bash
# gpubox bootstrap: turns this host into a D2L Jupyter workstation, idempotently.
#
# Copied to ~/.gpubox/bootstrap.sh and run by gpubox (gpubox/setup.py), the same way on
# a cloud box, any SSH host or this machine. Parameterised only by environment
# variables (the client computes the framework plan from gpubox/frameworks.py):
#   GPUBOX_FRAMEWORK            pytorch | tensorflow | jax | mxnet
#   GPUBOX_FRAMEWORK_TAG        the build chosen for the driver's CUDA (cu124, cuda12, cpu)
#   GPUBOX_FRAMEWORK_PACKAGES   space-separated requirements for that build
#   GPUBOX_INDEX_URL            the framework's own index, searched before the default
#   GPUBOX_DEFAULT_INDEX_URL    replaces PyPI (a mirror)
#   GPUBOX_FIND_LINKS           a folder or URL of wheels
#   GPUBOX_NOTEBOOKS_URL        the book's notebooks zip
#   GPUBOX_JUPYTER_PORT         a port pins Jupyter to it; "auto" (the default): the port
#                               it had here last time, else 8888, else a free one
#   GPUBOX_JUPYTER_TOKEN
#   GPUBOX_INSTALL_DRIVER       1 | 0
#   GPUBOX_IDLE_MINUTES         handed to the idle agent, with GPUBOX_MAX_HOURS,
#                               GPUBOX_PRE_STOP(_SECONDS), GPUBOX_IDLE_STOP_COMMAND, GPUBOX_BOX_NAME
#   GPUBOX_PYTHON_ENV           uv | conda
#   GPUBOX_SPOT                 1 on a spot box: run the interruption watcher
#   GPUBOX_NODE_RANK            a box of several machines: 1.. skip Jupyter (node 0 runs it)
# Each step prints `::gpubox step=NAME status=start|done|skip|fail seconds=N msg=...`
# on stdout; everything else a step prints goes to ~/.gpubox/logs/NAME.log.
set -euo pipefail

GPUBOX_DIR="$HOME/.gpubox"
LOG_DIR="$GPUBOX_DIR/logs"
STATE_DIR="$GPUBOX_DIR/state"
VENV="$GPUBOX_DIR/venv"  # gpubox/setup.py's BOX_ENV: `gpubox run` puts its bin/ first on PATH
NOTEBOOK_DIR="$HOME/d2l"
# The order of the steps; gpubox/setup.py's STEPS is the same tuple (a test compares them).
# The device check comes right after the framework: a build that misses the GPU fails
# before minutes go into anything else.
STEPS=(packages driver python framework device d2l notebooks jupyter agent)

FRAMEWORK="${GPUBOX_FRAMEWORK:-pytorch}"
FRAMEWORK_TAG="${GPUBOX_FRAMEWORK_TAG:-cpu}"
FRAMEWORK_PACKAGES="${GPUBOX_FRAMEWORK_PACKAGES:-torch}"
INDEX_URL="${GPUBOX_INDEX_URL:-}"
NOTEBOOKS_URL="${GPUBOX_NOTEBOOKS_URL:-}"
# Jupyter's port on this host. A number pins it (taken by another program: the step
# fails). "auto": the port this box's Jupyter had here last time (state/jupyter-port),
# else 8888; when another program holds it, the jupyter step picks a free one.
JUPYTER_PORT="${GPUBOX_JUPYTER_PORT:-auto}"
JUPYTER_PORT_PINNED=1
if [[ "$JUPYTER_PORT" == auto ]]; then
  JUPYTER_PORT_PINNED=0
  JUPYTER_PORT=$(cat "$STATE_DIR/jupyter-port" 2>/dev/null || true)
  [[ "$JUPYTER_PORT" =~ ^[0-9]+$ ]] || JUPYTER_PORT=8888
fi
JUPYTER_TOKEN="${GPUBOX_JUPYTER_TOKEN:-}"
INSTALL_DRIVER="${GPUBOX_INSTALL_DRIVER:-1}"
IDLE_MINUTES="${GPUBOX_IDLE_MINUTES:-60}"
PYTHON_ENV="${GPUBOX_PYTHON_ENV:-uv}"
# Never let uv fetch its own Python: the host's python3 is the one to use.
export UV_PYTHON_DOWNLOADS=never
# Trust what the host trusts: uv otherwise uses its own bundled roots, and fails on a
# network whose TLS is inspected by a CA that only the system store holds.
export UV_NATIVE_TLS=1

case "$FRAMEWORK" in
  pytorch) MODULE=torch ;;
  tensorflow) MODULE=tensorflow ;;
  jax) MODULE=jax ;;
  mxnet) MODULE=mxnet ;;
  *) echo "::gpubox step=packages status=fail seconds=0 msg=unknown framework '$FRAMEWORK'"; exit 2 ;;
esac

mkdir -p "$LOG_DIR" "$STATE_DIR"
# Markers go to the caller's stdout (fd 3); a step's own output goes to its log.
exec 3>&1

STEP=""
STEP_START=0
STEP_RESULT="done"
STEP_MSG=""
FAIL_MSG=""

now_ms() { date +%s%3N; }
elapsed() { local ms=$(($(now_ms) - STEP_START)); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

marker() {
  local msg="${4:-}"
  msg="${msg//$'\n'/ }"
  printf '::gpubox step=%s status=%s seconds=%s%s\n' "$1" "$2" "$3" "${msg:+ msg=$msg}" >&3
}

skip() { STEP_RESULT=skip; STEP_MSG="$1"; }
note() { STEP_MSG="$1"; }
progress() { echo "$1"; marker "$STEP" start "$(elapsed)" "$1"; }
fail() { FAIL_MSG="$1"; echo "error: $1"; exit 1; }

on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && -n "$STEP" ]]; then
    local msg="${FAIL_MSG:-exit status $rc; see $LOG_DIR/$STEP.log}"
    if grep -qs "No space left on device" "$LOG_DIR/$STEP.log"; then
      msg="the disk is full (No space left on device): free space or use a bigger disk; $msg"
    fi
    marker "$STEP" fail "$(elapsed)" "$msg"
  fi
}
trap on_exit EXIT

run_step() {
  STEP="$1" STEP_RESULT="done" STEP_MSG="" FAIL_MSG=""
  STEP_START=$(now_ms)
  marker "$1" start 0.000
  printf '=== %s step %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" >>"$LOG_DIR/$1.log"
  "step_$1" >>"$LOG_DIR/$1.log" 2>&1 </dev/null
  marker "$1" "$STEP_RESULT" "$(elapsed)" "$STEP_MSG"
  STEP=""
}

# What a step did is kept in ~/.gpubox/state/NAME; a step is done when that matches.
recorded() { [[ -f "$STATE_DIR/$1" && "$(cat "$STATE_DIR/$1")" == "$2" ]]; }
record() { printf '%s' "$2" >"$STATE_DIR/$1"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}
can_be_root() { [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; }

find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv
  elif [[ -x "$GPUBOX_DIR/tools/bin/uv" ]]; then echo "$GPUBOX_DIR/tools/bin/uv"
  else return 1; fi
}

has_module() { "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)" 2>/dev/null; }

nvidia_gpu_present() {
  [[ -e /dev/nvidia0 ]] || grep -qs 0x10de /sys/bus/pci/devices/*/vendor
}

# The CUDA version the driver supports, or nothing when there is no working driver.
driver_cuda() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1
}

# The host's own pip configuration (/etc/pip.conf, ~/.config/pip/pip.conf, PIP_CONFIG_FILE,
# PIP_* variables), as `key=value` lines: uv reads none of it, so it is translated.
host_pip_config() {
  python3 - <<'PY' 2>/dev/null || true
import configparser, os
home = os.path.expanduser("~")
xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
dirs = (os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
files = [os.path.join(d, "pip", "pip.conf") for d in dirs] + ["/etc/pip.conf",
         os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg, "pip", "pip.conf")]
if os.environ.get("PIP_CONFIG_FILE", "") != os.devnull:
    files.append(os.environ.get("PIP_CONFIG_FILE", ""))
found = {}
for path in files:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError):
        continue
    for section in ("global", "install"):
        if parser.has_section(section):
            found.update({k.replace("_", "-"): v for k, v in parser.items(section)})
for key in ("index-url", "extra-index-url", "find-links", "cert", "trusted-host", "proxy"):
    value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if value is not None:
        found[key] = value
multi = ("extra-index-url", "find-links", "trusted-host")
for key, value in found.items():
    for item in value.split() if key in multi else [value.strip()]:
        local = item[7:] if item.startswith("file://") else item if item.startswith("/") else ""
        if item and not (local and not os.path.exists(local)):  # pip ignores those, too
            print(f"{key}={item}")
PY
}

# HOST_PIP: uv's flags for the host's pip configuration; gpubox's own settings win.
# Its CA bundle and proxy become SSL_CERT_FILE and HTTPS_PROXY, unless those are set.
HOST_PIP=()
load_host_pip_config() {
  local key value
  while IFS='=' read -r key value; do
    case "$key" in
      index-url) if [[ -z "${GPUBOX_DEFAULT_INDEX_URL:-}" ]]; then HOST_PIP+=(--index-url "$value"); fi ;;
      extra-index-url) HOST_PIP+=(--extra-index-url "$value") ;;
      find-links) HOST_PIP+=(--find-links "$value") ;;
      trusted-host) HOST_PIP+=(--allow-insecure-host "$value") ;;
      cert) if [[ -z "${SSL_CERT_FILE:-}" ]]; then export SSL_CERT_FILE="$value"; fi ;;
      proxy) if [[ -z "${HTTPS_PROXY:-}${https_proxy:-}" ]]; then export HTTPS_PROXY="$value" HTTP_PROXY="$value"; fi ;;
    esac
  done < <(host_pip_config)
  if ((${#HOST_PIP[@]})); then echo "the host's pip configuration, for uv: ${HOST_PIP[*]}"; fi
  if [[ -n "${SSL_CERT_FILE:-}" ]]; then echo "CA bundle: $SSL_CERT_FILE"; fi
}

# pip_install ARGS...: into the venv, with uv when there is one (several times faster).
pip_install() {
  local args=()
  if [[ -n "${GPUBOX_FIND_LINKS:-}" ]]; then args+=(--find-links "$GPUBOX_FIND_LINKS"); fi
  # pip_index_url = none: an air-gapped host that installs only from GPUBOX_FIND_LINKS.
  if [[ "${GPUBOX_DEFAULT_INDEX_URL:-}" == none ]]; then args+=(--no-index)
  elif [[ -n "${GPUBOX_DEFAULT_INDEX_URL:-}" ]]; then args+=(--index-url "$GPUBOX_DEFAULT_INDEX_URL"); fi
  local uv_bin
  if [[ ! -f "$STATE_DIR/conda" ]] && uv_bin=$(find_uv); then
    if [[ -z "${HOST_PIP_LOADED:-}" ]]; then load_host_pip_config; HOST_PIP_LOADED=1; fi
    if [[ "${GPUBOX_DEFAULT_INDEX_URL:-}" != none ]]; then args+=("${HOST_PIP[@]}"); fi
    echo "+ uv pip install ${args[*]} $*"
    "$uv_bin" pip install --python "$VENV/bin/python" "${args[@]}" "$@"
  else
    echo "+ pip install ${args[*]} $*"
    "$VENV/bin/python" -m pip install --retries 1 --timeout 30 "${args[@]}" "$@"
  fi
}

step_packages() {
  local missing=()
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  if ! find_uv >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  if [[ ${#missing[@]} -eq 0 ]]; then skip "python3 and curl are present"; return 0; fi
  local how="sudo apt-get install -y ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1 || ! can_be_root; then
    if [[ " ${missing[*]} " == *" python3 "* ]]; then
      fail "python3 is missing and gpubox cannot install it (no root, no passwordless sudo, or no apt-get): run '$how' (or your system's equivalent) and run gpubox up again"
    fi
    note "missing ${missing[*]} and no passwordless sudo: going on without them (to add them: $how)"
    return 0
  fi
  # Offline or with a broken mirror, go on: later steps have fallbacks, or say what is missing.
  if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q -o Acquire::Retries=0 \
    -o Acquire::http::Timeout=20 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; then
    note "installed ${missing[*]}"
  elif [[ " ${missing[*]} " == *" python3 "* ]]; then
    fail "could not install python3 with apt-get (see the log): install it and run gpubox up again"
  else
    note "could not install ${missing[*]} with apt-get (offline?): going on without them"
  fi
}

step_driver() {
  local cuda
  cuda=$(driver_cuda)
  if [[ -n "$cuda" ]]; then
    local gpu
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
    skip "NVIDIA driver present (${gpu:-GPU}), supports CUDA $cuda"
    return 0
  fi
  if ! nvidia_gpu_present; then
    skip "no NVIDIA GPU on this host: going on with the CPU build of $FRAMEWORK"
    return 0
  fi
  if [[ "$INSTALL_DRIVER" == "0" ]]; then
    fail "an NVIDIA GPU is present but it has no driver, and install_driver is off: install one (Ubuntu: sudo ubuntu-drivers install --gpgpu) or turn install_driver on"
  fi
  if ! grep -qs '^ID=ubuntu' /etc/os-release || ! can_be_root; then
    fail "an NVIDIA GPU is present but it has no driver; gpubox installs one only on Ubuntu with root or passwordless sudo: install the NVIDIA driver yourself and run gpubox up again"
  fi
  progress "installing the NVIDIA driver: this takes about 5 minutes, and a reboot may be needed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ubuntu-drivers-common
  as_root ubuntu-drivers install --gpgpu || as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q nvidia-driver-550-server nvidia-utils-550-server
  as_root modprobe nvidia || true
  cuda=$(driver_cuda)
  if [[ -z "$cuda" ]]; then
    fail "the NVIDIA driver is installed but not loaded: reboot the host (sudo reboot) and run gpubox up again"
  fi
  note "installed the NVIDIA driver; it supports CUDA $cuda"
}

# True when the host's own python3 already has the framework with a working GPU
# (a Deep Learning AMI): the venv then sees it and nothing big is installed again.
system_framework_has_gpu() {
  [[ -n "$(driver_cuda)" ]] || return 1
  case "$FRAMEWORK" in
    pytorch) python3 -c "import torch; assert torch.cuda.is_available()" ;;
    tensorflow) python3 -c "import tensorflow as tf; assert tf.config.list_physical_devices('GPU')" ;;
    jax) python3 -c "import jax; assert jax.devices()[0].platform == 'gpu'" ;;
    mxnet) python3 -c "import mxnet; assert mxnet.context.num_gpus() > 0" ;;
  esac
}

step_python() {
  command -v python3 >/dev/null 2>&1 ||
    fail "python3 is not installed: install it (Ubuntu/Debian: sudo apt-get install -y python3 python3-venv) and run gpubox up again"
  local env_kind="$PYTHON_ENV" fallback=""
  if [[ "$env_kind" == conda ]] && ! command -v conda >/dev/null 2>&1; then
    env_kind=uv
    fallback="conda was asked for but is not installed: using uv instead; "
  fi
  local want
  want="env=$env_kind python=$(python3 -c 'import sys; print(sys.version.split()[0])')"
  if recorded python "$want" && "$VENV/bin/python" -c "" 2>/dev/null; then
    skip "${fallback}$(cat "$STATE_DIR/python_note" 2>/dev/null || echo "$VENV")"
    return 0
  fi
  rm -rf "$VENV" "$STATE_DIR/framework" "$STATE_DIR/d2l" "$STATE_DIR/device" "$STATE_DIR/conda"
  local site_flag=() reuse=""
  if system_framework_has_gpu; then
    site_flag=(--system-site-packages)
    reuse="reusing the host's $FRAMEWORK with GPU support; "
    echo "$FRAMEWORK" >"$STATE_DIR/reuse"
  else
    rm -f "$STATE_DIR/reuse"
  fi
  local made
  if [[ "$env_kind" == conda ]]; then
    conda create -y -q -p "$VENV" python pip
    touch "$STATE_DIR/conda"
    made="conda env at $VENV"
  else
    local uv_bin=""
    if ! uv_bin=$(find_uv); then
      # uv is several times faster than pip; it lives in its own small venv.
      if python3 -m venv "$GPUBOX_DIR/tools" &&
        "$GPUBOX_DIR/tools/bin/python" -m pip install -q --retries 1 --timeout 30 \
          ${GPUBOX_FIND_LINKS:+--find-links "$GPUBOX_FIND_LINKS"} uv; then
        uv_bin="$GPUBOX_DIR/tools/bin/uv"
      else
        uv_bin=""
        echo "could not install uv: using python3 -m venv and pip"
      fi
    fi
    # No --seed: uv installs into the venv itself, and seeding pip needs the network.
    if [[ -n "$uv_bin" ]] && "$uv_bin" venv -q --python "$(command -v python3)" "${site_flag[@]}" "$VENV"; then
      made="uv venv at $VENV"
    else
      # Without ensurepip (Debian's python3-venv) a venv can still be made without its
      # own pip; with the system's site-packages it then uses the system's pip.
      if python3 -m venv "${site_flag[@]}" "$VENV"; then
        made="venv at $VENV (pip)"
      elif rm -rf "$VENV" && [[ ${#site_flag[@]} -gt 0 ]] &&
        python3 -m venv --without-pip "${site_flag[@]}" "$VENV" && "$VENV/bin/python" -m pip --version; then
        made="venv at $VENV (the system's pip)"
      else
        fail "cannot make a Python environment: install python3-venv (sudo apt-get install -y python3-venv) or uv, and run gpubox up again"
      fi
    fi
  fi
  if [[ -n "$reuse" ]]; then
    # The host's python3 may itself be a venv (/opt/torch/.venv on a lent GPU machine):
    # --system-site-packages would then see only its base Python. A .pth file puts the
    # host interpreter's own site-packages after the venv's, whatever that python3 is.
    local venv_site
    venv_site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    python3 -c "import site; print('\n'.join(site.getsitepackages()))" >"$venv_site/gpubox-host-python.pth"
  fi
  record python_note "${reuse}${made}"
  record python "$want"
  note "${fallback}${reuse}${made}"
}

step_framework() {
  local want="framework=$FRAMEWORK tag=$FRAMEWORK_TAG packages=$FRAMEWORK_PACKAGES"
  if [[ -f "$STATE_DIR/reuse" ]] && has_module "$MODULE"; then
    skip "using the host's $FRAMEWORK (it sees the GPU); nothing to install"
    return 0
  fi
  if recorded framework "$want" && has_module "$MODULE"; then
    skip "$FRAMEWORK ($FRAMEWORK_TAG) is installed"
    return 0
  fi
  local packages
  read -r -a packages <<<"$FRAMEWORK_PACKAGES"
  # One quick look first: an index that does not answer costs uv several retries.
  if [[ -n "$INDEX_URL" ]] && ! curl -fsS --connect-timeout 5 --max-time 15 -o /dev/null "$INDEX_URL/"; then
    echo "the framework's index $INDEX_URL does not answer: using the default index"
    pip_install "${packages[@]}"
    note "$INDEX_URL does not answer; "
  elif [[ -n "$INDEX_URL" ]]; then
    if ! pip_install --extra-index-url "$INDEX_URL" "${packages[@]}"; then
      echo "the framework's index $INDEX_URL could not be used: trying the default index"
      pip_install "${packages[@]}"
      note "$INDEX_URL could not be used; "
    fi
  else
    pip_install "${packages[@]}"
  fi
  local version
  version=$("$VENV/bin/python" -c "import $MODULE; print($MODULE.__version__)")
  record framework "$want"
  note "${STEP_MSG}$FRAMEWORK $version ($FRAMEWORK_TAG)"
}

step_d2l() {
  local want="d2l framework=$FRAMEWORK"
  if recorded d2l "$want" && has_module d2l; then skip "d2l is installed"; return 0; fi
  # d2l 1.0.3 pins numpy 1.23.5, which has no wheel for Python >= 3.12: take d2l
  # without its pins and the current releases of what it uses.
  # Only what is missing: on a Deep Learning AMI (the reuse path) numpy and friends are
  # already there, and a second copy would shadow the ones the framework was built with.
  local need=() module
  for module in numpy matplotlib pandas scipy requests; do
    has_module "$module" || need+=("$module")
  done
  if ((${#need[@]})); then pip_install "${need[@]}"; fi
  pip_install --no-deps d2l
  "$VENV/bin/python" -c "import d2l"
  record d2l "$want"
  note "d2l $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("d2l"))')"
}

# Unpacks the framework's folder of the book's zip into ~/d2l, never overwriting a file.
unpack_notebooks() {
  python3 - "$1" "$NOTEBOOK_DIR" "$FRAMEWORK" <<'PY'
import os, sys, zipfile
archive, dest, framework = sys.argv[1:]
with zipfile.ZipFile(archive) as zf:
    names = [n for n in zf.namelist() if not n.endswith("/")]
    ours = [n for n in names if n.split("/")[0] == framework] or names
    added = kept = 0
    for name in ours:
        target = os.path.realpath(os.path.join(dest, name))
        if not target.startswith(os.path.realpath(dest) + os.sep):
            continue  # a path that climbs out of ~/d2l
        if os.path.exists(target):
            kept += 1
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(name) as src, open(target, "wb") as out:
            out.write(src.read())
        added += 1
print(f"{added} files added, {kept} already there and kept")
PY
}

download() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --connect-timeout 10 --max-time 300 -o "$2" "$1"
  else
    python3 -c "import sys, urllib.request; open(sys.argv[2], 'wb').write(urllib.request.urlopen(sys.argv[1], timeout=30).read())" "$1" "$2"
  fi
}

step_notebooks() {
  local want="url=$NOTEBOOKS_URL framework=$FRAMEWORK"
  if recorded notebooks "$want" && [[ -d "$NOTEBOOK_DIR" ]]; then
    skip "notebooks in $NOTEBOOK_DIR"
    return 0
  fi
  mkdir -p "$NOTEBOOK_DIR"
  local starter="$GPUBOX_DIR/getting-started.ipynb"
  if [[ -f "$starter" && ! -e "$NOTEBOOK_DIR/getting-started.ipynb" ]]; then
    cp "$starter" "$NOTEBOOK_DIR/getting-started.ipynb"
  fi
  local zip="$GPUBOX_DIR/notebooks.zip.part"
  if [[ -n "$NOTEBOOKS_URL" ]] && download "$NOTEBOOKS_URL" "$zip"; then
    local summary
    summary=$(unpack_notebooks "$zip")
    rm -f "$zip"
    note "the book's $FRAMEWORK notebooks in $NOTEBOOK_DIR ($summary)"
  else
    rm -f "$zip"
    note "could not download the book's notebooks from ${NOTEBOOKS_URL:-(no url)}: the getting-started notebook is in $NOTEBOOK_DIR instead"
  fi
  record notebooks "$want"
}

step_device() {
  local cuda want
  cuda=$(driver_cuda)
  want="$(cat "$STATE_DIR/framework" "$STATE_DIR/reuse" 2>/dev/null || true) cuda=${cuda:-none}"
  if recorded device "$want" && grep -qs '"ok": true' "$STATE_DIR/device.json"; then
    skip "$(cat "$STATE_DIR/device_note")"
    return 0
  fi
  rm -f "$STATE_DIR/device"
  local summary
  if ! summary=$(GPUBOX_EXPECT_GPU="${cuda:+1}" "$VENV/bin/python" - "$FRAMEWORK" "$STATE_DIR/device.json" <<'PY'
# The document's check, np.zeros((1024, 1024), ctx=npx.gpu()), in each framework.
import json, os, sys
framework, out = sys.argv[1:]
expect_gpu = os.environ.get("GPUBOX_EXPECT_GPU") == "1"
result = {"framework": framework, "expected_gpu": expect_gpu, "ok": False}
try:
    if framework == "pytorch":
        import torch
        result["version"] = torch.__version__
        on_gpu = torch.cuda.is_available()
        x = torch.zeros((1024, 1024), device="cuda" if on_gpu else "cpu") + 1
        result["device"] = x.device.type
        result["gpu_name"] = torch.cuda.get_device_name(0) if on_gpu else None
        result["built_for_cuda"] = torch.version.cuda
        total = float(x.sum())
    elif framework == "mxnet":
        import mxnet
        from mxnet import np, npx
        result["version"] = mxnet.__version__
        on_gpu = npx.num_gpus() > 0
        x = np.zeros((1024, 1024), ctx=npx.gpu() if on_gpu else npx.cpu()) + 1
        result["device"] = x.ctx.device_type
        total = float(x.sum())
    elif framework == "tensorflow":
        import tensorflow as tf
        result["version"] = tf.__version__
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        with tf.device("/GPU:0" if on_gpu else "/CPU:0"):
            x = tf.zeros((1024, 1024)) + 1
        result["device"] = "gpu" if "GPU" in x.device else "cpu"
        total = float(tf.reduce_sum(x))
    else:
        import jax, jax.numpy as jnp
        result["version"] = jax.__version__
        x = jnp.zeros((1024, 1024)) + 1
        result["device"] = next(iter(x.devices())).platform
        total = float(x.sum())
    result["sum"] = total
    on_device = result["device"] in ("cuda", "gpu")
    if total != 1024 * 1024:
        result["message"] = f"the check computed {total}, not {1024 * 1024}"
    elif expect_gpu and not on_device:
        result["message"] = (
            f"nvidia-smi shows a GPU but {framework} {result['version']} does not use it: "
            f"the tensor is on the {result['device']}"
        )
    else:
        result["ok"] = True
        where = result.get("gpu_name") or result["device"]
        result["message"] = (
            f"a 1024x1024 tensor on the GPU ({where}) with {framework} {result['version']}"
            if on_device else
            f"no GPU: a 1024x1024 tensor on the CPU with {framework} {result['version']}"
        )
except Exception as exc:  # the import or the allocation itself failed
    result["message"] = f"{framework} failed the device check: {type(exc).__name__}: {exc}"
with open(out, "w") as f:
    json.dump(result, f, indent=1)
print(result["message"])
sys.exit(0 if result["ok"] else 1)
PY
  ); then
    fail "device check failed: $summary"
  fi
  echo "$summary"
  record device_note "$summary"
  record device "$want"
  note "$summary"
}

jupyter_answers() {
  curl -fsS --max-time 3 -H "Authorization: token $JUPYTER_TOKEN" \
    "http://127.0.0.1:$JUPYTER_PORT/api/status" >/dev/null 2>&1
}

port_in_use() {
  python3 -c "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))) != 0)" "$1"
}

# A port on 127.0.0.1 that nothing listens on now (the kernel's choice).
free_port() {
  python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

# The port the client tunnels to: a line of its own on the marker stream.
say_jupyter_port() {
  record jupyter-port "$JUPYTER_PORT"
  printf '::gpubox jupyter_port=%s\n' "$JUPYTER_PORT" >&3
}

stop_our_jupyter() {
  if [[ -f "$STATE_DIR/jupyter-mode" && "$(cat "$STATE_DIR/jupyter-mode")" == systemd ]]; then
    systemctl --user stop gpubox-jupyter.service 2>/dev/null || true
  fi
  if [[ -f "$STATE_DIR/jupyter.pid" ]]; then
    local pid
    pid=$(cat "$STATE_DIR/jupyter.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$STATE_DIR/jupyter.pid"
  fi
}

step_jupyter() {
  if [[ "${GPUBOX_NODE_RANK:-0}" != 0 ]]; then
    echo "node $GPUBOX_NODE_RANK of a box of several: Jupyter runs on node 0, where the tunnel goes"
    skip "node $GPUBOX_NODE_RANK of a box of several: Jupyter runs on node 0, where the tunnel goes"
    return 0
  fi
  [[ -n "$JUPYTER_TOKEN" ]] || fail "no Jupyter token was given (GPUBOX_JUPYTER_TOKEN)"
  # The idle warning as a banner in JupyterLab (agent/jupyter_notice.py), into the venv;
  # a server that is already running loads it at its next start.
  if [[ -x "$VENV/bin/python" && -f "$GPUBOX_DIR/agent/jupyter_notice.py" ]]; then
    "$VENV/bin/python" "$GPUBOX_DIR/agent/jupyter_notice.py" install || echo "the JupyterLab idle banner could not be installed"
  fi
  if jupyter_answers; then  # with this box's token: ours, not another program's
    say_jupyter_port
    skip "Jupyter is running on 127.0.0.1:$JUPYTER_PORT ($(cat "$STATE_DIR/jupyter-mode" 2>/dev/null))"
    return 0
  fi
  local pinned_taken="port $JUPYTER_PORT on the host is taken by another program, and the setting jupyter_port pins Jupyter to it: stop that program, choose another port (gpubox config set jupyter_port 8899), or let gpubox pick a free one (gpubox config unset jupyter_port)"
  # A pinned port another program holds: fail before this box's Jupyter on its own
  # port is stopped, so a failed `up` leaves the running one as it was.
  if [[ $JUPYTER_PORT_PINNED == 1 && "$JUPYTER_PORT" != "$(cat "$STATE_DIR/jupyter-port" 2>/dev/null)" ]] &&
    port_in_use "$JUPYTER_PORT"; then
    fail "$pinned_taken"
  fi
  stop_our_jupyter
  local moved=""
  if port_in_use "$JUPYTER_PORT"; then
    if [[ $JUPYTER_PORT_PINNED == 1 ]]; then fail "$pinned_taken"; fi
    moved="port $JUPYTER_PORT on the host is taken by another program, so "
    JUPYTER_PORT=$(free_port)
    echo "${moved}Jupyter gets port $JUPYTER_PORT"
  fi
  if ! has_module jupyterlab; then pip_install jupyterlab; fi
  # The token goes in a file only the user can read, not on a command line that
  # every user of the host can see in `ps`.
  local config="$GPUBOX_DIR/jupyter_config.json"
  (umask 077; printf '{"IdentityProvider": {"token": "%s"}}\n' "$JUPYTER_TOKEN" >"$config")
  local args=(-m jupyterlab --no-browser "--config=$config" --ServerApp.ip=127.0.0.1
    "--ServerApp.port=$JUPYTER_PORT" --ServerApp.port_retries=0 "--ServerApp.root_dir=$NOTEBOOK_DIR")
  if [[ $(id -u) -eq 0 ]]; then args+=(--allow-root); fi
  local mode server_log="$LOG_DIR/jupyter-server.log"
  if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
    # A user unit survives the SSH session; with lingering it also starts after a reboot.
    mode=systemd
    local unit_dir="$HOME/.config/systemd/user"
    mkdir -p "$unit_dir"
    {
      echo "[Unit]"; echo "Description=gpubox Jupyter"
      echo "[Service]"; echo "ExecStart=$VENV/bin/python ${args[*]}"
      echo "WorkingDirectory=$NOTEBOOK_DIR"; echo "Restart=on-failure"
      echo "[Install]"; echo "WantedBy=default.target"
    } >"$unit_dir/gpubox-jupyter.service"
    loginctl enable-linger "$(id -un)" 2>/dev/null || as_root loginctl enable-linger "$(id -un)" || true
    systemctl --user daemon-reload
    systemctl --user enable gpubox-jupyter.service
    systemctl --user restart gpubox-jupyter.service
  else
    # No systemd for this user: a detached process that outlives the SSH session
    # (not a reboot). fd 3 is closed so the server does not hold the marker stream open.
    mode="nohup"
    cd "$NOTEBOOK_DIR"
    setsid nohup "$VENV/bin/python" "${args[@]}" >>"$server_log" 2>&1 </dev/null 3>&- &
    echo $! >"$STATE_DIR/jupyter.pid"
    cd - >/dev/null
  fi
  echo "$mode" >"$STATE_DIR/jupyter-mode"
  for _ in $(seq 300); do
    if jupyter_answers; then
      say_jupyter_port
      note "${moved}Jupyter on 127.0.0.1:$JUPYTER_PORT, root $NOTEBOOK_DIR, kept running by $mode"
      return 0
    fi
    if [[ $mode == nohup ]] && ! kill -0 "$(cat "$STATE_DIR/jupyter.pid")" 2>/dev/null; then
      tail -n 20 "$server_log"
      fail "Jupyter exited at start; its log is $server_log"
    fi
    sleep 0.2
  done
  tail -n 20 "$server_log" 2>/dev/null || true
  fail "Jupyter did not answer on 127.0.0.1:$JUPYTER_PORT within 60 seconds; its log is $server_log"
}

# A spot box's watcher for the two-minute interruption notice (agent/spot_watch.py).
start_spot_watch() {
  local watch="$GPUBOX_DIR/agent/spot_watch.py" pidfile="$STATE_DIR/spot-watch.pid"
  [[ -f "$watch" ]] || return 0
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  setsid nohup python3 "$watch" >>"$LOG_DIR/spot-watch.log" 2>&1 </dev/null 3>&- &
  echo $! >"$pidfile"
}

step_agent() {
  if [[ "${GPUBOX_SPOT:-0}" == 1 ]]; then start_spot_watch; fi
  local agent="$GPUBOX_DIR/agent/idle.py"
  if [[ ! -f "$agent" ]]; then skip "no idle agent shipped with this gpubox"; return 0; fi
  local want
  # The guard from boot (AWS user data) may have installed the agent already: this
  # updates its settings in place, and adds what only setup knows (Jupyter).
  local -a guard=(--max-hours "${GPUBOX_MAX_HOURS:-off}" --box-name "${GPUBOX_BOX_NAME:-}"
    --pre-stop "${GPUBOX_PRE_STOP:-}" --pre-stop-seconds "${GPUBOX_PRE_STOP_SECONDS:-300}")
  if [[ -n "${GPUBOX_IDLE_STOP_COMMAND:-}" ]]; then guard+=(--stop-command "$GPUBOX_IDLE_STOP_COMMAND"); fi
  want="idle=$IDLE_MINUTES jupyter=$JUPYTER_PORT ${guard[*]} $(cksum <"$agent")"
  if recorded agent "$want"; then skip "$(cat "$STATE_DIR/agent_note" 2>/dev/null)"; return 0; fi
  # The agent reads the token from a file only the user can read, to see notebook use.
  (umask 077; printf '%s\n' "$JUPYTER_TOKEN" >"$GPUBOX_DIR/jupyter-token")
  local answer
  answer="$(python3 "$agent" install --idle-minutes "$IDLE_MINUTES" "${guard[@]}" \
    --jupyter-url "http://127.0.0.1:$JUPYTER_PORT" --jupyter-token-file "$GPUBOX_DIR/jupyter-token")"
  # Its own words, which say so when it cannot stop this machine (no root, no sudo).
  record agent_note "$(printf '%s' "$answer" | tail -n 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["message"])')"
  record agent "$want"
  note "$(cat "$STATE_DIR/agent_note")"
}

# `bootstrap.sh stop`: what `gpubox down` runs on a host it only forgets (ssh, local):
# the services gpubox started there end; the venv, notebooks and logs stay.
step_stop() {
  stop_our_jupyter
  if [[ -f "$STATE_DIR/jupyter-mode" && "$(cat "$STATE_DIR/jupyter-mode")" == systemd ]]; then
    systemctl --user disable gpubox-jupyter.service 2>/dev/null || true
  fi
  if [[ -f "$GPUBOX_DIR/agent/idle.py" ]]; then
    python3 "$GPUBOX_DIR/agent/idle.py" install --idle-minutes off --max-hours off || true
  fi
  if [[ -f "$STATE_DIR/spot-watch.pid" ]]; then
    kill "$(cat "$STATE_DIR/spot-watch.pid")" 2>/dev/null || true
    rm -f "$STATE_DIR/spot-watch.pid"
  fi
  rm -f "$STATE_DIR/agent"
  note "Jupyter and the idle agent stopped; notebooks and the environment are kept"
}

if [[ "${1:-}" == stop ]]; then
  run_step stop
  exit 0
fi
# `bootstrap.sh step NAME...`: only these steps, in this order (re-run one by hand).
if [[ "${1:-}" == step ]]; then
  shift
  for step in "$@"; do run_step "$step"; done
  exit 0
fi

for step in "${STEPS[@]}"; do
  run_step "$step"
done
