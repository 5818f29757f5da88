"""`gpubox types`: the GPU instance types a region offers, with their prices."""

from __future__ import annotations

from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings


def _price(price) -> str:
    return render.money(price.value) if price is not None else "?"


def _gib(value: float) -> str:
    return f"{value:g} GiB"


@app.command("types")
def types_cmd(
    region: Annotated[
        str | None,
        typer.Option(help="AWS region (default: config, AWS_REGION, else us-east-1). Env: GPUBOX_REGION."),
    ] = None,
    gpu: Annotated[
        list[str] | None,
        typer.Option(help="Only this GPU model or family (T4, A10G, L4, H100, g5 ...); repeatable."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON list, one object per type.")
    ] = False,
) -> None:
    """List the GPU instance types a region offers: GPU, memory, vCPUs, on-demand and spot $/h.

    On-demand prices come from the AWS Price List API when it answers, else from the
    approximate snapshot shipped with gpubox; the source and date are shown under the table.

    Example: gpubox types --region us-west-2 --gpu T4 --gpu L4
    """
    from dataclasses import asdict

    from gpubox.providers.aws import catalog
    from gpubox.providers.aws.session import default_region

    settings = load_settings().with_overrides(region=region)
    where = default_region(settings)
    with render.err_console().status(f"reading GPU types and prices in {where}"):
        found = catalog.gpu_types(settings, where, gpu or None)
    if json_out:
        render.print_json([{**asdict(t), "region": where} for t in found])
        return
    if not found:
        wanted = f" with {', '.join(gpu)}" if gpu else ""
        render.info(f"no GPU types{wanted} are offered in {where}")
        return
    rows = [
        (
            t.name,
            t.gpu_model,
            t.gpu_count,
            _gib(t.gpu_memory_gib),
            t.vcpus,
            _gib(t.memory_gib),
            _price(t.on_demand),
            _price(t.spot),
            t.note,
        )
        for t in found
    ]
    render.table(
        ["type", "GPU", "#GPU", "GPU mem", "vCPU", "RAM", "$/h on-demand", "$/h spot", "note"],
        rows,
        title=f"GPU instance types in {where}",
    )
    sources = sorted({(p.source, p.date) for t in found for p in (t.on_demand,) if p})
    for source, date in sources:
        if source == "snapshot":
            render.info(
                f"on-demand prices: gpubox's approximate snapshot of {date} "
                "(the AWS Price List API did not answer); check before you rely on them"
            )
        else:
            render.info(f"on-demand prices: AWS Price List API, effective {date}")
    if any(t.spot for t in found):
        render.info("spot prices: the current lowest over the region's zones (spot price history)")
    render.info("GPU mem is per GPU; launch one with `gpubox up NAME --type TYPE`")
