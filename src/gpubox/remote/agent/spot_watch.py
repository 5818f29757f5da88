#!/usr/bin/env python3
"""Runs on a spot box: watch for the two-minute interruption notice and record it.

Stdlib only (it runs on whatever Python the box has). Every few seconds it asks
the instance metadata service (IMDSv2: a session token first, then
/latest/meta-data/spot/instance-action). That path answers 404 until AWS decides
to take the instance back; then it answers {"action": "stop", "time": "..."}.
The notice is written to ~/.gpubox/state/spot-interruption.json (what
`gpubox status` reads), the disks are synced, and an optional command runs.

    python3 spot_watch.py [--interval 5] [--once] [--on-notice CMD]

GPUBOX_IMDS_URL changes the metadata address (default http://169.254.169.254),
for a metadata proxy or a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_IMDS = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600
RECORD = Path.home() / ".gpubox" / "state" / "spot-interruption.json"


class Metadata:
    """An IMDSv2 session: one token, renewed when it expires or is refused."""

    def __init__(self, base: str, timeout: float = 2.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None
        self._token_until = 0.0

    def _new_token(self) -> str:
        request = urllib.request.Request(
            self.base + "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            token = answer.read().decode()
        # Renew a minute early, so a token never expires between two polls.
        self._token_until = time.monotonic() + TOKEN_TTL_SECONDS - 60
        return token

    def get(self, path: str) -> str | None:
        """The text at `path`, or None when it is not there (404)."""
        for _ in range(2):
            if self._token is None or time.monotonic() >= self._token_until:
                self._token = self._new_token()
            request = urllib.request.Request(
                self.base + path, headers={"X-aws-ec2-metadata-token": self._token}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return answer.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401:  # token expired or revoked: get a new one, once
                    self._token = None
                    continue
                raise
        return None


def check_once(metadata: Metadata, record: Path) -> dict | None:
    """The notice if there is one now (and record it), else None."""
    text = metadata.get("/latest/meta-data/spot/instance-action")
    if text is None:
        return None
    try:
        notice = json.loads(text)
    except ValueError:
        notice = {"action": "unknown", "raw": text}
    # timezone.utc, not datetime.UTC: boxes may run a Python older than 3.11.
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    notice["noticed_at"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(notice) + "\n")
    os.replace(tmp, record)  # whole or nothing: status never reads half a record
    return notice


def pre_stop_seconds(notice: dict, configured: float, now: float | None = None) -> float:
    """What the two-minute notice leaves for pre_stop: until 15 s before the stop, at most
    the configured limit (100 s when the notice's time cannot be read)."""
    now = time.time() if now is None else now
    try:
        when = datetime.datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ")
        left = when.replace(tzinfo=datetime.timezone.utc).timestamp() - now - 15  # noqa: UP017
    except (KeyError, TypeError, ValueError):
        left = 100.0
    return max(5.0, min(float(configured), left))


def pre_stop_on_notice(notice: dict) -> None:
    """The idle agent's pre_stop (save work), within what the notice allows."""
    folder = os.path.dirname(os.path.abspath(__file__))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        from agent_files import load_config
        from idle_stop import run_pre_stop
    except ImportError:  # the idle agent is not on this box
        return
    config = load_config()
    if config.get("pre_stop"):
        limit = pre_stop_seconds(notice, config.get("pre_stop_seconds") or 300)
        run_pre_stop(config, "spot interruption notice", time.time(), limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the spot interruption notice.")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="poll once and exit")
    parser.add_argument("--on-notice", default=None, help="shell command to run on a notice")
    args = parser.parse_args(argv)
    metadata = Metadata(os.environ.get("GPUBOX_IMDS_URL", DEFAULT_IMDS))
    while True:
        try:
            notice = check_once(metadata, RECORD)
        except (OSError, urllib.error.URLError) as exc:
            print(f"spot_watch: metadata not reachable: {exc}", file=sys.stderr)
            notice = None
        if notice is not None:
            print(f"spot_watch: interruption notice: {json.dumps(notice)}", flush=True)
            pre_stop_on_notice(notice)
            subprocess.run(["sync"], check=False)
            if args.on_notice:
                subprocess.run(args.on_notice, shell=True, check=False)
            return 0
        if args.once:
            return 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
