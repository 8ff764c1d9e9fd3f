"""`nndiff`: one subcommand per stage of the DAG; each also runs by hand (see `nndiff <stage> --help`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

log = logging.getLogger("nndiff")

# Each `cmd_<stage>` unpacks its flags and calls its stage's function (benchmarks/<stage>.py); the work lives there.


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _setup(args) -> torch.device:
    from benchmarks.distributed import local_device
    from benchmarks.train import resolve_device
    torch.set_num_threads(getattr(args, "threads", 1) or 1)
    return local_device(resolve_device(getattr(args, "device", "auto")))  # under torchrun: this rank's GPU


def _add_common(p: argparse.ArgumentParser, seed=True, device=True) -> None:
    if seed:
        p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    if device:
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def _cli_fields(cls) -> list:
    """A stage config's fields that are flags of one job (not the workflow's, e.g. FinetuneConfig.shards)."""
    from dataclasses import fields
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def _add_train(p: argparse.ArgumentParser, cls) -> None:
    for f in _cli_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=f.default,
                           help=f"default {f.default}")


def _required(p: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        p.add_argument(flag, required=True)


def _train_cfg(args, cls):
    return cls(**{f.name: getattr(args, f.name) for f in _cli_fields(cls)})


def _bench_files(args):
    """The benchmark's files of a method subcommand (fit, generate, efficiency, diagnose-autoencoder)."""
    from benchmarks.methods_runner import BenchFiles
    return BenchFiles(images=args.images, generic=args.generic, zoo=args.zoo, features=args.features,
                      encoder=args.encoder, encoder_cache=args.encoder_cache, arch=getattr(args, "arch", None))

# ----------------------------------------------------------------------------- stages


def cmd_prepare(args) -> None:
    from benchmarks.dataprep import prepare_images
    prepare_images(args.kind, args.out, root=args.root, data_root=args.data_root, seed=args.seed,
                   download=args.download, options=args.options)


def cmd_tasks(args) -> None:
    from benchmarks.dataprep import write_tasks
    write_tasks(args.images, args.out, tasks_config=args.tasks_config, seed=args.seed)


def cmd_stage1(args) -> None:
    from benchmarks.config import Stage1Config
    from benchmarks.train import run_stage1
    run_stage1(args.images, args.arch, _train_cfg(args, Stage1Config), seed=args.seed, device=_setup(args),
               out=args.out)


def cmd_features(args) -> None:
    from benchmarks.train import write_features
    write_features(args.images, args.generic, device=_setup(args), out=args.out)


def cmd_finetune(args) -> None:
    from benchmarks.config import FinetuneConfig
    from benchmarks.train import run_finetune
    run_finetune(args.images, args.generic, args.tasks, _train_cfg(args, FinetuneConfig), split=args.split,
                 shard=args.shard, n_shards=args.n_shards, seed=args.seed, device=_setup(args), out=args.out,
                 features_path=args.features, arch_name=args.arch)


def cmd_merge(args) -> None:
    from benchmarks.train import merge_shards
    merge_shards(args.shards, args.out)


def cmd_fit(args) -> None:
    from benchmarks.methods_runner import fit
    fit(args.method, args.options, _bench_files(args), args.workdir, seed=args.seed, device=_setup(args),
        out=args.out)


def cmd_generate(args) -> None:
    from benchmarks.methods_runner import generate
    generate(args.method, args.options, _bench_files(args), args.workdir, out=args.out,
             setup_device=lambda: _setup(args), tasks=args.tasks, split=args.split, control=args.control,
             sampler=args.sampler, sample_steps=args.sample_steps, prompt=args.prompt,
             image_prompt=args.image_prompt, descriptions=args.descriptions, seed=args.seed)


def cmd_efficiency(args) -> None:
    from benchmarks.config import FinetuneConfig
    from benchmarks.efficiency import run_efficiency
    run_efficiency(_bench_files(args), args.tasks, args.methods, _train_cfg(args, FinetuneConfig), split=args.split,
                   n_single=args.n_single, n_finetune=args.n_finetune, seed=args.seed, device=_setup(args),
                   out=args.out)


def cmd_novelty(args) -> None:
    from benchmarks.novelty import run_novelty
    run_novelty(args.images, args.generic, args.tasks, args.zoo, args.generated, split=args.split, out=args.out,
                label=args.label, reference_size=args.reference_size, features_path=args.features,
                arch_name=args.arch)


def cmd_diagnose(args) -> None:
    from benchmarks.diagnostics import run_swap_diagnostic
    run_swap_diagnostic(args.images, args.generic, args.tasks, split=args.split, generated=args.generated,
                        baseline=args.baseline, out=args.out, features_path=args.features, arch_name=args.arch)


def cmd_diagnose_autoencoder(args) -> None:
    from benchmarks.diagnostics import run_autoencoder_diagnostic
    run_autoencoder_diagnostic(args.method, args.options, _bench_files(args), args.workdir, args.tasks,
                               seed=args.seed, device=_setup(args), out=args.out)


def cmd_classify(args) -> None:
    from benchmarks.text2model import classify
    for path, name, prob in classify(args.pmodel, args.images, device=_setup(args)):
        print(f"{path}\t{name}\t{prob:.3f}")


def cmd_evaluate(args) -> None:
    from benchmarks.evaluate import run_evaluate
    run_evaluate(args.images, args.generic, args.tasks, args.vectors, split=args.split, out=args.out,
                 device=_setup(args), features_path=args.features, label=args.label, arch_name=args.arch)


def cmd_oracle(args) -> None:
    from benchmarks.train import write_oracle
    write_oracle(args.finetuned, args.tasks, args.split, args.out)


def cmd_headroom_cell(args) -> None:
    from benchmarks.config import FinetuneConfig
    from benchmarks.headroom import write_cell
    write_cell(args.images, args.generic, args.tasks, split=args.split, n_tasks=args.n_tasks,
               recipe=_train_cfg(args, FinetuneConfig), seed=args.seed, device=_setup(args), out=args.out,
               arch_name=args.arch, features_path=args.features)


def cmd_headroom_report(args) -> None:
    from benchmarks.headroom import cells_from_specs, write_report
    write_report(cells_from_specs(args.cell, args.csv), args.out, config=args.config, floor=args.floor)


def cmd_claims(args) -> None:
    from benchmarks.claims import write_claims
    write_claims(args.results, args.out, config=args.config, efficiency_reports=args.efficiency,
                 headroom=args.headroom)


def cmd_publish(args) -> None:
    from benchmarks.artifacts import publish
    publish(args.source, args.dest)


def cmd_report(args) -> None:
    from benchmarks.report import write_table1
    write_table1(args.results, args.out, config=args.config, stage_times=args.benchmarks,
                 **({"title": args.title} if args.title else {}))


def cmd_zoo_report(args) -> None:
    from benchmarks.report import write_zoo_report, zoo_entries
    write_zoo_report(zoo_entries(args.generic, args.zoo, args.accuracy), args.out, config=args.config)


def cmd_glue_zoo(args) -> None:
    from benchmarks.glue import write_zoo
    write_zoo(args.model, args.root, args.tasks, lora=args.lora, train=args.train, seed=args.seed,
              device=_setup(args), out=args.out)


def cmd_glue_run(args) -> None:
    from benchmarks.glue import write_cond_pdiff_report
    write_cond_pdiff_report(args.zoo, args.root, args.options, args.workdir, seed=args.seed, device=_setup(args),
                            encoder_spec=args.encoder, encoder_cache=args.encoder_cache,
                            select_examples=args.select_examples, dev_limit=args.dev_limit, out=args.out)


def cmd_ablation_report(args) -> None:
    from benchmarks.report import write_ablation
    write_ablation(args.results, args.out, config=args.config, name=args.name)


def cmd_figure(args) -> None:
    """One figure of the paper from per-task CSVs (benchmarks/figures.py): reports/<name>.md + figures/<name>.*"""
    from benchmarks.figures import FIGURES
    if args.name not in FIGURES:
        raise SystemExit(f"nndiff figure: unknown figure {args.name!r}; choose from {', '.join(sorted(FIGURES))}")
    FIGURES[args.name](args.results, args.out, config=args.config)
    log.info("figure %s -> %s", args.name, args.out)


def cmd_methods(args) -> None:
    from methods.registry import available
    for name, target in sorted(available().items()):
        print(f"{name:28s} {target}")


def cmd_check_config(args) -> None:
    """The whole config, as `snakemake -n` checks it (benchmarks/config_check.py); errors are one line."""
    from benchmarks.config_check import check_config_file
    check_config_file(args.config)
    print(f"{args.config}: valid")


def cmd_budget(args) -> None:
    from benchmarks.budget import write_budget
    write_budget(args.targets, args.out, config=args.config, cores=args.cores, snakefile=args.snakefile,
                 remaining=args.remaining)


def cmd_site(args) -> None:
    from benchmarks.site import write_page
    out = write_page(args.out, args.reports or None, reports_dir=args.reports_dir)
    log.info("results page -> %s", out)
    if args.screenshot:
        from benchmarks.browser import screenshot
        log.info("screenshot -> %s", screenshot(out, args.screenshot))

# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nndiff", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_data_parsers, _method_parsers, _evaluation_parsers, _report_parsers, _glue_parsers,
                _analysis_parsers, _tool_parsers):  # in this order in `nndiff --help`
        add(sub)
    return parser


def _data_parsers(sub) -> None:
    """prepare, tasks, stage1, features, finetune, merge: images, tasks, the generic model and the zoo."""
    from benchmarks.config import FinetuneConfig, Stage1Config
    from benchmarks.pmodels import PMODELS
    p = sub.add_parser("prepare", help="raw dataset -> uint8 32x32 images.pt")
    p.add_argument("--kind", required=True, choices=["cifar100", "miniimagenet", "caltech101", "imagefolder", "synthetic"])
    p.add_argument("--root", default="", help="dataset folder, relative to --data-root unless absolute")
    p.add_argument("--data-root", default=None, help="$NNDIFF_DATA_ROOT overrides it")
    p.add_argument("--options", type=_json, default={}, help="loader options as JSON")
    p.add_argument("--download", action="store_true", help="let torchvision download where a network exists")
    p.add_argument("--out", required=True)
    _add_common(p, device=False)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("tasks", help="images.pt -> seeded task splits (zoo, id, ood, unseen-*, padded) as JSON")
    p.add_argument("--images", required=True)
    p.add_argument("--tasks-config", type=_json, default={}, help="TasksConfig fields as JSON")
    p.add_argument("--out", required=True)
    _add_common(p, device=False)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("stage1", help="train the generic model on all classes")
    p.add_argument("--images", required=True)
    p.add_argument("--arch", required=True, choices=sorted(PMODELS))
    p.add_argument("--out", required=True)
    _add_train(p, Stage1Config)
    _add_common(p)
    p.set_defaults(func=cmd_stage1)

    p = sub.add_parser("features", help="frozen backbone features of a head-only arch (train and test)")
    _required(p, "--images", "--generic", "--out")
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("finetune", help="fine-tune one shard of a task split into p-Models (resumable)")
    _required(p, "--images", "--generic", "--tasks")
    p.add_argument("--split", default="zoo")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--n-shards", type=int, default=1)
    p.add_argument("--features", default=None, help="features.pt for head-only archs")
    p.add_argument("--arch", default=None, choices=sorted(PMODELS), help="p-Model arch (default: the generic's)")
    p.add_argument("--out", required=True)
    _add_train(p, FinetuneConfig)
    _add_common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("merge", help="concatenate fine-tuning shards")
    p.add_argument("shards", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)


def _method_parsers(sub) -> None:
    """fit, generate, diagnose-autoencoder (a method's shared flags), classify."""
    from benchmarks.pmodels import PMODELS
    for name, func, hlp in [("fit", cmd_fit, "fit a method on the training side of a benchmark"),
                            ("generate", cmd_generate, "generate p-Model vectors for a task split"),
                            ("diagnose-autoencoder", cmd_diagnose_autoencoder, "zoo p-Models through a latent "
                             "generator's autoencoder vs generated ones, on the ID tasks (cond-pdiff)")]:
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--method", required=True, help="registry name (see `nndiff methods`)")
        p.add_argument("--options", type=_json, default={}, help="method Config fields as JSON")
        p.add_argument("--images", required=name == "fit")
        p.add_argument("--generic", required=True)
        p.add_argument("--zoo", required=name == "fit")
        p.add_argument("--features", default=None)
        p.add_argument("--encoder-cache", default=None, help="folder caching text embeddings")
        p.add_argument("--encoder", type=_json, default={"name": "minilm"} if name == "fit" else None,
                       help='text encoder as JSON, e.g. {"name": "table", "options": {"path": "x.npy"}} (default '
                            'minilm; with --prompt, the one tina was fitted with)')
        p.add_argument("--arch", default=None, choices=sorted(PMODELS), help="p-Model arch (default: the generic's)")
        p.add_argument("--workdir", required=True, help="where fit leaves the method's state")
        if name == "fit":
            p.add_argument("--out", default=None, help="marker JSON written when fit succeeds (default <workdir>/fit.json)")
        if name == "diagnose-autoencoder":
            p.add_argument("--tasks", required=True)
            p.add_argument("--out", required=True, help="markdown report")
        if name == "generate":
            p.add_argument("--tasks", help="tasks JSON (needed unless --prompt)")
            p.add_argument("--split", help="task split (needed unless --prompt)")
            p.add_argument("--out", required=True, help="vectors of the split, or with --prompt the p-Model file")
            p.add_argument("--prompt", default=None, help='"apple, bear, ...": one standalone p-Model (tina)')
            p.add_argument("--image-prompt", nargs="+", default=None, metavar="IMG",
                           help="one image per class through CLIP's image encoder (tina fitted with clip)")
            p.add_argument("--descriptions", action="store_true", help="prompt with the classes' descriptions")
            p.add_argument("--sampler", default=None, help="option `sampler` (tina: ddpm, ddim, dpm-solver); with "
                                                           "--prompt, default: the one tina was fitted with")
            p.add_argument("--sample-steps", type=int, default=None,
                           help="option `sample_steps`; with --prompt, default: the fit's (with another --sampler: "
                                "that sampler's default)")
            p.add_argument("--control", default=None, choices=["shuffle", "null"],
                           help="condition control (benchmarks/controls.py): derange each task's class names "
                                "(seeded) or blank them before the method sees them; the vectors keep the true order")
        _add_common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("classify", help="label images with a p-Model file from `generate --prompt`")
    p.add_argument("pmodel")
    p.add_argument("images", nargs="+")
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_classify)


def _evaluation_parsers(sub) -> None:
    """oracle, evaluate, headroom-cell: p-Models scored on their tasks."""
    from benchmarks.config import FinetuneConfig
    from benchmarks.pmodels import PMODELS
    p = sub.add_parser("oracle", help="fine-tuned p-Models of a split as vectors (upper bound)")
    _required(p, "--finetuned", "--tasks", "--split", "--out")
    p.set_defaults(func=cmd_oracle)

    p = sub.add_parser("evaluate", help="vectors + tasks -> per-task accuracy CSV")
    _required(p, "--images", "--generic", "--tasks", "--split", "--vectors")
    p.add_argument("--features", default=None)
    p.add_argument("--label", default=None, help="method label written in the CSV")
    p.add_argument("--arch", default=None, choices=sorted(PMODELS), help="p-Model arch (default: the generic's)")
    p.add_argument("--out", required=True)
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("headroom-cell", help="fine-tuned p-Models vs classifier selection for one recipe (paired)")
    p.add_argument("--images", required=True)
    p.add_argument("--generic", required=True, help="generic model (its schedule is part of the cell)")
    p.add_argument("--tasks", required=True)
    p.add_argument("--split", default="zoo", help="task split to draw from (default zoo: never the reported OOD)")
    p.add_argument("--n-tasks", type=int, default=24, help="first N tasks of the split (default 24)")
    p.add_argument("--arch", default=None, choices=sorted(PMODELS), help="p-Model arch (default: the generic's)")
    p.add_argument("--features", default=None, help="features.pt for head-only archs")
    p.add_argument("--out", required=True, help="per-task CSV; seconds go to <out>.timing.json")
    _add_train(p, FinetuneConfig)
    _add_common(p)
    p.set_defaults(func=cmd_headroom_cell)


def _report_parsers(sub) -> None:
    """headroom-report, claims, publish, report, zoo-report."""
    p = sub.add_parser("headroom-report", help="head-room cells -> reports/headroom.md, .csv and figure")
    p.add_argument("--cell", nargs="+", required=True, help="DATASET:ARCH:SCHEDULE:EPOCHS:LR, one per CSV")
    p.add_argument("--csv", nargs="+", required=True)
    p.add_argument("--floor", type=float, default=1.0, help="head-room lower bound that counts as clear (default 1)")
    p.add_argument("--config", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_headroom_report)

    p = sub.add_parser("claims", help="per-task CSVs -> reports/claims.md: each testable claim with a verdict")
    p.add_argument("results", nargs="+", help="data/<dataset>/<arch>/results/<method>/<split>.csv files")
    p.add_argument("--efficiency", nargs="*", default=[], help="reports/efficiency-*.md (their .csv is read)")
    p.add_argument("--headroom", default=None, help="reports/headroom.csv (for the equal-accuracy claim)")
    p.add_argument("--config", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("publish", help="copy a profile's report to its committed folder (config `publish`)",
                       description="Copy one report file (reports/<profile>/..., md, csv, html, png or svg) to the "
                                   "profile's committed folder (cpu: reports/published/), atomically.")
    p.add_argument("source", help="the report file the DAG wrote, e.g. reports/table7.md")
    p.add_argument("dest", help="where it is committed, e.g. reports/published/table7.md")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("report", help="per-task CSVs -> reports/table1.md and .csv")
    p.add_argument("results", nargs="+", help="CSV files data/<dataset>/<arch>/results/<method>/<split>.csv")
    p.add_argument("--config", required=True, help="the config YAML the run used")
    p.add_argument("--benchmarks", nargs="*", default=[], help="snakemake benchmark TSVs for stage times")
    p.add_argument("--title", default=None, help="report title (default: Table 1)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("zoo-report", help="generic top-1, zoo accuracy and throughput -> reports/zoo.md")
    p.add_argument("--generic", nargs="+", required=True)
    p.add_argument("--zoo", nargs="+", required=True)
    p.add_argument("--accuracy", nargs="+", required=True, help="results/oracle/zoo.csv per (dataset, arch)")
    _required(p, "--config", "--out")
    p.set_defaults(func=cmd_zoo_report)


def _glue_parsers(sub) -> None:
    """glue-zoo, glue-run: Cond P-Diff's GLUE experiment (its Table 1)."""
    p = sub.add_parser("glue-zoo", help="GLUE LoRA zoo from a local Hugging Face model (Cond P-Diff Table 1)")
    p.add_argument("--model", required=True, help="HF model id in $HF_HUB_CACHE or a local directory")
    p.add_argument("--root", required=True, help="GLUE TSVs: <root>/<SST-2|RTE|MRPC|QNLI|CoLA>/{train,dev}.tsv")
    p.add_argument("--tasks", nargs="+", required=True, help="sst2 rte mrpc qnli cola")
    p.add_argument("--lora", type=_json, default={}, help='JSON, e.g. {"rank": 4, "targets": ["query", "value"]}')
    p.add_argument("--train", type=_json, default={}, help='JSON, e.g. {"steps": 1000, "save_last": 150}')
    p.add_argument("--out", required=True)
    _add_common(p)
    p.set_defaults(func=cmd_glue_zoo)

    p = sub.add_parser("glue-run", help="fit Cond P-Diff on a GLUE zoo, generate per task, score on dev sets")
    _required(p, "--zoo", "--root")
    p.add_argument("--options", type=_json, default={}, help="cond-pdiff options (JSON)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--encoder", type=_json, default={"name": "minilm"})
    p.add_argument("--encoder-cache", default=None)
    p.add_argument("--select-examples", type=int, default=64, help="train examples for the best-of-K rule")
    p.add_argument("--dev-limit", type=int, default=None, help="score on the first N dev examples (default all)")
    p.add_argument("--out", required=True, help="markdown report (a .csv is written beside it)")
    _add_common(p)
    p.set_defaults(func=cmd_glue_run)


def _analysis_parsers(sub) -> None:
    """ablation-report, figure, efficiency, diagnose, novelty."""
    from benchmarks.config import FinetuneConfig
    from benchmarks.pmodels import PMODELS
    p = sub.add_parser("ablation-report", help="an `ablations:` entry of the config -> reports/<name>_ablation.md")
    p.add_argument("results", nargs="+", help="per-task CSVs of the ablation's rows and its base")
    p.add_argument("--name", required=True, help="the ablation's key in the config's `ablations:`")
    _required(p, "--config", "--out")
    p.set_defaults(func=cmd_ablation_report)

    p = sub.add_parser("figure", help="a figure of the paper from per-task CSVs -> reports/<name>.md, "
                                      "figures/<name>.{png,svg,csv}")
    p.add_argument("name", help="a name of benchmarks.figures.FIGURES, e.g. fig6b (p-Acc vs number of classes)")
    p.add_argument("results", nargs="+", help="per-task CSVs (data/<dataset>/<arch>/results/<label>/<split>.csv)")
    p.add_argument("--config", default=None, help="the profile's config (labels, provenance)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("efficiency", help="seconds per personalized model: fine-tuning vs fitted methods")
    _required(p, "--images", "--generic", "--zoo", "--tasks")
    p.add_argument("--split", default="ood")
    p.add_argument("--features", default=None)
    p.add_argument("--encoder-cache", default=None)
    p.add_argument("--encoder", type=_json, default={"name": "minilm"})
    p.add_argument("--arch", default=None, choices=sorted(PMODELS))
    p.add_argument("--methods", type=json.loads, required=True,
                   help='JSON list of {"label", "method", "options", "workdir"} of fitted methods')
    p.add_argument("--n-single", type=int, default=5, help="tasks generated one call each")
    p.add_argument("--n-finetune", type=int, default=3, help="tasks fine-tuned from the generic model")
    p.add_argument("--out", required=True)
    _add_train(p, FinetuneConfig)
    _add_common(p)
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser("diagnose", help="swap body/head of generated p-Models with classifier selection")
    _required(p, "--images", "--generic", "--tasks", "--split", "--out")
    p.add_argument("--generated", required=True, help="generated vectors of the method")
    p.add_argument("--baseline", required=True, help="classifier-selection-slice vectors of the same split")
    p.add_argument("--features", default=None)
    p.add_argument("--arch", default=None, choices=sorted(PMODELS))
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("novelty", help="generated p-Models vs their nearest zoo p-Models (memorization panel)")
    _required(p, "--images", "--generic", "--tasks", "--zoo", "--out")
    p.add_argument("--split", default="ood", help="task split of the generated vectors (default ood)")
    p.add_argument("--generated", required=True, help="generated vectors of the method on --split")
    p.add_argument("--label", default=None, help="method label in the report (default: the vectors' method)")
    p.add_argument("--reference-size", type=int, default=None,
                   help="zoo p-Models whose nearest other zoo p-Model forms the reference (default all)")
    p.add_argument("--features", default=None)
    p.add_argument("--arch", default=None, choices=sorted(PMODELS))
    p.set_defaults(func=cmd_novelty)


def _tool_parsers(sub) -> None:
    """site, budget, methods, check-config."""
    p = sub.add_parser("site", help="reports/*.md and reports/figures -> one self-contained page, reports/index.html")
    p.add_argument("reports", nargs="*", help="markdown reports (default: every *.md in --reports-dir)")
    p.add_argument("--reports-dir", default=None, help="folder of the reports and figures/ (default: that of --out)")
    p.add_argument("--out", default="reports/index.html")
    p.add_argument("--screenshot", default=None, help="also save the page's top as PNG (needs /usr/bin/chromium)")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("budget", help="core-hours a target costs, from the seconds its jobs took here",
                       description="Price the jobs `snakemake -n` plans for TARGETS by the wall seconds each job's "
                                   "benchmark file (data/benchmarks/) recorded when it last ran; a job never run "
                                   "here at the median of the measured jobs most like it (same rule, method "
                                   "label, dataset and arch first, then the same method under another label). "
                                   "Prints a table per rule.")
    p.add_argument("targets", nargs="+", help="Snakemake targets, e.g. all or reports/table1.md")
    p.add_argument("--config", default=None, help="the profile's YAML (default: the Snakefile's)")
    p.add_argument("--cores", type=int, default=2, help="cores the wall-time floor assumes (default 2)")
    p.add_argument("--remaining", action="store_true", help="only the jobs left to run (default: from scratch)")
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("methods", help="list registered methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("check-config", help="validate a config YAML against the schema")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)


class _LogFormatter(logging.Formatter):
    """Timestamped log lines; a user error is one `nndiff: error: ...` line, as argparse writes its own."""

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "user_error", False):
            return super().format(record)
        trace = f"{self.formatException(record.exc_info)}\n" if record.exc_info else ""  # -v only
        return f"{trace}nndiff: error: {record.getMessage()}"


def _user_error(e: BaseException) -> str | None:
    """The one-line message of an error raised for the user (bad input, a missing file, broken YAML), or None for
    anything else: a bug keeps its traceback. A KeyError counts only when raised on purpose, with a sentence; a
    failed lookup carries just the key."""
    import yaml
    if isinstance(e, OSError) and e.filename is not None:  # a missing or unreadable file: its name and why
        text = f"{e.filename}: {e.strerror or e}"
    elif isinstance(e, KeyError):
        text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) and " " in e.args[0] else None
    elif isinstance(e, yaml.YAMLError):
        mark = getattr(e, "problem_mark", None)
        text = f"not valid YAML (line {mark.line + 1}, column {mark.column + 1}): {e.problem}" if mark else str(e)
    elif isinstance(e, (ValueError, FileNotFoundError, RuntimeError)):  # json.JSONDecodeError is a ValueError
        text = str(e)
    else:
        text = None
    return " ".join(text.splitlines()) if text is not None else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    try:
        args.func(args)
    except Exception as e:
        message = _user_error(e)
        if message is None:
            raise
        # one line; the traceback too with -v (through the `nndiff` logger, so callers and tests see it)
        log.error("%s", message, exc_info=args.verbose, extra={"user_error": True})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
