"""`tinyfleet models`: build the project's TinyML models (.tflite plus signing sidecars)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli._output import JsonOption, emit_json, emit_table, fail

app = typer.Typer(
    help="Build the TinyML models that releases ship to the M4 cores.", no_args_is_help=True
)


@app.command("build")
def build(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the .tflite and .json files into.")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Build only this model line (kws or vibration).")
    ] = None,
    json_output: bool = JsonOption,
) -> None:
    """Train every model version on synthetic data and write `<id>-v<version>.tflite` + `.json`.

    The output is byte-for-byte identical to firmware/models/prebuilt/ on the same platform.
    """
    from firmware.models import build_all, specs_named

    specs = specs_named(model)
    if not specs:
        fail(f"unknown model line {model!r}", hint="use kws or vibration, or omit --model")
    if out.exists() and not out.is_dir():
        fail(f"{out} exists and is not a directory")
    try:
        built = build_all(out, specs)
    except OSError as exc:
        fail(f"cannot write models to {out}: {exc.strerror or exc}")
    rows = []
    for item in built:
        quality = item.sidecar["quality"]
        assert isinstance(quality, dict)
        metric = str(quality["metric"])
        rows.append(
            {
                "file": f"{item.spec.stem}.tflite",
                "bytes": len(item.tflite),
                "arenaBytes": item.sidecar["arenaBytes"],
                "metric": metric,
                "value": quality[metric],
                "sha256": item.sha256,
            }
        )
    if json_output:
        emit_json({"out": str(out), "models": rows})
    else:
        emit_table(
            f"models written to {out}",
            ["file", "bytes", "arena", "quality", "sha256"],
            [
                [
                    r["file"],
                    r["bytes"],
                    r["arenaBytes"],
                    f"{r['metric']} {r['value']}",
                    str(r["sha256"])[:16],
                ]
                for r in rows
            ],
        )
