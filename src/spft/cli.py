"""The ``spft`` command line: parsing and user-facing output only; the work happens in the task modules.

    spft train CONFIG [KEY=VALUE ...]         run the two-stage SPFT recipe; last line printed = run directory
    spft train --resume RUN_DIR               continue a killed run to its configured end
    spft evaluate RUN_DIR [KEY=VALUE ...] [--split test] [--json]
    spft demo [--out DIR]                     phantoms + tiny pretrained Dinov2, end to end on a CPU
    spft data check CONFIG [KEY=VALUE ...] [--json] [--scan]   counts, leakage, missing / unreadable files
    spft prepare cache CONFIG [KEY=VALUE ...] pre-resize every image once into data.image_cache
    spft prepare vindr-cxr|tbx11k CONFIG [KEY=VALUE ...]   real detection data -> Ultralytics dataset
    spft repeat CONFIG [KEY=VALUE ...] [--seeds 0,1,2] [--out DIR]     one run per seed; last line = sweep directory
    spft ablate CONFIG [KEY=VALUE ...] [--study ladder|depth|probe|class_weights|FILE] [--seeds ...] [--out DIR]
                 (repeat, ablate: [--jobs N] [--devices 0,1,2,3] [--gpus-per-run K]: N runs at once)
    spft report SWEEP_DIR [--out DIR] [--bootstrap 1000]             tables, figures, report.html
    spft track push RUN_OR_SWEEP [--uri URI]                         send what MLflow tracking could not send
    spft cache list | clean [--max-gb N] [--all]                     the stage-1 feature cache on disk
    spft predict RUN_OR_EXPORT INPUTS... [--out FILE] [--heatmaps DIR]   images/folders/globs/CSV -> table (+ maps)
    spft export RUN --out DIR [--format safetensors|onnx|torchscript]  a self-contained model folder
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from spft.compat import has_option_string, subparser_actions
from spft.errors import ConfigError, SpftError

log = logging.getLogger("spft")


def _setup_logging(verbose: bool) -> None:
    """spft's own messages go to stderr as ``spft: ...``; Lightning keeps its own handler and format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spft: %(message)s"))
    root = logging.getLogger("spft")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # Lightning advertises a cloud logger at INFO on every fit; drop that one line, keep everything else.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def find_demo_config() -> Path:
    """``configs/phantom_cxr_pretrained.yaml`` as shipped inside the package (works from a checkout and an installed
    wheel): the built-in pretrained encoder ``spft:phantom-dinov2`` with the paper's recipe."""
    from spft.config.loader import bundled_configs

    return bundled_configs() / "phantom_cxr_pretrained.yaml"


def cmd_train(args: argparse.Namespace) -> int:
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import get_task

    if args.resume:
        if args.config:
            raise ConfigError("give either CONFIG or --resume RUN_DIR, not both "
                             "(a resumed run keeps its own config)")
        run_dir = get_task(task_of_run(args.resume)).resume(args.resume)
    else:
        if not args.config:
            raise ConfigError("CONFIG is required (or --resume RUN_DIR)")
        from spft.config import load_config

        cfg = load_config(args.config, args.overrides)
        run_dir = get_task(cfg.task).train(cfg)
    from spft.distributed import secondary_rank

    if not secondary_rank():
        _print_result(run_dir)
        print(run_dir)
    return 0


def _print_result(run_dir: Path) -> None:
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import get_task

    metrics_file = Path(run_dir) / "metrics.json"
    if metrics_file.is_file():  # the task says how its test metrics read
        print(get_task(task_of_run(run_dir)).summary(json.loads(metrics_file.read_text())))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import get_task

    # split None: the task decides (its own data: test; other data: every row)
    ev = get_task(task_of_run(args.run_dir)).evaluate(args.run_dir, tuple(args.overrides), split=args.split,
                                                      checkpoint=args.checkpoint, out=args.out, name=args.name)
    from spft.distributed import secondary_rank

    if secondary_rank():  # under torchrun every rank evaluated its shard; rank 0 prints the gathered result
        return 0
    print(json.dumps(ev.metrics, indent=2) if args.json else ev.table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from spft.config import load_config
    from spft.reporting.figures import auc_bar_chart
    from spft.tasks.classification.train import train

    out = Path(args.out) if args.out else Path("runs") / "demo" / time.strftime("%Y%m%d-%H%M%S")
    config = find_demo_config()
    cfg = load_config(config, [f"run.dir={out}"] + list(args.overrides))
    log.info("demo: %s — phantom chest X-rays, small Dinov2 pretrained on other phantoms (spft:phantom-dinov2, "
             "built on first use), the paper's two-stage SPFT recipe", config)
    start = time.time()
    run_dir = train(cfg)
    _print_result(run_dir)
    chart = auc_bar_chart(run_dir / "metrics.json", run_dir / "auc_per_class.png", title="SPFT demo: per-class AUC")
    from spft.tasks.classification.predict import demo_predictions

    table_file, heatmap_dir, n_maps = demo_predictions(run_dir)
    print(f"\nfinished in {time.time() - start:.0f} s; per-class AUC chart: {chart}")
    print(f"predictions of 4 test images: {table_file}; {n_maps} heatmap(s): {heatmap_dir}")
    print(run_dir)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from spft.config import load_config
    from spft.tasks.registry import get_task

    cfg = load_config(args.config, args.overrides)
    report = get_task(cfg.task).data_check(cfg, scan=args.scan, workers=args.workers, headers=args.headers)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.text())
    return 1 if report.problems else 0


def cmd_prepare_cache(args: argparse.Namespace) -> int:
    from spft.config import load_config
    from spft.tasks.registry import get_task

    cfg = load_config(args.config, args.overrides)
    s = get_task(cfg.task).prepare_cache(cfg, workers=args.workers)
    print(f"cache {s['folder']} ({s['size']} px): {s['written']} written, {s['skipped']} already there, "
          f"{s['missing']} missing, {len(s['failed'])} failed")
    for path, error in list(s["failed"].items())[:20]:
        print(f"  failed: {path}: {error}")
    return 1 if s["failed"] else 0


def cmd_prepare_detection(args: argparse.Namespace) -> int:
    from spft.config import load_config
    from spft.tasks.detection.checks import check_detection_config

    cfg = load_config(args.config, args.overrides)
    check_detection_config(cfg)
    if args.prepare_command == "vindr-cxr":
        from spft.data.vindr_cxr import prepare_vindr_cxr as prepare
    else:
        from spft.data.tbx11k import prepare_tbx11k as prepare
    dataset_yaml = prepare(cfg)
    print(f"Ultralytics dataset: {dataset_yaml}")
    print(dataset_yaml)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from spft.tasks.classification import feature_store as store

    if args.cache_command == "list":
        print(store.format_entries(store.entries()))
        print(store.store_root())
        return 0
    limit = 0 if args.all else (int(args.max_gb * 1e9) if args.max_gb is not None else store.max_bytes())
    removed = store.evict(limit)
    print(f"removed {len(removed)} feature-cache entr{'y' if len(removed) == 1 else 'ies'} "
          f"({sum(e.bytes for e in removed) / 1e9:.2f} GB) from {store.store_root()}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import inspect

    from spft.experiments.rundir import task_of_model
    from spft.tasks.registry import predict_api

    source = Path(args.source).expanduser()
    api = predict_api(task_of_model(source))
    name = source.resolve().name or "model"
    out = Path(args.out).expanduser() if args.out else Path(f"predictions_{name}.csv")
    if out.resolve() in {(source / f).resolve() for f in ("predictions_test.csv", "metrics.json", "config.yaml")}:
        raise ConfigError(f"--out {out}: that is one of the run's own records; choose another file")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; --out names the CSV file to write "
                          f"(e.g. {out / 'predictions.csv'})")
    if (out.exists() or out.is_symlink()) and not args.overwrite:
        raise ConfigError(f"--out {out}: exists; choose another file, or add --overwrite to replace it")
    if args.heatmap_classes and not args.heatmaps:
        raise ConfigError("--heatmap-classes needs --heatmaps DIR")
    extra = {} if not args.heatmaps else {"heatmaps": Path(args.heatmaps).expanduser(), "heatmap_method":
                                          args.heatmap_method, "heatmap_classes": args.heatmap_classes}
    if args.prompts is not None:
        extra["prompts"] = args.prompts
    if args.engine is not None:
        extra["engine"] = args.engine
    unsupported = [k for k in extra if k not in inspect.signature(api.predict).parameters]
    if unsupported:
        raise ConfigError(f"--{unsupported[0].replace('_', '-')} is not an option of this run's task "
                          f"({task_of_model(source)})")
    result = api.predict(source, args.inputs, batch_size=args.batch_size, device=args.device,
                         checkpoint=args.checkpoint, image_column=args.image_column, root=args.root,
                         workers=args.workers, progress=True, **extra)
    table_file, failed_file = result.write(out)
    log.info("%d image(s) predicted -> %s", getattr(result, "n_images", len(result.table)), table_file)
    if getattr(result, "heatmaps", None):
        log.info("%d heatmap(s) -> %s (listed in %s)", len(result.heatmap_table), result.heatmaps.parent,
                 result.heatmaps.name)
    if result.failures:
        print(f"\n{len(result.failures)} input(s) could not be predicted (listed in {failed_file}):", file=sys.stderr)
        for f in result.failures[:50]:
            print(f"  {f.id}: {f.error}", file=sys.stderr)
        if len(result.failures) > 50:
            print(f"  ... and {len(result.failures) - 50} more", file=sys.stderr)
    print(table_file)
    return 1 if result.failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import predict_api

    out = predict_api(task_of_run(args.run_dir)).export(args.run_dir, args.out, args.format, args.checkpoint)
    print(out)
    return 0


def _run_sweep(args: argparse.Namespace, study) -> int:
    from spft.experiments.parallel import device_overrides, sweep_slots
    from spft.experiments.sweep import parse_seeds, plan_sweep, primary_label, run_sweep, summary_rows

    sweep = plan_sweep(args.config, parse_seeds(args.seeds), tuple(args.overrides), study, args.out)
    from spft.experiments import slurm

    if slurm.wanted(args):  # --launcher slurm: submit a job array (or show its state) and return
        return slurm.submit_or_show(sweep, args)
    slots = sweep_slots(args.jobs, args.devices, args.gpus_per_run)  # refused here, before anything runs
    extra = device_overrides(sweep, slots, explicit=args.gpus_per_run is not None)
    width = max([len("overlay")] + [len(r.overlay) for r in sweep.runs])
    print(f"sweep {sweep.out} ({sweep.study.name}, seeds {','.join(map(str, sweep.seeds))}): {len(sweep.runs)} "
          f"run{'s' if len(sweep.runs) != 1 else ''}")
    for r in sweep.runs:
        print(f"  {r.overlay:<{width}}  seed {r.seed:<4} {r.action:<8} {r.note}")
    if len(slots) > 1 or slots[0]:
        pinned = ", ".join(f"[{','.join(slot)}]" for slot in slots if slot)
        print(f"  {len(slots)} at a time" + (f" on devices {pinned}" if pinned else " (CPU)"))
    try:
        run_sweep(sweep, slots, extra)
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted: run the same command again to continue {sweep.out}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)  # 130 for SIGINT, 143 for SIGTERM, as spft train
    print(f"\n{'overlay':<{width}}  seed  status    {primary_label(sweep)}")
    for overlay, seed, status, value, _ in summary_rows(sweep):
        print(f"{overlay:<{width}}  {seed:<4}  {status:<8}  {value}")
    if sweep.failed:
        print(f"{len(sweep.failed)} run(s) failed; their logs are in {sweep.out / 'logs'}", file=sys.stderr)
    print(sweep.out)
    return 1 if sweep.failed else 0


def cmd_repeat(args: argparse.Namespace) -> int:
    return _run_sweep(args, None)


def cmd_ablate(args: argparse.Namespace) -> int:
    from spft.experiments.studies import load_study

    return _run_sweep(args, load_study(args.study))


def cmd_report(args: argparse.Namespace) -> int:
    from spft.reporting.report import build_report

    out = build_report(args.sweep_dir, args.out, n_boot=args.bootstrap, seed=args.bootstrap_seed)
    print(f"report: {out / 'report.html'}  (tables: {out / 'tables'}, figures: {out / 'figures'})")
    print(out)
    return 0


def cmd_track_push(args: argparse.Namespace) -> int:
    """``spft track push DIR [--uri URI]``: send what a run (or sweep) left in tracking_unsent.jsonl, and the rest of
    a run that was never tracked."""
    from spft.tracking import push

    done = push(args.folder, uri=args.uri)
    print(f"MLflow run {done['run_id']} at {done['uri']}: {done['unsent_sent']} unsent record(s) sent, "
          f"{done['epochs']} more epoch(s)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """``spft config CONFIG [KEY=VALUE ...]``: the resolved config; ``spft config --keys [TASK]``: every key."""
    if args.keys is not None:
        if args.config and args.keys != "all":
            raise ConfigError("give either CONFIG or --keys [TASK], not both")
        from spft.config.keys import keys_markdown

        task = args.config if args.keys == "all" and args.config else (None if args.keys == "all" else args.keys)
        print(keys_markdown(task), end="")
        return 0
    if not args.config:
        raise ConfigError("CONFIG is required (or --keys [TASK] to list every key)")
    from spft.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from spft import __version__

    parser = argparse.ArgumentParser(prog="spft", description="Stabilized Progressive Fine-Tuning (SPFT)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"spft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train with the SPFT recipe (or --resume a killed run)")
    p.add_argument("config", nargs="?", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. optim.lr_head=1e-4 data.root=/data/x")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.ckpt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run directory's best (EMA) weights on a split")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. data.csv=/other/labels.csv")
    p.add_argument("--split", default=None, choices=["train", "val", "test"],
                   help="split to score (default: test of the run's own data; every row of other data)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--out", metavar="FILE_OR_DIR", help="where the files go: a folder, or FILE.json (+ FILE.csv)")
    p.add_argument("--name", help="name of the files: metrics_NAME.json, predictions_NAME.csv (default: the data "
                                  "file's name for other data)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=cmd_evaluate, locks_run="run_dir")

    p = sub.add_parser("predict", help="predict new images with a run's best (EMA) weights or an export folder")
    p.add_argument("source", metavar="RUN_OR_EXPORT", help="a run directory or an `spft export` folder")
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="image files (PNG 8/16-bit, JPEG, DICOM ...), folders (recursive), globs, or CSV files")
    p.add_argument("--out", metavar="FILE", help="the table to write (default ./predictions_<run name>.csv); inputs "
                                                 "that fail are listed in <FILE stem>.failed.csv")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out (and its .failed.csv) when it exists; without it an existing --out is refused "
                        "before predicting")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="run directories: which weights")
    p.add_argument("--image-column", default=None, help="CSV inputs: the image column (default: the run's "
                                                         "data.image_column, else path / image / Image Index)")
    p.add_argument("--root", default=None, help="CSV inputs: relative paths start here (default: the CSV's folder)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, CPUs))")
    p.add_argument("--engine", default=None, choices=["torch", "onnx"],
                   help="classification: what runs the model's forward (all else is the same). torch (default; "
                        "measured faster than onnxruntime on the CPU at RAD-DINO size; the only one with --heatmaps); "
                        "onnx: the export folder's model.onnx (spft export --format onnx) in onnxruntime on the CPU")
    p.add_argument("--prompts", metavar="CSV_OR_RUN", help="segmentation (required): box prompts, a CSV (id, "
                                                          "structure, x1, y1, x2, y2) or a detection run / its "
                                                          "predictions CSV")
    p.add_argument("--heatmaps", metavar="DIR", help="also write heatmaps: DIR/<image>__<class>.npy (float32, image "
                                                     "size) + .png overlay, listed in DIR/heatmaps.csv")
    p.add_argument("--heatmap-classes", metavar="A,B", help="classes to map (default: those predicted positive at "
                                                            "the run's thresholds; 'all': every class)")
    p.add_argument("--heatmap-method", default="gradcam", choices=["gradcam", "rollout"],
                   help="gradcam (per class; ViT patch tokens or CNN last stage) or rollout (attention rollout, ViT, "
                        "one class-agnostic map per image)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="a run as a self-contained model folder (safetensors + configs + model card)")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to create (new or empty)")
    p.add_argument("--format", default="safetensors", choices=["safetensors", "onnx", "torchscript"],
                   help="safetensors (default); onnx / torchscript add model.onnx / model.torchscript.pt")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="the whole SPFT pipeline on synthetic phantoms with a small pretrained encoder "
                                    "(CPU, a few minutes; about 1 more on first use to pretrain the encoder)")
    p.add_argument("--out", help="run directory (default runs/demo/<timestamp>)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of configs/phantom_cxr_pretrained.yaml")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="inspect a dataset copy")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="per-split counts, leakage, missing (and with --scan unreadable) files")
    p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. data.root=/data/nih")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--scan", action="store_true", help="decode every image (parallel, with a progress bar)")
    p.add_argument("--headers", action="store_true", help="check every image's header and end, the quick check "
                                                           "spft train runs first (parallel, progress bar)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, CPUs))")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser("prepare", help="one-off preparation steps")
    prepare_sub = p.add_subparsers(dest="prepare_command", required=True)
    p = prepare_sub.add_parser("cache", help="write every image once at the model's input size into data.image_cache")
    p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. data.image_cache=/scratch/spft-cache")
    p.add_argument("--workers", type=int, default=None, help="threads (default: min(8, CPUs))")
    p.set_defaults(func=cmd_prepare_cache)
    for name, what in (("vindr-cxr", "VinDr-CXR DICOMs + box CSV"), ("tbx11k", "TBX-11K COCO json")):
        p = prepare_sub.add_parser(name, help=f"{what} -> Ultralytics detection dataset (resumable)")
        p.add_argument("config", help=f"experiment YAML (configs/{name.replace('-', '_')}_yolov8.yaml)")
        p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. data.root=/data/x")
        p.set_defaults(func=cmd_prepare_detection)

    p = sub.add_parser("cache", help="the stage-1 feature cache under $SPFT_CACHE/features: list or clean it")
    cache_sub = p.add_subparsers(dest="cache_command", required=True)
    p = cache_sub.add_parser("list", help="every entry with its size and when it was last used")
    p.set_defaults(func=cmd_cache)
    p = cache_sub.add_parser("clean", help="remove least-recently-used entries down to the cap ($SPFT_CACHE_MAX_GB)")
    p.add_argument("--max-gb", type=float, default=None, help="keep at most this many GB (default: the cap)")
    p.add_argument("--all", action="store_true", help="remove every entry")
    p.set_defaults(func=cmd_cache)

    from spft.experiments.parallel import add_parallel_options
    from spft.experiments.slurm import add_slurm_arguments

    sweep_help = "KEY=VALUE overrides for every run (not seed or run.dir: the sweep sets them)"
    p = sub.add_parser("repeat", help="one run per seed, each in its own process; finished runs are skipped")
    p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help=sweep_help)
    p.add_argument("--seeds", default="0,1,2", help="seeds, e.g. 0,1,2 or 0-4 (default 0,1,2)")
    p.add_argument("--out", help="sweep directory (default runs/<config name>/repeat)")
    add_parallel_options(p)
    add_slurm_arguments(p)
    p.set_defaults(func=cmd_repeat)

    p = sub.add_parser("ablate", help="an ablation study: every overlay x every seed, finished runs skipped")
    p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help=sweep_help)
    p.add_argument("--study", default="ladder",
                   help="ladder | depth | probe | class_weights | path/to/study.yaml (default ladder)")
    p.add_argument("--seeds", default="0,1,2", help="seeds, e.g. 0,1,2 or 0-4 (default 0,1,2)")
    p.add_argument("--out", help="sweep directory (default runs/<config name>/ablate-<study>)")
    add_parallel_options(p)
    add_slurm_arguments(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("report", help="tables (Markdown/CSV/LaTeX), figures and report.html from a sweep's runs")
    p.add_argument("sweep_dir", help="a repeat/ablate sweep directory (or one run directory)")
    p.add_argument("--out", help="report directory (default SWEEP_DIR/report)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap replicates per run (1000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling (0)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("track", help="experiment tracking (MLflow): send what a run could not send")
    track_sub = p.add_subparsers(dest="track_command", required=True)
    p = track_sub.add_parser("push", help="send a run's (or sweep's) tracking_unsent.jsonl; a run never tracked is "
                                          "sent whole to --uri")
    p.add_argument("folder", metavar="RUN_OR_SWEEP", help="a run directory or a sweep directory")
    p.add_argument("--uri", help="tracking URI (default: the one in tracking.json, else the run's "
                                 "tracking.mlflow.uri)")
    p.set_defaults(func=cmd_track_push)

    p = sub.add_parser("config", help="print a resolved config (only what applies to its task), or --keys: every key")
    p.add_argument("config", nargs="?", help="experiment YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. optim.lr_head=1e-4")
    p.add_argument("--keys", nargs="?", const="all", metavar="TASK",
                   help="list every key (type, default, tasks, doc) as Markdown; TASK: only the keys it honours")
    p.set_defaults(func=cmd_config)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser):
    """Every (sub)command parser that runs a command, however deeply nested (``spft data check``)."""
    subs = subparser_actions(parser)
    if not subs:
        yield parser
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            yield from _leaf_parsers(child)


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` so that options and ``KEY=VALUE`` overrides mix in any order, and ``-v`` works after the
    subcommand too (``spft repeat CONFIG --seeds 0,1 optim.lr_head=1e-4 -v``)."""
    for leaf in _leaf_parsers(parser):
        if not has_option_string(leaf, "-v"):
            leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "inputs"):  # spft predict: inputs after an option (a file name may hold "=")
        args.inputs += [a for a in extra if not a.startswith("-")]
        extra = [a for a in extra if a.startswith("-")]
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = list(args.overrides or []) + overrides
    return args


def _writes_elsewhere(args: argparse.Namespace) -> bool:
    """``spft evaluate RUN --out DIR`` with DIR outside RUN only reads the run: it may be read-only."""
    out = getattr(args, "out", None)
    if not out:
        return False
    run = Path(getattr(args, args.locks_run)).resolve()
    return not Path(out).resolve().is_relative_to(run)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parse_args(parser, argv)
    _setup_logging(args.verbose)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from spft.console import is_terminal

    if not is_terminal(sys.stderr):  # a log file, a pipe: Hugging Face's "Loading weights" bars are \r frames there
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from spft.experiments.lock import lock_run, release_run_locks

    try:
        if getattr(args, "locks_run", None):  # commands that write into an existing run hold its lock
            lock_run(getattr(args, args.locks_run), args.command, read_only_ok=_writes_elsewhere(args))
        return args.func(args)
    except SpftError as exc:  # the user's to fix: one line; anything else is a bug and keeps its traceback (exit 1)
        print(f"spft {args.command}: error: {exc}", file=sys.stderr)
        if args.verbose:
            raise
        return exc.exit_code
    finally:
        release_run_locks()


if __name__ == "__main__":
    sys.exit(main())
