"""Synthetic data: a dataset's statistical profile (``profile``), rows drawn from it (``synth``), load sent
to the pipeline (``produce``), and how faithful the rows are to the real data (``fidelity``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.options import StateDir, console, load_settings

ProfilePath = Annotated[
    Path | None, typer.Option("--profile", metavar="JSON", help="A profile (default: the shipped one).")
]
Drift = Annotated[
    list[str] | None,
    typer.Option("--drift", metavar="FEATURE=SHIFT", help="e.g. 'Mental Fatigue Score=+1.5sd'; repeatable."),
]


def profile(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, metavar="CSV", help="CSV to profile.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="JSON", help="Profile JSON to write.")],
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the copula calibration.")] = 0,
) -> None:
    """Compute a dataset's statistical profile (marginals, null rates, Gaussian copula)."""
    from streamml.synthetic.profile import profile_csv

    result = profile_csv(csv, seed=seed)
    output.write_text(result.to_json())
    kinds = {c.name: c.kind for c in result.columns}
    console.print(f"profiled {result.source['rows']} rows, {len(kinds)} columns -> {output}")
    console.print(", ".join(f"{name} ({kind})" for name, kind in kinds.items()))


def synth(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="CSV", help="CSV to write.")],
    rows: Annotated[int, typer.Option("--rows", min=1, metavar="N", help="Rows to generate.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the generator.")] = 0,
    profile_path: ProfilePath = None,
    drift: Drift = None,
    no_nulls: Annotated[bool, typer.Option("--no-nulls", help="Generate complete rows.")] = False,
) -> None:
    """Write synthetic rows drawn from a profile, in the real data's columns and formats."""
    from streamml.synthetic.profile import Profile
    from streamml.synthetic.synth import generate, parse_drifts

    try:
        drifts = parse_drifts(drift or [])
        profile = Profile.load(profile_path)
        started = time.perf_counter()
        frame = generate(profile, rows, seed=seed, nulls=not no_nulls, drift=drifts)
        generated_s = time.perf_counter() - started
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    frame.to_csv(output, index=False)
    console.print(
        f"wrote {len(frame)} rows x {len(frame.columns)} columns to {output} "
        f"(generated in {generated_s:.2f} s: {len(frame) / max(generated_s, 1e-9):,.0f} rows/s)"
    )


def produce(
    rate: Annotated[
        float, typer.Option("--rate", metavar="RECORDS_PER_S", help="Target records per second.")
    ] = 50.0,
    batch: Annotated[int, typer.Option("--batch", min=1, metavar="N", help="Records per request.")] = 1,
    duration: Annotated[
        float | None, typer.Option("--duration", metavar="SECONDS", help="Seconds (default: until Ctrl-C).")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", min=1, metavar="N", help="Records in all (instead of --duration)."),
    ] = None,
    routes: Annotated[
        str,
        typer.Option("--routes", "--model", metavar="MIX", help="'svm' or a mix 'svm=1,knn=1,lightgbm=2'."),
    ] = ("svm=1,knn=1,lightgbm=1"),
    via: Annotated[
        str,
        typer.Option(
            "--via", metavar="http|redis", help="http (the gateway) or redis (straight to the stream)."
        ),
    ] = "http",
    url: Annotated[
        str | None, typer.Option("--url", metavar="URL", help="Gateway URL (default from settings).")
    ] = None,
    drift: Drift = None,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the generator.")] = 0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, metavar="N", help="Requests in flight at most.")
    ] = 32,
    profile_path: ProfilePath = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            metavar="PATH",
            help="A file holding the API key to send (a gateway with keys); a file keeps it out of argv.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live display; print a JSON summary.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Send synthetic records to the gateway (or the stream) at a target rate."""
    from streamml.local.processes import direct_submission
    from streamml.synthetic.producer import run_producer

    settings = load_settings(state_dir)
    try:
        api_key = api_key_file.read_text().strip() if api_key_file else None
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the API key: {exc}", param_hint="--api-key-file") from exc
    try:
        summary = run_producer(
            settings,
            rate=rate,
            batch=batch,
            duration=duration,
            count=count,
            routes=routes,
            via=via,
            url=url,
            drift=drift or [],
            seed=seed,
            concurrency=concurrency,
            profile_path=profile_path,
            quiet=quiet,
            console=console,
            open_submit=lambda: direct_submission(settings),
            api_key=api_key,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if quiet:
        print(json.dumps(summary))


def fidelity(
    data: Annotated[
        Path, typer.Option("--data", exists=True, dir_okay=False, metavar="CSV", help="The real CSV.")
    ],
    rows: Annotated[int, typer.Option("--rows", metavar="N", help="Synthetic rows per generator.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the generators.")] = 0,
    profile_path: ProfilePath = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="MD", help="Write a Markdown report.")
    ] = None,
) -> None:
    """Measure synthetic-data fidelity (KS, shares, nulls, correlations, TSTR) vs a naive baseline."""
    import pandas as pd

    from streamml.synthetic.fidelity import evaluate, to_markdown
    from streamml.synthetic.profile import Profile

    result = evaluate(pd.read_csv(data), Profile.load(profile_path), rows=rows, seed=seed)
    command = f"streamml fidelity --data {data.name} --rows {rows} --seed {seed}"
    report = to_markdown(result, command)
    print(report)  # plain: Markdown must not be wrapped to the terminal's width
    if output:
        output.write_text(report)


COMMANDS = (profile, synth, produce, fidelity)
