"""The ``fairgptq`` command: run / validate pipelines, evaluate models, list plugins.

Exit codes: 0 success, 2 bad input (any FairGPTQError: invalid pipeline, unknown plugin,
missing file or model, existing run directory), 1 any other failure.  Bad input gets one
clear message and no traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .core.errors import ConfigError, FairGPTQError
from .pipeline.executors import SweepIncomplete

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
console = Console()
errors = Console(stderr=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairgptq", description="GPTQ quantization with the Fair-GPTQ debiasing term.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline file (quantize, evaluate, export, report)")
    run.add_argument("file", help="pipeline YAML")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a setting, e.g. --set objectives[0].alpha=0.5 (repeatable)")
    run.add_argument("--out", help="run directory (default: the pipeline's output, else runs/<name>)")
    run.add_argument("--force", action="store_true", help="replace an existing run directory")
    run.add_argument("--shard", metavar="I/N", help="sweeps: run only points with index = I mod N (split a sweep "
                                                    "across processes or machines sharing the output folder)")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="sweeps: run the points here (local, the default) or as Ray tasks; the pipeline's "
                          "executor section gives the Ray address and resources")
    val = sub.add_parser("validate", help="check a pipeline file without loading any model")
    val.add_argument("file")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    ev = sub.add_parser("eval", help="evaluate an exported checkpoint or any model name")
    ev.add_argument("model", help="exported GPTQ folder, local model folder / .gguf, hub id, or 'smollm2'")
    ev.add_argument("--tasks", default="wikitext2,crows_pairs", help="comma-separated task names")
    ev.add_argument("--limit", type=int, help="first N items of each likelihood task")
    ev.add_argument("--max-tokens", type=int, help="WikiText-2: first N tokens only")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    ev.add_argument("--out", help="write the results JSON here")
    pl = sub.add_parser("plugins", help="list pair sources, objectives and backends")
    pl.add_argument("--module", action="append", default=[], help="also import and register this plugin module")
    return p


def _cmd_validate(args) -> int:
    from .pipeline import load_pipeline
    pipe = load_pipeline(args.file, args.overrides)
    n = len(pipe.points)
    console.print(f"[green]✓[/] {args.file} is valid" + (f" (sweep of {n} points)" if n else ""))
    return EXIT_OK


def _metrics_table(metrics: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    return table


def _cmd_run(args) -> int:
    from .pipeline import load_pipeline
    from .pipeline.runner import run_pipeline
    overrides = [*args.overrides, *([f"executor.name={args.executor}"] if args.executor else [])]
    pipe = load_pipeline(args.file, overrides)
    target = run_pipeline(pipe, args.out, force=args.force, console=console, shard=_shard(args.shard))
    if not (target / "results.json").is_file():
        return EXIT_OK  # a shard whose sweep still has points on other shards
    results = json.loads((target / "results.json").read_text())
    if "points" in results:
        for p in results["points"]:
            console.print(_metrics_table(p["metrics"], f"{p['name']}"))
    else:
        console.print(_metrics_table(results["metrics"], f"{results['pipeline']}: quantized model"))
        if results.get("export"):
            console.print(f"GPTQ checkpoint: [bold]{target / results['export']['path']}[/] "
                          f"({results['export'].get('reload_check', 'not verified')})")
    console.print(f"[bold green]Report:[/] {target / 'report.md'}   (all numbers: {target / 'results.json'})")
    return EXIT_OK


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i = n = -1
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. --shard 0/2")
    return i, n


def _cmd_eval(args) -> int:
    from .core.model_loading import load_model
    from .evaluation import evaluate
    from .evaluation.report import print_table, save_json
    from .export import is_gptq_checkpoint, load_gptq_checkpoint
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if is_gptq_checkpoint(args.model):
        model, tok, _ = load_gptq_checkpoint(args.model, dtype=args.dtype)
    else:
        model, tok = load_model(args.model, args.dtype or "float32")
    results = evaluate(model, tok, tasks, batch_size=args.batch_size, limit=args.limit, max_tokens=args.max_tokens)
    results["model"]["name"] = args.model
    print_table(results, console=console)
    if args.out:
        console.print(f"results: {save_json(results, args.out)}")
    return EXIT_OK


def _cmd_plugins(args) -> int:
    from .registry import default_registry
    registry = default_registry()
    for mod in args.module:
        registry.register_module(mod)
    table = Table(title="fairgptq plugins")
    for col in ("kind", "name", "origin", "parameters"):
        table.add_column(col, overflow="fold")
    for info in sorted(registry.all(), key=lambda i: (i.kind, i.name)):
        table.add_row(info.kind, info.name, info.origin, ", ".join(info.parameters()))
    console.print(table)
    return EXIT_OK


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "eval": _cmd_eval, "plugins": _cmd_plugins}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FairGPTQError as e:
        errors.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True, highlight=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/]")
        return 130
    except SweepIncomplete as e:  # each failure was reported as it happened; the rest of the sweep is done
        errors.print(Text.assemble(("sweep incomplete: ", "bold red"), str(e)), soft_wrap=True, highlight=False)
        return EXIT_FAILURE
    except Exception:
        errors.print_exception(max_frames=8)
        errors.print("[bold red]fairgptq failed[/] (a bug or an environment problem; the traceback is above)")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
