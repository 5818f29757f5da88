"""Run `gpubox bench`, `gpubox scale` and `gpubox bench compare --plot` on this machine.

The real command on the local provider, in a temporary GPUBOX_HOME and HOME whose
framework environment (~/.gpubox/venv) is a venv that sees this Python's packages (it
needs torch), as the bootstrap makes one that reuses a host's framework. Prints Markdown
tables for docs/benchmarks.md and writes the plot.

    PYTHONPATH=src python benchmarks/bench_suite.py [--quick] [--runs 3] [--price 0.03]
        [--quick-too] [--plot docs/x.png]
"""

from __future__ import annotations

import argparse
import json
import os
import site
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def gpubox(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"gpubox {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def framework_env(venv: Path) -> None:
    """A venv that sees this Python's site-packages, even when this Python is itself a
    venv (a symlink to its python would start the base interpreter instead)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    Path(purelib, "gpubox-host-python.pth").write_text("\n".join(paths) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the suite's --quick sizes")
    parser.add_argument("--runs", type=int, default=3, help="suite runs (medians are shown)")
    parser.add_argument("--plot", type=Path, help="write compare's PNG here")
    parser.add_argument("--price", help="this machine's $/h for compare (`up --price`)")
    parser.add_argument("--quick-too", action="store_true",
                        help="also one --quick run, so compare shows both modes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        framework_env(home / ".gpubox" / "venv")
        env = {**os.environ, "HOME": str(home), "GPUBOX_HOME": str(Path(tmp) / "gpubox")}
        price = ["--price", args.price] if args.price is not None else []
        gpubox(env, "up", "here", "--provider", "local", "--no-setup", *price)
        flag = ["--quick"] if args.quick else []
        recs = [json.loads(gpubox(env, "bench", "here", "--json", *flag)) for _ in range(args.runs)]
        if args.quick_too and not args.quick:
            gpubox(env, "bench", "here", "--json", "--quick")
        scale = json.loads(gpubox(env, "scale", "here", "--json", *flag))
        if args.plot:
            gpubox(env, "bench", "compare", "--plot", str(args.plot.resolve()))
            print(gpubox(env, "bench", "compare"))

    def med(get) -> str:
        values = [get(r["suite"]) for r in recs]
        values = [v for v in values if v is not None]
        return f"{statistics.median(values):,.3g}" if values else "n/a"

    suite = recs[0]["suite"]
    print(f"device: {suite['device']['name']} ({suite['device']['cpus']} cores), "
          f"torch {suite['device']['torch']}, {args.runs} runs, medians\n")
    print("| measure | value | unit |\n|---|---:|---|")
    for name, m in suite["matmul"].items():
        print(f"| matmul {name}, n={m['n']} | {med(lambda s, n=name: s['matmul'][n]['tflops'])} "
              "| TFLOPS |")
    print(f"| memory copy (read + write) | {med(lambda s: s['memory']['copy_gbps'])} | GB/s |")
    for name, t in suite["training"].items():
        print(f"| train {name} ({t['image_size']}px, batch {t['batch']}, {t['precision']}) | "
              f"{med(lambda s, n=name: s['training'][n]['images_per_s'])} | images/s |")
    print("\n| processes | backend | images/s | speed-up | efficiency | busbw GB/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for points in scale["points"].values():
        for p in points:
            bw = "" if p["busbw_gbps"] is None else f"{p['busbw_gbps']:.2f}"
            print(f"| {p['count']} | {p['backend']} | {p['images_per_s']:,.0f} | "
                  f"{p['speedup']:.2f}x | {100 * p['efficiency']:.0f}% | {bw} |")
    for note in scale["notes"]:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
