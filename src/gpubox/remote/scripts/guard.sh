#!/usr/bin/env bash
# gpubox guard: the idle agent, installed at a box's first boot from its EC2 user data.
#
# cloud-init runs the user data once per instance, as root, before anyone can log in.
# gpubox/guard.py builds that user data, gzipped (cloud-init unzips it): a few settings
# (below), this script, then each agent file as `put NAME <<'END' ... END`, then
# `finish`. It puts the agent in the login user's
# ~/.gpubox/agent and schedules its check as a systemd timer that runs as that user.
# So a box that is never set up (--no-setup, a failed setup, a laptop gone mid-`up`)
# still stops after its limit. The bootstrap's `agent` step later only updates these
# settings (the same agent, the same timer). Nothing here is a secret: user data can be
# read by any process on the box.
#   GPUBOX_GUARD_USER          the login user, whose home gets ~/.gpubox (default ubuntu)
#   GPUBOX_IDLE_MINUTES        idle limit in minutes, or off
#   GPUBOX_MAX_HOURS           stop after this many hours of uptime whatever the box does, or off
#   GPUBOX_IDLE_STOP_COMMAND   what "stop" runs (empty: power off)
#   GPUBOX_PRE_STOP            run before any stop to save work (empty: nothing)
#   GPUBOX_PRE_STOP_SECONDS    its time limit
#   GPUBOX_BOX_NAME            the box's name, for the warnings
#   GPUBOX_GUARD_ROOT          tests only: a scratch folder that stands for /
set -euo pipefail

ROOT="${GPUBOX_GUARD_ROOT:-}"
BOX_USER="${GPUBOX_GUARD_USER:-ubuntu}"

home="$(getent passwd "$BOX_USER" | cut -d: -f6 || true)"
[[ -n "$home" ]] || home="/home/$BOX_USER"
dir="$ROOT$home/.gpubox"
mkdir -p "$dir/agent" "$dir/logs" "$dir/state"

# One file of the agent, from stdin.
put() { cat >"$dir/agent/$1"; }

give_to_user() {
  if id -u "$BOX_USER" >/dev/null 2>&1; then chown -R "$BOX_USER:" "$dir"; fi
}

# Schedule the agent's check (a systemd timer, as BOX_USER) with the box's settings.
finish() {
  give_to_user
  local args=(install --idle-minutes "${GPUBOX_IDLE_MINUTES:-60}" --max-hours "${GPUBOX_MAX_HOURS:-off}"
    --mode systemd --run-as "$BOX_USER" --box-name "${GPUBOX_BOX_NAME:-}"
    --pre-stop "${GPUBOX_PRE_STOP:-}" --pre-stop-seconds "${GPUBOX_PRE_STOP_SECONDS:-300}")
  if [[ -n "${GPUBOX_IDLE_STOP_COMMAND:-}" ]]; then args+=(--stop-command "$GPUBOX_IDLE_STOP_COMMAND"); fi
  mkdir -p "$ROOT/etc/systemd/system"
  GPUBOX_AGENT_HOME="$dir" GPUBOX_SYSTEMD_DIR="$ROOT/etc/systemd/system" \
    python3 "$dir/agent/idle.py" "${args[@]}" | tee -a "$dir/logs/guard.log"
  give_to_user
  # Seen from outside on the instance's console (EC2 GetConsoleOutput): `gpubox selftest`
  # waits for this line. cloud-init sends the user data's output there too.
  local marker
  marker="::gpubox guard=installed box=${GPUBOX_BOX_NAME:-} idle=${GPUBOX_IDLE_MINUTES:-60} at=$(date +%s)"
  echo "$marker"
  if [[ -z "$ROOT" && -w /dev/console ]]; then echo "$marker" >/dev/console 2>/dev/null || true; fi
}
