"""`gpubox doctor --live` and `gpubox doctor --policy`: the rendering (the doctor command
itself is in lifecycle.py; the checks in providers/aws/livecheck.py)."""

from __future__ import annotations

from gpubox.cli import render


def policy(features: list[str] | None) -> None:
    """Print the least-privilege IAM policy for these features (all when none)."""
    import sys

    from gpubox.providers.aws import permissions

    sys.stdout.write(permissions.policy_json(features or None) + "\n")


def live(settings, region: str | None, as_json: bool) -> int:
    """Ask AWS about every call gpubox makes; print the table. Returns the exit code:
    1 when a call gpubox needs for a box at all (feature core) is denied."""
    from gpubox.providers.aws import livecheck
    from gpubox.providers.aws.session import default_region

    where = region or default_region(settings)
    if not as_json:
        render.info(f"asking AWS in {where} about every call gpubox makes (dry runs: nothing is made)")
    report = livecheck.check(settings, where)
    if as_json:
        render.print_json(report.as_dict())
    else:
        marks = {livecheck.ALLOWED: "allowed", livecheck.DENIED: "DENIED",
                 livecheck.UNCHECKED: "not checked"}  # fmt: skip
        rows = []
        for r in report.results:
            p = r.permission
            without = p.disables if r.verdict == livecheck.DENIED else ""
            rows.append((p.iam_action, p.feature, p.check, marks[r.verdict],
                         r.detail if r.verdict != livecheck.ALLOWED else "", without))
        render.table(["IAM action", "feature", "check", "answer", "detail", "without it"], rows)
        say = render.warn if report.of(livecheck.DENIED) else render.ok
        say(report.summary())
        render.info(f"{len(report.results)} calls checked in {report.seconds:.1f}s; "
                    "`gpubox doctor --policy` prints the IAM policy that allows them")
    core_denied = [r for r in report.of(livecheck.DENIED) if r.permission.feature == "core"]
    return 1 if core_denied else 0
