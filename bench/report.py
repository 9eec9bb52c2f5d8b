"""Turn benchmark results (JSON) into the Markdown tables of docs/benchmarks.md and PNG plots.

    python bench/report.py                 # bench/results/*.json -> docs/benchmarks.md, docs/img/
    python bench/report.py --quick         # bench/results/quick/ -> bench/results/quick/

Reads ``undying.json`` (written by ``bench/run_all.py --suite figures``, i.e. ``make bench``)
and ``peers.json`` (``bench/peers/run.py``, i.e. ``make bench-peers``), whichever exist, and
replaces the text between the markers ``<!-- bench:undying:begin -->`` / ``end`` and
``<!-- bench:peers:begin -->`` / ``end`` in the Markdown file; everything else in that file
(the methodology) is left as it is. A quick run writes to a separate ``report.md`` so that a
smoke run never lands in the published page.

The plots need matplotlib (installed in .venv-peers by ``make bench-peers``); without it the
tables are still written and the plots are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MARK = "<!-- bench:{}:{} -->"


# -- formatting --------------------------------------------------------------------------------
def fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.2f} MiB" if value >= 2**16 else f"{value / 1024:.0f} KiB"
    if unit in ("us/step",):
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"
    if unit in ("wf/s", "runs/s"):
        return f"{value:,.0f}/s" if value >= 100 else f"{value:.1f}/s"
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"
    if unit == "ms" or unit == "ms/step":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3g}"


def cell(f: dict[str, Any]) -> str:
    unit = f["unit"]
    if f["min"] == f["max"]:
        return fmt(f["median"], unit)
    return f"{fmt(f['median'], unit)} ({fmt(f['min'], unit)}-{fmt(f['max'], unit)})"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def machine_block(data: dict[str, Any]) -> str:
    m = data["machine"]
    disk = m.get("disk") or {}
    ram = m.get("ram_bytes")
    pg = m.get("postgres") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    kind = "rotational" if disk.get("rotational") else "non-rotational"
    lines = [
        f"- Date: {data.get('finished', m.get('date'))} (UTC); run took "
        f"{data.get('duration_s', 0) / 60:.1f} min"
        + (" (QUICK smoke run)" if data.get("quick") else ""),
        f"- Machine: {m.get('cpu')}, {m.get('cores')} cores, "
        f"{(ram or 0) / 2**30:.1f} GiB RAM; {m.get('os')}, kernel {m.get('kernel')}",
        f"- Disk under the databases: {disk.get('device')} ({kind}"
        f"{', ' + disk['model'] if disk.get('model') else ''}), {disk.get('path')}",
        f"- Load average at start {_load(m.get('load_average_start'))}, at end "
        f"{_load(m.get('load_average_end'))}",
        f"- PostgreSQL: {pg.get('server_version', 'not used')}"
        + (
            f" (synchronous_commit={pg.get('synchronous_commit')}, fsync={pg.get('fsync')}, "
            f"wal_sync_method={pg.get('wal_sync_method')})"
            if "server_version" in pg
            else ""
        ),
        f"- Versions: {versions}",
        f"- undying commit: {m.get('undying_commit')}",
    ]
    return "\n".join(lines)


def _load(values: list[float] | None) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "?"


# -- undying's own figures ---------------------------------------------------------------------
def undying_section(data: dict[str, Any]) -> str:
    rows = []
    for f in data["figures"]:
        if f["id"].endswith(".fenced"):
            continue
        params = ", ".join(
            f"{k}={f[k]}"
            for k in ("backend", "durability", "n", "workers", "shape", "returns", "bytecode")
            if f.get(k) is not None
        )
        target = f.get("target")
        rows.append(
            [
                f["label"],
                params,
                cell(f),
                ""
                if target is None
                else f"{'≥' if f['better'] == 'higher' else '≤'} " + fmt(target, f["unit"]),
                str(len(f["samples"])),
            ]
        )
    parts = [
        machine_block(data),
        "",
        md_table(["figure", "configuration", "median (min-max)", "target", "runs"], rows),
    ]
    if data.get("failed"):
        parts += ["", f"Scripts that failed: {', '.join(data['failed'])}."]
    return "\n".join(parts)


# -- peers -------------------------------------------------------------------------------------
GROUPS = [
    ("Per-step overhead: a workflow of N sequential no-op steps, wall time / N", "overhead"),
    ("Sequential 1-step workflows per second", "throughput"),
    ("Recovery: process launch -> first resumed step after SIGKILL inside a step", "recovery"),
    ("Storage of the growing-history agent (database bytes after checkpoint + VACUUM)", "storage"),
]


def _column(figure: dict[str, Any]) -> str:
    w = figure["workload"]
    if w == "recovery":
        return f"{figure['n']} steps done"
    if w == "storage":
        return f"{figure['shape']}, N={figure['n']}" if figure["n"] else f"{figure['shape']}, empty"
    if w == "throughput":
        return "wf/s"
    return f"N={figure['n']}"


def peers_section(data: dict[str, Any]) -> str:
    figures = data["figures"]
    ratios = {(r["figure"], r["peer"]): r for r in data["ratios"]}
    contenders = data["contenders"]
    parts = [machine_block(data), ""]
    parts.append(
        "Ratios are undying ÷ peer of the figure itself, per repetition against the undying run "
        "just before it (same durability: "
        + "; ".join(f"{p} vs {u}" for p, u in data["compared_with"].items())
        + "), median of those ratios. Below 1 means undying needs less time or bytes; for "
        "throughput above 1 means undying is faster."
    )
    for title, workload in GROUPS:
        group = [f for f in figures if f["workload"] == workload]
        if not group:
            continue
        columns: list[str] = []
        for f in group:
            if f["figure"] not in columns:
                columns.append(f["figure"])
        column_label = {f["figure"]: _column(f) for f in group}
        headers = ["system", *[column_label[c] for c in columns]]
        # no ratio of empty databases: that is schema size, not the workload
        ratio_columns = [
            c
            for c in columns
            if not c.endswith(".n0") and any((c, k) in ratios for k in contenders)
        ]
        has_ratio = bool(ratio_columns)
        if has_ratio:
            headers += [f"undying ÷ peer, {column_label[c]}" for c in ratio_columns]
        rows = []
        for key, c in contenders.items():
            by = {f["figure"]: f for f in group if f["contender"] == key}
            if not by:
                continue
            row = [c["label"], *[cell(by[col]) if col in by else "-" for col in columns]]
            if has_ratio:
                row += [
                    cell(ratios[(col, key)]) if (col, key) in ratios else ""
                    for col in ratio_columns
                ]
            rows.append(row)
        parts += ["", f"### {title}", "", md_table(headers, rows)]
        if workload == "recovery":
            parts.append(_recovery_note(group, data))
        if workload == "storage":
            parts += ["", "Time per step of the same runs (ms/step):", "", _step_times(group, data)]
    if data["errors"]:
        parts += ["", "Measurements that failed (not in the tables):", ""]
        for e in data["errors"]:
            last = e["error"].strip().splitlines()[-1] if e["error"].strip() else "?"
            parts.append(f"- {e['figure']}, {e['contender']}: {last[:300]}")
    return "\n".join(parts)


def _step_times(group: list[dict[str, Any]], data: dict[str, Any]) -> str:
    columns = sorted({(f["shape"], f["n"]) for f in group if f["n"] and "ms_per_step" in f})
    rows = []
    for key, c in data["contenders"].items():
        by = {(f["shape"], f["n"]): f for f in group if f["contender"] == key}
        if not any(col in by for col in columns):
            continue
        row = [c["label"]]
        for col in columns:
            t = by[col]["ms_per_step"] if col in by else None
            row.append(cell({**t, "unit": "ms/step"}) if t else "-")
        rows.append(row)
    return md_table(["system", *[f"{s}, N={n}" for s, n in columns]], rows)


def _recovery_note(group: list[dict[str, Any]], data: dict[str, Any]) -> str:
    timeout = data["config"].get("activity_timeout")
    opened = [
        f"{data['contenders'][f['contender']]['label']} {fmt(f['open_to_first_s']['median'], 's')}"
        for f in group
        if "open_to_first_s" in f and f["figure"].endswith("short")
    ]
    return (
        f"\nTemporal's figure includes its activity start-to-close timeout ({timeout:g} s here): "
        "the server retries an activity whose worker died only when that timeout expires. "
        "Time from opening the system to the first resumed step (short run, medians): "
        + "; ".join(opened)
        + "."
    )


# -- plots -------------------------------------------------------------------------------------
def plots(data: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed here: plots skipped (make bench-peers installs it)")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    figures = data["figures"]
    labels = {k: c["label"] for k, c in data["contenders"].items()}
    keys = list(data["contenders"])
    tag = " (QUICK smoke run)" if data.get("quick") else ""

    def bars(workload: str, ylabel: str, scale: float, name: str, title: str) -> None:
        group = [f for f in figures if f["workload"] == workload]
        columns = sorted({(f["n"], f["figure"]) for f in group})
        present = [k for k in keys if any(f["contender"] == k for f in group)]
        if not group:
            return
        fig, ax = plt.subplots(figsize=(10, 5.5))
        width = 0.8 / max(len(columns), 1)
        for i, (_, col) in enumerate(columns):
            xs, ys, lo, hi = [], [], [], []
            for j, k in enumerate(present):
                match = [f for f in group if f["figure"] == col and f["contender"] == k]
                if match:
                    f = match[0]
                    xs.append(j + (i - (len(columns) - 1) / 2) * width)
                    ys.append(f["median"] * scale)
                    lo.append((f["median"] - f["min"]) * scale)
                    hi.append((f["max"] - f["median"]) * scale)
            label = _column(next(f for f in group if f["figure"] == col))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label)
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels([labels[k] for k in present], rotation=20, ha="right", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title + tag)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    bars(
        "overhead",
        "µs per step (log scale; bars: median, whiskers: min-max)",
        1.0,
        "bench-overhead.png",
        "Per-step overhead by system",
    )
    bars(
        "recovery",
        "seconds from process launch to first resumed step (log scale)",
        1.0,
        "bench-recovery.png",
        "Recovery latency after SIGKILL",
    )
    storage = [f for f in figures if f["workload"] == "storage" and f["n"] > 0]
    if storage:
        fig, ax = plt.subplots(figsize=(9, 6))
        for shape, style in (("text", "-"), ("hex", "--")):
            for k in keys:
                points = sorted(
                    (f["n"], f["median"])
                    for f in storage
                    if f["contender"] == k and f["shape"] == shape
                )
                if points and k != "undying-sqlite-normal":
                    ns, vs = zip(*points, strict=True)
                    ax.plot(
                        ns,
                        [v / 2**20 for v in vs],
                        style,
                        marker="o",
                        label=f"{labels[k]}, {shape}",
                    )
        ns = sorted({f["n"] for f in storage})
        if len(ns) >= 1:
            ax.plot(
                ns,
                [n * 1.05 / 1024 for n in ns],
                ":",
                color="gray",
                label="the distinct messages (~1.05 KiB x N)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (turns; each step returns the whole history + 1 message)")
        ax.set_ylabel("MiB on disk (log scale)")
        ax.set_title("Storage of the growing-history agent" + tag)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "bench-storage.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


# -- driver ------------------------------------------------------------------------------------
def replace_between(text: str, name: str, body: str) -> str:
    begin, end = MARK.format(name, "begin"), MARK.format(name, "end")
    if begin not in text or end not in text:
        return text.rstrip("\n") + f"\n\n{begin}\n{body}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="read and write bench/results/quick/")
    p.add_argument("--results", default=None, help="directory of undying.json / peers.json")
    p.add_argument("--markdown", default=None, help="file whose marked sections are replaced")
    p.add_argument("--plots", default=None, help="directory of the PNG plots")
    args = p.parse_args(argv)
    results = Path(args.results or (RESULTS / "quick" if args.quick else RESULTS))
    markdown = Path(
        args.markdown or (results / "report.md" if args.quick else ROOT / "docs" / "benchmarks.md")
    )
    plot_dir = Path(args.plots or (results if args.quick else ROOT / "docs" / "img"))
    text = markdown.read_text() if markdown.exists() else "# Benchmark report\n"
    found = False
    for name, render in (("undying", undying_section), ("peers", peers_section)):
        path = results / f"{name}.json"
        if not path.exists():
            print(f"no {path}: the {name} section is left as it was")
            continue
        found = True
        data = json.loads(path.read_text())
        body = render(data)
        if name == "peers":
            for png in plots(data, plot_dir):
                rel = _relative(png, markdown.parent)
                body += f"\n\n![{png.stem}]({rel})"
                print(f"plot: {png}")
        text = replace_between(text, name, body)
    if not found:
        print(f"no results in {results}: run `make bench` or `make bench-peers` first")
        return 1
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    print(f"tables written to {markdown}")
    return 0


def _relative(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve())


if __name__ == "__main__":
    sys.exit(main())
