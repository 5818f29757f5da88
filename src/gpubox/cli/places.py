"""Where a box can go and whether it fits: regions (measured latency, offerings,
prices) and the GPU vCPU quotas, with the increase request."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings

quota_app = typer.Typer(
    help="GPU vCPU quotas (on-demand and spot, G/VT and P families), their use now, "
    "and increase requests.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(quota_app, name="quota")


@contextlib.contextmanager
def _aws(settings):
    """The State, and ec2/service-quotas client factories; AWS errors become gpubox errors."""
    from gpubox.providers.aws import session
    from gpubox.state import State

    state = State(settings.state_path)
    try:
        with session.aws_errors():
            yield (
                state,
                lambda region: session.client(settings, "ec2", region),
                lambda region: session.client(settings, "service-quotas", region),
            )
    finally:
        state.close()


def _on_demand(settings):
    from gpubox.providers.aws import catalog

    def price(region: str, instance_type: str) -> float | None:
        found = catalog.on_demand_price(settings, instance_type, region)
        return found.value if found else None

    return price


def _ms(value: float | None) -> str:
    return "unreachable" if value is None else f"{value:.0f}"


@app.command()
def regions(
    type_: Annotated[
        str | None,
        typer.Option(
            "--type", help="A GPU instance type: show where it is offered and its prices."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    refresh: Annotated[
        bool, typer.Option(help="Measure latency again instead of using the last few minutes'.")
    ] = False,
) -> None:
    """Every EC2 region, nearest first by latency measured from here now.

    With --type: the zones that offer it, its on-demand and current spot price. The
    region marked * is the one `gpubox up` picks when no region is configured.
    Latency is measured against GPUBOX_LATENCY_ENDPOINT (setting latency_endpoint).

    Example: gpubox regions --type g5.xlarge
    """
    from gpubox.providers.aws import regions as regions_mod
    from gpubox.validate import check_type_name

    if type_:
        check_type_name(type_)  # a typo is named before credentials are looked at

    settings = load_settings()
    with _aws(settings) as (state, ec2_for, _):
        rows = regions_mod.region_table(
            settings,
            state,
            ec2_for,
            instance_type=type_,
            on_demand_price=_on_demand(settings) if type_ else None,
            refresh=refresh,
        )
    if as_json:
        render.print_json([row.to_dict() for row in rows])
        return
    columns = ["", "region", "ms"]
    if type_:
        columns += ["zones", "$ on-demand", "$ spot"]
    table = []
    for row in rows:
        line = ["*" if row.best else "", row.name]
        line.append(_ms(row.latency_ms) if row.enabled else "not enabled")
        if type_:
            if not row.enabled:
                line += ["", "", ""]
            elif not row.zones:
                line += ["not offered", "", ""]
            else:
                line += [
                    f"{len(row.zones)}: " + " ".join(z[len(row.name) :] for z in row.zones),
                    render.money(row.on_demand),
                    render.money(row.spot),
                ]
        table.append(line)
    render.table(columns, table)
    best = next((r for r in rows if r.best), None)
    if best is not None:
        render.info(f"* {best.name}: what `gpubox up` uses when no region is configured")
    elif type_:
        render.warn(f"{type_} is not offered in any region this account can use")


@quota_app.callback()
def quota(
    ctx: typer.Context,
    region: Annotated[
        str | None, typer.Option(help="Region to read (default: the configured one, AWS_REGION).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The account's GPU vCPU quotas in a region, vCPUs in use now, and open requests.

    Example: gpubox quota --region us-west-2
    """
    if ctx.invoked_subcommand is not None:
        return
    from gpubox.providers.aws import quotas, session
    from gpubox.providers.aws import regions as regions_mod

    settings = load_settings().with_overrides(region=region)
    with _aws(settings) as (_state, ec2_for, sq_for):
        where = session.default_region(settings)
        regions_mod.check_region(
            where, regions_mod.list_regions(ec2_for(regions_mod.LISTING_REGION))
        )
        found = quotas.read_quotas(sq_for(where), ec2_for(where))
    if as_json:
        render.print_json(
            {
                "region": where,
                "quotas": [
                    {
                        "code": q.code,
                        "name": q.name,
                        "family": q.family,
                        "market": q.market,
                        "limit_vcpus": q.limit_vcpus,
                        "used_vcpus": q.used_vcpus,
                        "free_vcpus": q.free_vcpus,
                        "requests": [vars(r) for r in q.requests],
                    }
                    for q in found
                ],
            }
        )
        return
    rows = []
    for q in found:
        pending = q.pending
        rows.append(
            [
                q.name,
                q.code,
                int(q.limit_vcpus),
                q.used_vcpus,
                _room(q),
                f"{int(pending.desired_vcpus)} vCPUs {pending.status}" if pending else "",
            ]
        )
    render.table(
        ["quota", "code", "vCPU limit", "vCPU in use", "room", "request"],
        rows,
        title=f"GPU vCPU quotas in {where}",
    )


def _room(q) -> str:
    # Boxes of the smallest common type of the family, in words a student can use.
    example, vcpus = ("g5.xlarge", 4) if q.family == "G and VT" else ("p3.2xlarge", 8)
    room = q.room_for(vcpus)
    if room == 0:
        return f"no room for a {example}"
    return f"room for {room} more {example}"


@quota_app.command("request")
def quota_request(
    type_: Annotated[str, typer.Option("--type", help="The GPU instance type to make room for.")],
    count: Annotated[int, typer.Option(help="How many boxes of that type to make room for.")] = 1,
    spot: Annotated[bool, typer.Option(help="Raise the spot quota instead of on-demand.")] = False,
    region: Annotated[
        str | None, typer.Option(help="Region of the quota (default: the configured one).")
    ] = None,
) -> None:
    """File a quota increase big enough for COUNT more boxes of the type (vCPUs in use + COUNT x vCPUs).

    Nothing is filed when the quota already has room or a request is still open.
    `gpubox quota` shows the request's status afterwards.

    Example: gpubox quota request --type g5.xlarge --count 2
    """
    from gpubox.providers.aws import quotas, session
    from gpubox.providers.aws import regions as regions_mod
    from gpubox.validate import check_type_name

    check_type_name(type_)  # a typo is named before credentials are looked at

    settings = load_settings().with_overrides(region=region)
    with _aws(settings) as (_state, ec2_for, sq_for):
        where = session.default_region(settings)
        regions_mod.check_region(
            where, regions_mod.list_regions(ec2_for(regions_mod.LISTING_REGION))
        )
        outcome = quotas.request_increase(
            sq_for(where), ec2_for(where), type_, count=count, spot=spot
        )
    q = outcome.quota
    if outcome.filed is None:
        render.ok(
            f"nothing filed: {outcome.reason} ('{q.name}' in {where}: {int(q.limit_vcpus)} vCPUs, "
            f"{q.used_vcpus} in use; {count} x {type_} needs {outcome.vcpus_per_box * count})"
        )
        return
    render.ok(
        f"filed request {outcome.filed.id}: '{q.name}' ({q.code}) in {where} "
        f"from {int(q.limit_vcpus)} to {outcome.desired_vcpus} vCPUs, status {outcome.filed.status}"
    )
    render.info("AWS usually answers within a day; `gpubox quota` shows the status")
