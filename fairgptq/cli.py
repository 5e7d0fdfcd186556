"""The ``fairgptq`` command: run / validate pipelines, evaluate, compare and audit models, list plugins and data.

Exit codes: 0 success, 2 bad input (any FairGPTQError: invalid pipeline, unknown plugin,
missing file or model, existing run directory, damaged checkpoint), 1 any other failure.  Both
get one clear message and no traceback (``--debug`` prints it); SIGTERM unwinds like Ctrl-C
(exit 130), so an exported model is kept and partial directories are left as partials.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .core.errors import ConfigError, FairGPTQError
from .pipeline.executors import SweepIncomplete

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
console = Console()
errors = Console(stderr=True)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose help may end with text built only when help is shown (``lazy_epilog``).

    ``eval``'s help lists the registered evaluation tasks; reading the registry imports every
    plugin, which no other command (nor ``eval`` itself, until help is asked for) should pay for.
    """

    def __init__(self, *args, lazy_epilog=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_epilog = lazy_epilog

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def _task_list() -> str:
    """The registered evaluation tasks with one line each, then their options with defaults."""
    from .evaluation.task_registry import option_specs, registered_tasks
    tasks = registered_tasks()
    width = max(map(len, tasks)) + 2
    lines = ["tasks (--tasks a,b,...):", *(f"  {name:<{width}}{t.description}" for name, t in tasks.items()),
             "", "task options (--set NAME=VALUE; default, then the tasks that read it):"]
    lines += [f"  {name}={spec.default!r}  ({spec.readers()})" for name, spec in option_specs(tasks).items()]
    return "\n".join(lines)


@lru_cache(maxsize=1)  # building it looks up translations on disk: slow enough to matter for in-process callers
def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fairgptq", description="GPTQ quantization with the Fair-GPTQ debiasing term.")
    p.add_argument("--debug", action="store_true", help="print the full traceback of a failure")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline file (quantize, evaluate, export, report)")
    run.add_argument("file", help="pipeline YAML")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a setting, e.g. --set objectives[0].params.alpha=0.5 (repeatable)")
    run.add_argument("--out", help="run directory (default: the pipeline's output, else runs/<name>)")
    run.add_argument("--force", action="store_true", help="replace an existing run directory")
    run.add_argument("--shard", metavar="I/N", help="sweeps: run only shard I of N (split a sweep across processes or "
                                                    "machines sharing the output folder; each case's seeds are dealt "
                                                    "round-robin, so every shard gets a share of every case)")
    run.add_argument("--reuse", action="append", default=[], metavar="SWEEP",
                     help="sweeps: copy points that another finished or partial sweep folder already computed "
                          "(same resolved settings except the name, same input files and versions) instead of "
                          "rerunning them, and its float-model evaluation (repeatable)")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="sweeps: run the points here (local, the default) or as Ray tasks; the pipeline's "
                          "executor section gives the Ray address and resources")
    val = sub.add_parser("validate", help="check a pipeline file without loading any model")
    val.add_argument("file")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    ev = sub.add_parser("eval", help="evaluate an exported checkpoint or any model name",
                        formatter_class=argparse.RawDescriptionHelpFormatter, lazy_epilog=_task_list)
    ev.add_argument("model", help="exported GPTQ folder, local model folder / .gguf, hub id, or 'smollm2'; or a run "
                                  "directory (its model/ is evaluated with the settings of its config.yaml, into "
                                  "its items/: how an .unevaluated run is finished)")
    ev.add_argument("--tasks", default=None, help="comma-separated task names (listed below; default "
                                                  "wikitext2,crows_pairs, or a run directory's own)")
    ev.add_argument("--set", dest="options", action="append", default=[], metavar="OPTION=VALUE",
                    help="a task option, e.g. --set stereoset_split=all (repeatable; listed below)")
    ev.add_argument("--module", action="append", default=[],
                    help="import and register this plugin module first (its tasks become available)")
    ev.add_argument("--limit", type=_positive, help="first N items of each likelihood task")
    ev.add_argument("--max-tokens", type=_positive, help="WikiText-2: first N tokens only")
    ev.add_argument("--batch-size", type=_positive, default=16)
    _trust_option(ev)
    ev.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                    help="compute dtype (default float32 on the CPU, whatever a checkpoint stores; recorded in "
                         "results.json as model.dtype)")
    ev.add_argument("--out", help="a new or empty folder for results.json and items/<task>.jsonl, or a new .json "
                                  "file (its item records then go to <stem>_items/); nothing existing is overwritten")
    cmp = sub.add_parser("compare", help="paired differences of evaluated runs against a baseline, with 95 %% "
                                         "intervals and p-values")
    cmp.add_argument("runs", nargs="*", metavar="RUN", help="run directories or `fairgptq eval --out` outputs")
    cmp.add_argument("--baseline", metavar="RUN", help="the run every other run is compared with")
    cmp.add_argument("--groups", nargs=2, metavar=("A", "B"), type=Path,
                     help="instead: two groups of seed runs (sweep point folders holding seed=<s>/, from one sweep "
                          "or two), B − A over their common seeds (seeds of one group only: --allow-unpaired): "
                          "seed-matched and Welch intervals, pooled McNemar")
    cmp.add_argument("--metrics", nargs="+", help="with --groups: task.metric names, one row each (default "
                                                  "crows_pairs.pct_stereotype wikitext2.perplexity)")
    cmp.add_argument("--labels", nargs=2, help="with --groups: the two groups' names (default A B)")
    cmp.add_argument("--allow-unpaired", action="store_true",
                     help="with --groups: compare the seeds both groups have when one has seeds the other lacks "
                          "(they are named); refused otherwise")
    cmp.add_argument("--out", help="folder for compare.json and compare.md (and forest.png without --groups)")
    cmp.add_argument("--force", action="store_true", help="replace compare.json, compare.md, forest.png in --out")
    cmp.add_argument("--bootstrap", type=int, help="without --groups: bootstrap resamples (default 2000)")
    cmp.add_argument("--seed", type=int, help="without --groups: seed of the bootstrap resampling (default 0)")
    au = sub.add_parser("audit", help="did quantization make a model more biased than its base? evaluate both on the "
                                      "same items and compare them pair by pair",
                        formatter_class=argparse.RawDescriptionHelpFormatter, lazy_epilog=_task_list)
    au.add_argument("base", help="the unquantized model: hub id, local folder, .gguf file, or 'smollm2'")
    au.add_argument("quantized", nargs="+",
                    help="its quantized version: a fairgptq or GPTQ checkpoint folder (GPTQModel, AutoGPTQ), a "
                         "compressed-tensors (llm-compressor) folder, or another format transformers loads on the "
                         "CPU; several are each compared with the base, which is evaluated once")
    au.add_argument("--tasks", default="crows_pairs,stereoset,wikitext2", help="comma-separated task names")
    au.add_argument("--set", dest="options", action="append", default=[], metavar="OPTION=VALUE",
                    help="a task option, e.g. --set stereoset_split=all (repeatable)")
    au.add_argument("--limit", type=_positive, help="first N items of each likelihood task")
    au.add_argument("--max-tokens", type=_positive, help="WikiText-2: first N tokens only")
    au.add_argument("--batch-size", type=_positive, default=16)
    au.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                    help="compute dtype of both models (default float32 on the CPU, whatever a checkpoint stores; "
                         "recorded in audit.json)")
    _trust_option(au)
    au.add_argument("--out", help="a new folder for audit.json, audit.md, forest.png and both models' item records "
                                  "(with several checkpoints: one subfolder each, named after the checkpoint)")
    au.add_argument("--force", action="store_true", help="replace an earlier audit's files in --out")
    rp = sub.add_parser("report", help="a finished sweep's research tables and plots: each point's paired difference "
                                       "from plain GPTQ across seeds, per metric or per bias category")
    rp.add_argument("sweep", type=Path, help="a finished sweep directory with repeats")
    rp.add_argument("--metrics", nargs="+", help="task.metric rows (default: every headline metric of the sweep)")
    rp.add_argument("--labels", nargs="*", default=None, help="one label per compared point, in sweep order")
    rp.add_argument("--plain-labels", nargs="*", default=None, help="one label per plain group, where there are several")
    rp.add_argument("--by-category", metavar="TASK", help="one pair task's per-category paired differences instead")
    rp.add_argument("--plot", type=Path, metavar="PNG", help="also draw the forest plot of the differences here "
                                                           "(.png added when missing)")
    rp.add_argument("--force", action="store_true", help="replace an existing --plot file")
    rp.add_argument("--metric-suffix", nargs="+", default=[".pct_stereotype"],
                    help="with --plot: plot the metrics ending in any of these (one unit per axis)")
    rp.add_argument("--rewrite", action="store_true",
                    help="first rewrite the sweep's summary (results.json, report.md, plots) from its points")
    ins = sub.add_parser("inspect", help="print the architecture spec a run would use for a model: decoder layers, "
                                         "each role's modules, what is quantized and what stays in float")
    ins.add_argument("model", nargs="?", help="a model folder (config.json; nothing else is read), a GPTQ checkpoint "
                                              "folder, a transformers model type (e.g. qwen3), a .gguf file, a "
                                              "cached hub id, or 'smollm2'")
    ins.add_argument("--json", action="store_true", help="print the mapping as JSON")
    ins.add_argument("--families", action="store_true",
                     help="instead: the table of every supported family (docs/architectures.md), as markdown")
    ins.add_argument("--module", action="append", default=[], help="also import and register this plugin module")
    rn = sub.add_parser("runs", help="housekeeping of a folder of runs")
    rn_sub = rn.add_subparsers(dest="runs_command", required=True)
    cl = rn_sub.add_parser("clean", help="list the salvaged <name>.unevaluated[-N] copies interrupted runs left "
                                         "(each holds an exported model); --yes removes them. Complete runs are "
                                         "never touched")
    cl.add_argument("folder", type=Path, metavar="RUNS_DIR", help="folder to search (sweep points included)")
    cl.add_argument("--yes", action="store_true", help="remove the listed copies")
    pl = sub.add_parser("plugins", help="list pair sources, objectives, backends and evaluation tasks")
    pl.add_argument("--module", action="append", default=[], help="also import and register this plugin module")
    da = sub.add_parser("data", help="list the data files fairgptq reads and where each is found "
                                     "($FAIRGPTQ_DATA_DIR, the user cache, the dataset hub); `data fetch` fills the cache")
    da_sub = da.add_subparsers(dest="data_command")
    da_sub.add_parser("fetch", help="download every missing file that has a hub copy into the user cache folder")
    return p


def _trust_option(parser: argparse.ArgumentParser) -> None:
    """One switch for loading what fairgptq cannot vouch for; --no-verify is its older spelling."""
    parser.add_argument("--trust-unverified", "--no-verify", dest="trust_unverified", action="store_true",
                        help="load a checkpoint whose files do not match the hashes fairgptq recorded at export, or "
                             "whose record was removed (tensors are still checked for damage)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (got {text!r})")
    return value


def _cmd_validate(args) -> int:
    from .pipeline import load_pipeline
    from .pipeline.messages import PipelineError
    from .pipeline.preflight import shape_problems
    pipe = load_pipeline(args.file, args.overrides)
    problems = shape_problems(pipe)
    if problems:
        raise PipelineError(args.file, problems)
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
    target = run_pipeline(pipe, args.out, force=args.force, console=console, shard=_shard(args.shard),
                          reuse=args.reuse)
    if not (target / "results.json").is_file():
        return EXIT_OK  # a shard whose sweep still has points on other shards
    results = json.loads((target / "results.json").read_text())
    if "points" in results:
        for p in results["points"]:
            console.print(_metrics_table(p["metrics"], f"{p['name']}"))
    else:
        console.print(_metrics_table(results["metrics"], f"{results['pipeline']}: quantized model"))
        if results.get("vs_plain"):
            from .evaluation.report import main_metric
            from .analysis.run_report import vs_plain_sentence
            console.print("[bold]Against plain GPTQ on the same calibration[/] (paired over items; one run is one "
                          "draw of GPTQ's rounding noise, so only a significant difference is evidence):")
            for row in results["vs_plain"]:
                if main_metric(row["task"], row["metric"]):
                    console.print(f"  {vs_plain_sentence(row)}")
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
    from .registry import registry_with, scoped
    with scoped(registry_with(args.module)):  # --module plugins serve this command only, not the process
        return _evaluate(args)


def _evaluate(args) -> int:
    from .model_loading import load_model
    from .evaluation import evaluate
    from .evaluation.items import split_evaluation, write_items
    from .evaluation.report import print_table, save_json
    from .export import is_gptq_checkpoint, load_gptq_checkpoint
    run_dir = _run_dir_settings(Path(args.model))
    settings = run_dir.settings if run_dir else {}
    tasks = (_task_names(args.tasks) if args.tasks is not None
             else settings.pop("tasks", ["wikitext2", "crows_pairs"]))
    options = {**settings, **_task_option_values(args.options)}
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.limit is not None:
        options["limit"] = args.limit
    json_file, items_dir = _eval_outputs(args.out, run_dir.folder if run_dir else None)
    model_path = str(run_dir.folder / "model") if run_dir else args.model
    if is_gptq_checkpoint(model_path):
        model, tok, _ = load_gptq_checkpoint(model_path, dtype=args.dtype, trust_unverified=args.trust_unverified)
    else:
        model, tok = load_model(model_path, args.dtype or "float32")
    options.setdefault("batch_size", args.batch_size)
    results = evaluate(model, tok, tasks, **options)
    results["model"]["name"] = model_path
    results, items = split_evaluation(results)
    print_table(results, console=console)
    if json_file is not None:
        console.print(f"results: {save_json(results, json_file)}")
        console.print(f"item records: {', '.join(map(str, write_items(items_dir, items)))}")
    return EXIT_OK


@dataclass
class _RunDirSettings:
    folder: Path
    settings: dict


def _run_dir_settings(path: Path) -> "_RunDirSettings | None":
    """A run directory (config.yaml + model/): its pipeline's evaluation settings, as ``evaluate`` takes them."""
    if not (path.is_dir() and (path / "config.yaml").is_file() and (path / "model").is_dir()):
        return None
    import yaml
    from .pipeline.loading import validate
    try:
        spec = validate(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")), str(path / "config.yaml"),
                        environment=False)
    except (yaml.YAMLError, OSError) as e:
        raise ConfigError(f"{path / 'config.yaml'}: not readable ({e})") from None
    from .pipeline.build import evaluation_options
    return _RunDirSettings(path, {"tasks": list(spec.evaluation.tasks), **evaluation_options(spec, [])})


def _eval_outputs(out: str | None, run_dir: Path | None) -> tuple[Path | None, Path | None]:
    """(results JSON, item folder) for ``--out``, or a run directory's own; never over anything that exists.

    ``eval`` has no ``--force``: an item folder mixes task files, so replacing part of one could pair
    a new task's records with an old one's.
    """
    from .evaluation.items import ITEMS_DIR
    from .outputs import output_file, output_folder
    if out is None and run_dir is None:
        return None, None
    if out is None:
        folder = output_folder(run_dir, ["evaluation.json", ITEMS_DIR], flag="run directory")
        return folder / "evaluation.json", folder / ITEMS_DIR
    target = Path(out)
    if target.suffix == ".json":
        json_file = output_file(target)
        items_dir = json_file.with_name(f"{json_file.stem}_items")
        output_folder(json_file.parent, [items_dir.name])
        return json_file, items_dir
    if target.is_dir() and any(target.iterdir()):  # a folder of eval's own holds only what this eval writes
        raise ConfigError(f"--out {out}: exists and holds files, so it is not a folder eval may write into; give "
                          f"a new or empty folder (or a new .json file): nothing existing is overwritten")
    folder = output_folder(target, ["results.json", ITEMS_DIR])
    return folder / "results.json", folder / ITEMS_DIR


def _task_names(text: str) -> list[str]:
    """``--tasks a,b``; an empty list is refused (``--tasks ''`` used to run every default task on the full data)."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ConfigError(f"--tasks {text!r} names no task; give comma-separated task names, e.g. --tasks "
                          f"crows_pairs,wikitext2 (`fairgptq eval --help` lists them)")
    return tasks


def _task_option_values(items: list[str]) -> dict:
    """``--set NAME=VALUE`` task options (values read as YAML scalars: 0.3, all, null); evaluate() checks them."""
    import yaml
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as OPTION=VALUE, e.g. --set stereoset_split=all")
        try:
            options[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    return options


def _cmd_report(args) -> int:
    from .evaluation.items import item_tasks
    from .analysis import seed_tables
    from .outputs import output_file
    from .pipeline.sweep_summary import read_report_summary
    plot = output_file(args.plot, force=args.force, suffix=".png", flag="--plot") if args.plot else None
    if args.rewrite:
        _rewrite_summary(args.sweep)
    summary = read_report_summary(args.sweep)
    if args.by_category:
        tasks = item_tasks(args.sweep / "points" / summary["points"][0]["name"] / "items")
        if args.by_category not in tasks:
            raise ConfigError(f"--by-category {args.by_category}: the sweep's points have no item records of that "
                              f"task; they have {', '.join(tasks) or 'none'}")
        print(seed_tables.category_table(args.sweep, summary, args.by_category, args.labels))
    else:
        metrics = args.metrics or list(dict.fromkeys(m for g in summary["groups"] for m in g["metrics"]))
        print(seed_tables.difference_table(summary, metrics, args.labels, args.plain_labels))
    if plot:
        console.print(f"wrote {seed_tables.forest_plot(args.sweep, summary, args.metric_suffix, args.labels, plot)}")
    return EXIT_OK


def _rewrite_summary(sweep: Path) -> None:
    """A finished sweep's summary written again from its points by this version (same pipeline, same points)."""
    import yaml
    from .pipeline.loading import Pipeline, own_registry, validate
    from .pipeline.runner import write_sweep_summary
    from .registry import scoped
    from .pipeline.sweep import expand, single, with_repeats
    config = sweep / "sweep.yaml"
    if not config.is_file():
        raise ConfigError(f"{sweep} is not a sweep folder (no sweep.yaml)")
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        baseline = json.loads((sweep / "baseline.json").read_text()) if (sweep / "baseline.json").is_file() else None
    except (OSError, ValueError, yaml.YAMLError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{sweep}: its sweep.yaml or baseline.json is not readable ({e}); rerun the sweep") from None
    registry = own_registry(raw)  # the sweep's plugins (its tasks' record kinds) for this rewrite only
    with scoped(registry):
        spec = validate(raw, str(config), environment=False)
        points = expand(raw, spec.sweep.grid, spec.sweep.cases) if spec.sweep else single(raw)
        if spec.repeats is not None:
            points = with_repeats(points, spec.repeats.seeds)
        pending = [p.name for p in points if not (sweep / "points" / p.name / "results.json").is_file()]
        if pending:
            raise ConfigError(f"{sweep}: {len(pending)} point(s) have no results yet (e.g. {pending[0]}); "
                              f"finish the sweep")
        write_sweep_summary(Pipeline(spec, raw, str(config), points, registry), sweep, baseline)


def _cmd_compare(args) -> int:
    from .outputs import output_folder
    if args.groups:
        return _compare_groups(args)
    if not args.runs or not args.baseline:
        raise ConfigError("give the runs to compare and --baseline RUN (or --groups A B for two seed groups)")
    given = [flag for flag, value in (("--metrics", args.metrics), ("--labels", args.labels),
                                      ("--allow-unpaired", args.allow_unpaired)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to --groups only; compare RUN ... --baseline RUN compares every "
                          f"metric of the tasks the runs share")
    from .analysis.comparison import N_BOOT, compare_runs, load_run, rich_table, write_outputs
    args.bootstrap = N_BOOT if args.bootstrap is None else args.bootstrap
    if args.bootstrap < 100:
        raise ConfigError(f"--bootstrap needs at least 100 resamples for a 95 % interval (got {args.bootstrap})")
    if args.out:
        output_folder(Path(args.out), ["compare.json", "compare.md", "forest.png"], force=args.force)
    same = [r for r in args.runs if Path(r).resolve() == Path(args.baseline).resolve()]
    if same:
        raise ConfigError(f"{same[0]} is the baseline itself; comparing a run with itself says nothing: give other runs")
    baseline = load_run(args.baseline)
    runs = [load_run(r) for r in args.runs]
    result = compare_runs(baseline, runs, n_boot=args.bootstrap, seed=args.seed or 0)
    console.print(rich_table(result))
    if args.out:
        for path in write_outputs(result, Path(args.out)):
            console.print(f"wrote {path}")
    return EXIT_OK


def _compare_groups(args) -> int:
    """``compare --groups A B``: two seed groups, B − A; every flag it does not use is refused, not ignored."""
    from .outputs import output_folder, write_file
    from .analysis.seed_tables import compare_groups, groups_markdown
    if args.runs or args.baseline:
        raise ConfigError("--groups compares two seed groups; give either --groups A B or RUN ... --baseline RUN")
    unused = [flag for flag, value in (("--bootstrap", args.bootstrap), ("--seed", args.seed)) if value is not None]
    if unused:
        raise ConfigError(f"{', '.join(unused)} do not apply to --groups: its intervals are t-intervals over seeds "
                          f"and its test of choices is an exact McNemar, with nothing resampled")
    if args.out:
        output_folder(Path(args.out), ["compare.json", "compare.md"], force=args.force)
    labels = tuple(args.labels or ("A", "B"))
    metrics = args.metrics or ["crows_pairs.pct_stereotype", "wikitext2.perplexity"]
    result = compare_groups(*args.groups, metrics, allow_unpaired=args.allow_unpaired)
    for group, seeds in result["dropped_seeds"].items():
        errors.print(f"[yellow]note:[/] seeds {seeds} of {group} have no partner in the other group; left out "
                     f"(--allow-unpaired)", highlight=False)
    text = groups_markdown(result, labels)
    print(text)
    if args.out:
        out = Path(args.out)
        for path in (write_file(out / "compare.json", json.dumps({**result, "labels": labels}, indent=2) + "\n"),
                     write_file(out / "compare.md", text + "\n")):
            console.print(f"wrote {path}")
    return EXIT_OK


def _cmd_audit(args) -> int:
    from .audit import audit_all, output_folders
    outs = output_folders(Path(args.out), args.quantized) if args.out else None
    tasks = _task_names(args.tasks)
    options = _task_option_values(args.options)
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    reports = audit_all(args.base, args.quantized, tasks, outs=outs, dtype=args.dtype, batch_size=args.batch_size,
                        limit=args.limit, trust_unverified=args.trust_unverified, force=args.force, **options)
    for i, (name, report) in enumerate(zip(args.quantized, reports)):
        table = Table(title=f"{name} against its base {args.base} (quantized − base, 95 % CI)")
        for col in ("task.metric", "base", "quantized", "difference [95 % CI]", "p", "verdict"):
            table.add_column(col, justify="right" if col in ("base", "quantized", "p") else "left")
        for r in report["rows"]:
            table.add_row(f"{r['task']}.{r['metric']}", f"{r['a']:.4g}", f"{r['b']:.4g}",
                          f"{r['diff']:+.3g} [{r['lo']:+.3g}, {r['hi']:+.3g}]", f"{r['p']:.3g}", r["audit"],
                          style="bold" if r["verdict"] == "significant" else "")
        console.print(table)
        if outs:
            console.print(f"[bold green]Audit:[/] {outs[i] / 'audit.md'}   (all numbers: {outs[i] / 'audit.json'})")
    return EXIT_OK


def _cmd_plugins(args) -> int:
    from .registry import registry_with
    registry = registry_with(args.module)
    table = Table(title="fairgptq plugins")
    for col in ("kind", "name", "origin", "parameters"):
        table.add_column(col, overflow="fold")
    for info in sorted(registry.all(), key=lambda i: (i.kind, i.name)):
        table.add_row(info.kind, info.name, info.origin, ", ".join(info.parameters()))
    console.print(table)
    return EXIT_OK


def _cmd_inspect(args) -> int:
    from .architecture_report import describe, families_table, model_skeleton, render, to_json
    from .registry import default_registry
    registry = default_registry()
    for mod in args.module:
        registry.register_module(mod)
    if args.families:
        print(families_table(registry), end="")
        return EXIT_OK
    if not args.model:
        raise ConfigError("inspect needs a MODEL (a folder, a model type, a .gguf file or a hub id), or --families")
    info = describe(model_skeleton(args.model), registry)
    print(to_json(info) if args.json else render(info))
    return EXIT_OK


def _data_files() -> list[str]:
    """Every data file a default pipeline or task reads: the calibration text, each task's file, the hub copies."""
    from .datasets_adapters.data_location import HUB_COPIES
    from .evaluation.task_registry import registered_tasks
    files = {"wikitext2/valid.txt", *HUB_COPIES}
    files |= {t.data_file for t in registered_tasks().values() if t.needs_data and t.data_file}
    return sorted(files)


def _cmd_data(args) -> int:
    from .datasets_adapters import data_location as where
    if args.data_command == "fetch":
        missing = [f for f in where.HUB_COPIES if where.found_in(f) is None]
        failures = []
        for relative in missing:
            try:
                console.print(f"fetched {relative} -> {where.fetch(relative)}")
            except FairGPTQError as e:
                failures.append(str(e))
        if failures:
            raise ConfigError(f"could not fill the cache {where.cache_dir()} from the dataset hub: "
                              f"{'; '.join(failures)}. Without the hub, set {where.DATA_DIR_ENV} to a folder "
                              f"holding the files")
        console.print("every file with a hub copy is found already (`fairgptq data` lists where)" if not missing
                      else f"done: the cache {where.cache_dir()} holds them")
        return EXIT_OK
    env = where.env_dir()
    console.print(f"${where.DATA_DIR_ENV}: {env if env else 'not set'}\nuser cache: {where.cache_dir()}\n"
                  f"dataset hub: {'switched off (' + where.offline() + ')' if where.offline() else 'through datasets'}"
                  f", for the files marked below")
    table = Table(title="fairgptq data")
    for col in ("file", "found in", "hub copy"):
        table.add_column(col, overflow="fold")
    for relative in _data_files():
        found = where.found_in(relative)
        hub = where.HUB_COPIES.get(relative)
        table.add_row(relative, f"{found[0]}: {found[1]}" if found else "[red]missing[/]", hub.dataset if hub else "-")
    console.print(table)
    return EXIT_OK


def _cmd_runs(args) -> int:
    """``runs clean RUNS_DIR [--yes]``: salvaged copies listed with their size; removed only with --yes."""
    from .pipeline.rundir import remove_salvaged, salvaged_copies
    if not args.folder.is_dir():
        raise ConfigError(f"{args.folder} is not a folder; give the folder your runs are in, e.g. runs")
    copies = salvaged_copies(args.folder)
    if not copies:
        console.print(f"no salvaged copies under {args.folder}")
        return EXIT_OK
    total = 0
    for copy in copies:
        size = sum(f.stat().st_size for f in copy.rglob("*") if f.is_file() and not f.is_symlink())
        total += size
        if args.yes:
            remove_salvaged(copy)
            console.print(f"removed {copy} ({size / 2**20:.1f} MiB)", highlight=False, soft_wrap=True, markup=False)
        else:
            console.print(f"{copy}  {size / 2**20:.1f} MiB  (finish it: fairgptq eval {copy})", highlight=False,
                          soft_wrap=True, markup=False)
    if not args.yes:
        console.print(f"{len(copies)} salvaged cop{'y' if len(copies) == 1 else 'ies'}, {total / 2**20:.1f} MiB; "
                      f"remove them with: fairgptq runs clean {args.folder} --yes", highlight=False, soft_wrap=True,
                      markup=False)
    return EXIT_OK


COMMANDS = {"run": _cmd_run, "inspect": _cmd_inspect, "validate": _cmd_validate, "eval": _cmd_eval,
            "compare": _cmd_compare, "audit": _cmd_audit, "report": _cmd_report, "runs": _cmd_runs,
            "plugins": _cmd_plugins, "data": _cmd_data}


def _terminate(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so run directories are cleaned up and exported models kept."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _dispatch(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _printable(message: str) -> str:
    """A message that names a path which is not UTF-8 (the user typed one) printed with escapes, not a crash."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _dispatch(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except FairGPTQError as e:
        if args.debug:
            errors.print_exception()
        errors.print(Text.assemble(("error: ", "bold red"), _printable("\n".join([str(e), *getattr(e, "__notes__", [])]))),
                     soft_wrap=True, highlight=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        errors.print(Text.assemble(("interrupted", "yellow"), *(f"\n{n}" for n in getattr(e, "__notes__", []))),
                     soft_wrap=True, highlight=False)
        return 130
    except SweepIncomplete as e:  # each failure was reported as it happened; the rest of the sweep is done
        errors.print(Text.assemble(("sweep incomplete: ", "bold red"), str(e)), soft_wrap=True, highlight=False)
        return EXIT_FAILURE
    except Exception as e:
        if args.debug:
            errors.print_exception()
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        errors.print(Text.assemble((f"fairgptq failed ({type(e).__name__}): ", "bold red"),
                                   "\n".join([message, *getattr(e, "__notes__", [])])), soft_wrap=True,
                     highlight=False)
        errors.print("(an environment problem or a bug; run with --debug for the traceback)")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
