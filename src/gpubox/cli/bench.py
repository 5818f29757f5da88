"""Commands that measure: bench (one box, several types, compare) and scale."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import open_state as _open_state
from gpubox.cli.app import settings as load_settings
from gpubox.cli.lifecycle import _progress


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}%"


def _show_record(rec: dict) -> None:
    suite = rec["suite"]
    device = suite["device"]
    if device.get("kind") == "cuda":
        render.say(f"{rec['box']} ({rec.get('type') or '?'}): {device['name']} x{device['count']}, "
                   f"driver {device.get('driver') or '?'}, CUDA {device.get('cuda') or '?'}, "
                   f"torch {device.get('torch')}")
    else:
        render.say(f"{rec['box']}: no GPU; measured on the CPU ({device.get('cpu')}, "
                   f"{device.get('cpus')} cores), torch {device.get('torch')}")
    peaks = rec["peaks"]
    rows = []
    for name, m in suite["matmul"].items():
        check = "ok" if m["ok"] else f"WRONG (error {m['rel_error']:.1e} > {m['bound']:.0e})"
        p = peaks.get(name, {})
        rows.append((f"matmul {name} n={m['n']}", _num(m["tflops"], 3), "TFLOPS",
                     _num(p.get("peak")), _pct(p.get("percent")), check))
    mem = suite["memory"]
    for key, label in (("copy", "memory copy r+w"), ("h2d", "host-to-device")):
        value = mem.get(f"{key}_gbps")
        p = peaks.get(key, {})
        rows.append((label, _num(value), "GB/s" if value is not None else "",
                     _num(p.get("peak")), _pct(p.get("percent")), "" if value is not None else "no GPU"))
    for name, t in suite["training"].items():
        rows.append((f"train {name} {t['image_size']}px",
                     _num(t["images_per_s"]), "images/s", "", "", t["precision"]))
    render.table(["measure", "value", "unit", "peak", "% peak", "note"], rows)
    for name, why in suite.get("skipped", {}).items():
        render.info(f"matmul {name} skipped: {why}")
    price = rec.get("price_per_hour")
    if price is not None and rec.get("price_source") == "you":
        render.say("free (the price you gave it is 0)" if price == 0
                   else f"at {render.money(price)} (the price you gave it)")
    elif price is not None:
        render.say(f"at {render.money(price)} ({'spot' if rec.get('spot') else 'on-demand'})")
    elif rec.get("provider") in ("local", "ssh"):
        render.info(f"no price: `gpubox price {rec['box']} 0.35` (0 = free) puts it in "
                    "$ per unit of work beside cloud types")
    for note in suite.get("notes", []):
        render.warn(note)


def _bench_one(name: str, quick: bool, json_out: bool) -> None:
    from gpubox import box as lifecycle
    from gpubox.bench import suite

    settings = load_settings()
    with _open_state(settings) as state:
        try:
            box, runner = suite.runner_of(settings, state, name)
        except suite.BoxNotRunning as exc:
            if not render.can_ask() or not render.confirm(
                f"'{name}' is {exc.box.state.value}. Start it to run the benchmark "
                "(billing resumes until you stop it)?"
            ):
                raise
            with _progress(f"starting '{name}'") as progress:
                lifecycle.start(settings, state, name, on_progress=progress)
            box, runner = suite.runner_of(settings, state, name)
        with _progress(f"benchmarking '{name}'") as progress:
            rec = suite.bench_box(settings, state, box, runner, quick=quick, on_progress=progress)
    if json_out:
        render.print_json(rec)
    else:
        _show_record(rec)
        render.say("compare with others: gpubox bench compare")
    bad = suite.failed_checks(rec)
    if bad:
        from gpubox.errors import GpuboxError

        raise GpuboxError(f"matmul gave wrong results at {', '.join(bad)} on '{name}'",
                          hint="the throughput of a wrong result means nothing: check the "
                          "driver and the GPU (`nvidia-smi -q`), then bench again")


def _bench_types(types: str, spot: bool, region: str | None, yes: bool, quick: bool,
                 cap: int, json_out: bool) -> None:
    from gpubox.bench import compare, fleet

    settings = load_settings().with_overrides(region=region)
    with _open_state(settings) as state:
        plan = fleet.make_plan(settings, state, types.split(","), region=region, spot=spot,
                               cap_minutes=cap)
    if yes or not render.can_ask():
        render.info(fleet.describe_cost(plan))
    # Asked before the spinner starts: a question under a live spinner is unreadable.
    fleet.check_consent(plan, yes=yes, confirm=render.confirm)
    with _progress("benchmarking instance types") as progress:
        outcome = fleet.TypeBench(settings, on_progress=progress).run(plan, quick=quick, yes=True)
    for name in outcome.terminated:
        render.ok(f"terminated '{name}'")
    for t, message in outcome.errors.items():
        render.warn(f"{t}: {message}")
    rows = [compare.row_of(r) for r in outcome.records.values()]
    rows.sort(key=compare.value_order)
    if json_out:
        render.print_json({"plan": {"types": plan.types, "region": plan.region,
                                    "max_cost": plan.max_cost},
                           "results": [r.to_dict() for r in rows], "errors": outcome.errors})
    elif rows:
        _compare_table(rows)


def _money_or_free(row, value: float | None, unit: str = "") -> str:
    return "free" if row.free else render.money(value, unit)


def _compare_table(rows) -> None:
    render.table(
        ["box", "type", "device", "mode", "$/h", "TFLOPS", "img/s", "$/M img", "$/PFLOP"],
        [
            (r.box, r.type or "", r.device, r.mode, _money_or_free(r, r.price_per_hour, "/h"),
             f"{_num(r.tflops, 3)} {r.matmul_dtype or ''}".strip(), _num(r.images_per_s),
             _money_or_free(r, r.dollars_per_million_images),
             _money_or_free(r, r.dollars_per_pflop))
            for r in rows
        ],
    )


def _compare(json_out: bool, plot: Path | None) -> None:
    from gpubox.bench import compare, suite

    if plot is not None:
        compare.check_writable(plot)
    settings = load_settings()
    with _open_state(settings) as state:
        rows = compare.rows(state.bench_results(suite.SUITE), compare.user_prices(settings))
    if json_out:
        render.print_json([r.to_dict() for r in rows])
    else:
        _compare_table(rows)
        render.info("sorted by value for money: $ per million ResNet-18 training images, "
                    "then $ per PFLOP (bf16, else fp32); mode quick = `bench --quick` "
                    "(small sizes, less exact)")
        unpriced = sorted({r.box for r in rows if r.price_per_hour is None})
        if unpriced:
            render.info(f"'?' = price unknown ({', '.join(unpriced)}): give an ssh or local "
                        f"box one with `gpubox price {unpriced[0]} 0.35` (0 = free)")
        if any(r.free for r in rows):
            render.info("free = a price of 0 you gave: it ranks first on $ alone, however "
                        "slow; compare img/s for the time it costs you")
    if plot is not None:
        compare.plot(rows, plot)
        render.ok(f"plot written to {plot}")


@app.command()
def bench(
    name: Annotated[
        str | None,
        typer.Argument(help="The box to measure; or `compare` to compare every stored result."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Small sizes: a minute, not ten; less exact.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    types: Annotated[
        str | None,
        typer.Option(help="Comma list of AWS types: launch one box each, measure, terminate all."),
    ] = None,
    spot: Annotated[bool, typer.Option(help="With --types: spot boxes (cheaper, may be cut).")] = False,
    region: Annotated[str | None, typer.Option(help="With --types: the AWS region.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --types: do not ask about the cost.")] = False,
    max_minutes: Annotated[
        int, typer.Option(help="With --types: hard time cap per box, in minutes.")
    ] = 45,
    plot: Annotated[
        Path | None, typer.Option(help="With `compare`: also write a PNG chart to this path.")
    ] = None,
) -> None:
    """Measure a box (matmul TFLOPS, memory GB/s, D2L training images/s) and keep the result.

    `gpubox bench NAME` measures that box; `gpubox bench --types g4dn.xlarge,g5.xlarge`
    launches one box per type, measures each and terminates them all (it asks first,
    showing the most it can cost); `gpubox bench compare` compares every stored result
    in $ per unit of work.

    Example: gpubox bench box1 --quick
    """
    from gpubox.errors import InvalidInput

    if plot is not None and name != "compare":
        raise InvalidInput("--plot goes with `compare`", hint="gpubox bench compare --plot out.png")
    if types:
        if name:
            raise InvalidInput("give a box name or --types, not both",
                               hint="gpubox bench --types g4dn.xlarge,g5.xlarge")
        _bench_types(types, spot, region, yes, quick, max_minutes, json_out)
    elif name == "compare":
        _compare(json_out, plot)
    elif name:
        _bench_one(name, quick, json_out)
    else:
        raise InvalidInput("which box?", hint="gpubox bench NAME, gpubox bench --types T1,T2, "
                           "or gpubox bench compare")


@app.command()
def scale(
    name: Annotated[str, typer.Argument(help="The box to measure.")],
    gpus: Annotated[
        str | None,
        typer.Option(help="GPU counts to train on, e.g. 1,2,4,8 (default: 1, 2, 4 ... up to all)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Small sizes: seconds per count.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    nodes: Annotated[
        str | None,
        typer.Option(help="Node counts of a multi-node box to train on, e.g. 1,2 (torchrun "
                     "across the first K nodes; all GPUs of each, or one CPU process)."),
    ] = None,
) -> None:
    """Train data-parallel on 1..N GPUs of a box (torchrun, DDP over NCCL): speed-up and efficiency.

    Also measures the all-reduce bus bandwidth (nccl-tests' busbw). A box with one GPU
    or none says what it cannot measure and runs 1..N CPU processes with gloo instead.
    With --nodes, the same across the first 1..N nodes of a box of several machines.

    Example: gpubox scale box1 --gpus 1,2,4
    """
    from gpubox.bench import scale as scale_mod
    from gpubox.bench import suite
    from gpubox.errors import InvalidInput

    if nodes is not None and gpus is not None:
        raise InvalidInput("give --gpus or --nodes, not both",
                           hint=f"gpubox scale {name} --nodes 1,2 (all GPUs of each node)")
    counts = scale_mod.parse_counts(gpus)
    node_counts = scale_mod.parse_counts(nodes, "--nodes")
    settings = load_settings()
    with _open_state(settings) as state:
        if node_counts is not None:
            from gpubox.bench.scale_nodes import run_node_scale

            with _progress(f"scaling across the nodes of '{name}'") as progress:
                rec = run_node_scale(settings, state, name, node_counts, quick=quick,
                                     on_progress=progress)
        else:
            box, runner = suite.runner_of(settings, state, name)
            with _progress(f"scaling on '{name}'") as progress:
                rec = scale_mod.run_scale(state, box, runner, counts, quick=quick,
                                          on_progress=progress)
    if json_out:
        render.print_json(rec)
        return
    for note in rec["notes"]:
        render.warn(note)
    if "processes_per_node" in rec:
        render.info(f"{rec['processes_per_node']} training process(es) per node, "
                    f"speed-up against one node")
    for label, points in rec["points"].items():
        what = {"cuda": "GPUs", "cpu": "CPU processes", "nodes": "nodes"}[label]
        render.table(
            [what, "backend", "model", "images/s", "speed-up", "efficiency", "busbw GB/s"],
            [(p["count"], p["backend"], p["model"], _num(p["images_per_s"]),
              f"{p['speedup']:.2f}x", _pct(100 * p["efficiency"]),
              _num(p["busbw_gbps"], 2) if p["busbw_gbps"] is not None else "")
             for p in points],
        )
