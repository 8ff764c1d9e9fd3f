"""`nndiff`: one subcommand per stage of the DAG; each also runs by hand (see `nndiff <stage> --help`)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger("nndiff")


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


def _add_train(p: argparse.ArgumentParser, cls) -> None:
    from dataclasses import fields
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=f.default,
                           help=f"default {f.default}")


def _train_cfg(args, cls):
    from dataclasses import fields
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

# ----------------------------------------------------------------------------- stages


def cmd_prepare(args) -> None:
    from benchmarks.datasets import prepare, resolve_root
    options = dict(args.options or {})
    root = resolve_root(args.data_root, args.root or "") if args.kind != "synthetic" else Path(".")
    start = time.time()
    data = prepare(args.kind, root, seed=args.seed, download=args.download, **options)
    data.save(args.out)
    log.info("prepared %s: %d train / %d test images, %d classes in %.1fs -> %s", args.kind, len(data.train_y),
             len(data.test_y), len(data.classes), time.time() - start, args.out)


def cmd_tasks(args) -> None:
    from benchmarks.config import stage_config
    from benchmarks.datasets import ImageData
    from benchmarks.tasks import TasksConfig, make_tasks, save_tasks
    data = ImageData.load(args.images)
    cfg = stage_config(TasksConfig, args.tasks_config)
    tasks = make_tasks(data.classes, data.superclasses, cfg, args.seed)
    save_tasks(tasks, args.out)
    log.info("tasks: %s -> %s", {k: len(v) for k, v in tasks["splits"].items()}, args.out)


def cmd_stage1(args) -> None:
    from benchmarks import artifacts
    from benchmarks.config import Stage1Config
    from benchmarks.datasets import ImageData
    from benchmarks.pmodels import get_arch
    from benchmarks.train import backbone_features, predict, train_generic
    device = _setup(args)
    data, arch = ImageData.load(args.images), get_arch(args.arch)
    feats = None if arch.train_backbone_in_stage1 else backbone_features(arch, data.train_x, device)
    start = time.perf_counter()
    generic = train_generic(arch, data, _train_cfg(args, Stage1Config), seed=args.seed, device=device, features=feats)
    seconds = time.perf_counter() - start
    model = generic.module().to(device)
    test = data.test_x if arch.train_backbone_in_stage1 else backbone_features(arch, data.test_x, device)
    logits = predict(model if arch.train_backbone_in_stage1 else model.fc, test)
    generic.meta["test_top1"] = 100.0 * (logits.argmax(1) == data.test_y).float().mean().item()
    artifacts.write_timing(args.out, seconds=seconds)
    generic.save(args.out)
    log.info("generic %s: train acc %.2f%%, test top-1 over %d classes %.2f%% (%.0fs) -> %s", arch.name,
             100 * generic.meta["train_acc"], len(data.classes), generic.meta["test_top1"], seconds, args.out)


def cmd_features(args) -> None:
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.train import Generic, backbone_features
    device = _setup(args)
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    feats = {"train": backbone_features(generic.arch, data.train_x, device, generic),
             "test": backbone_features(generic.arch, data.test_x, device, generic)}
    artifacts.save_torch(feats, args.out)
    log.info("features %s: train %s, test %s -> %s", generic.arch.name, tuple(feats["train"].shape),
             tuple(feats["test"].shape), args.out)


def _arch(args, generic):
    """The p-Model arch: --arch when given (e.g. a LoRA variant of the generic's arch), else the generic's."""
    from benchmarks.pmodels import get_arch
    arch = get_arch(args.arch) if getattr(args, "arch", None) else generic.arch
    if arch.base != generic.arch.name:
        raise ValueError(f"p-Model arch {arch.name!r} starts from a {arch.base!r} generic model, got {generic.arch.name!r}")
    return arch


def _features(path, split: str):
    from benchmarks import artifacts
    return artifacts.load_torch(path, what="backbone features from `nndiff features`", keys=("train", "test"))[split] \
        if path else None


def _vectors(path) -> dict:
    """A vectors file of `nndiff generate` or `nndiff oracle`; anything else fails naming it."""
    from benchmarks import artifacts
    return artifacts.load_torch(path, what="vectors from `nndiff generate` or `nndiff oracle`",
                                keys=("task_ids", "theta"))


def cmd_finetune(args) -> None:
    import shutil

    from benchmarks.config import FinetuneConfig
    from benchmarks.datasets import ImageData
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import Generic, finetune_tasks, save_zoo
    device = _setup(args)
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    tasks = get_split(load_tasks(args.tasks), args.split)[args.shard::args.n_shards]
    parts = Path(str(args.out) + ".parts")
    start = time.time()
    cfg = _train_cfg(args, FinetuneConfig)
    record = finetune_tasks(generic, data, tasks, cfg, seed=args.seed, device=device, parts_dir=parts,
                            features=_features(args.features, "train"), arch=_arch(args, generic))
    save_zoo(record, args.out)  # seconds per p-Model go to <out>.timing.json
    shutil.rmtree(parts, ignore_errors=True)
    n = len(tasks)
    log.info("fine-tuned %d p-Models in %.1fs (%.1f per minute); mean train acc %.2f%% -> %s", n,
             time.time() - start, 60 * n / max(time.time() - start, 1e-9),
             100 * record["train_acc"].mean().item() if n else float("nan"), args.out)


def cmd_merge(args) -> None:
    from benchmarks.train import load_zoo, merge_zoo, save_zoo
    merged = merge_zoo([load_zoo(p) for p in args.shards])
    save_zoo(merged, args.out)
    log.info("merged %d shards: %d p-Models -> %s", len(args.shards), len(merged["task_ids"]), args.out)


def _bench(args, device):
    from benchmarks.datasets import ImageData
    from benchmarks.train import Generic
    from methods.base import Bench, Zoo
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    zoo = Zoo.load(args.zoo)
    return Bench(arch=_arch(args, generic), generic=generic, zoo=zoo, train_x=data.train_x,
                 train_y=data.train_y, class_names=list(data.classes), num_classes=len(zoo.classes[0]),
                 train_features=_features(args.features, "train"), seed=args.seed, device=device,
                 encoder_cache=Path(args.encoder_cache) if args.encoder_cache else None,
                 text_encoder_spec=args.encoder, dataset=data.meta.get("kind", ""))


def _method(args):
    from methods.registry import build_method
    return build_method(args.method, args.options)


def _partial_workdir(workdir: Path) -> Path:
    """Where `fit` writes: `<workdir>.partial`, moved onto `workdir` only once the fit is complete
    (`_put_in_place`), so a failed or killed fit leaves the last complete state where `generate` reads it.
    The partial dir outlives a failure, so a method's resume checkpoint in it serves the next try. It starts
    with the complete state's `state.pt`, hard-linked (`save_state` replaces files, never writes into them), so
    a method that finds itself fitted with these options already (Tina) does not train again."""
    from benchmarks import artifacts
    partial, old = workdir.with_name(f"{workdir.name}.partial"), workdir.with_name(f"{workdir.name}.old")
    if old.is_dir() and not workdir.exists():  # a move cut between its two renames: `old` is the complete state
        old.rename(workdir)
    partial.mkdir(parents=True, exist_ok=True)
    for name in ("state.pt", f"state.pt{artifacts.TIMING_SUFFIX}"):
        src, dst = workdir / name, partial / name
        if src.is_file() and not dst.exists():
            try:
                os.link(src, dst)
            except FileExistsError:  # another torchrun rank linked it first
                pass
            except OSError:  # no hard links on this file system: a copy, put in place atomically
                artifacts.write_bytes(src.read_bytes(), dst)
    return partial


def _put_in_place(partial: Path, workdir: Path) -> None:
    """Replace `workdir` by the complete `partial`; the previous state goes aside first and is removed last."""
    import shutil
    old = workdir.with_name(f"{workdir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if workdir.exists():
        workdir.rename(old)
    partial.rename(workdir)
    shutil.rmtree(old, ignore_errors=True)


def cmd_fit(args) -> None:
    from benchmarks import artifacts
    device = _setup(args)
    bench, method = _bench(args, device), _method(args)
    start = time.perf_counter()
    workdir = Path(args.workdir)
    partial = _partial_workdir(workdir)  # a failed fit never touches the complete state in `workdir`
    method.setup(bench, partial)
    method.fit(bench, partial)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return
    _put_in_place(partial, workdir)
    seconds, out = time.perf_counter() - start, args.out or Path(args.workdir) / "fit.json"
    artifacts.write_timing(out, seconds=seconds)
    artifacts.write_json({"method": args.method, "options": args.options, **artifacts.provenance(args.options)}, out)
    log.info("fitted %s in %.1fs -> %s", args.method, seconds, args.workdir)


def cmd_generate(args) -> None:
    from benchmarks import artifacts
    from benchmarks.evaluate import check_vectors
    from benchmarks.tasks import get_split, load_tasks
    from methods.base import Tasks
    from benchmarks.controls import check_control, generate_with_control
    # A condition control (config variants' `control`, benchmarks/controls.py) is the harness's, never the
    # method's: taken out of the options before the method is built; the workflow passes it in the options.
    args.options = dict(args.options or {})
    control = check_control(args.options.pop("control", None))
    if args.control and control and args.control != control:
        raise ValueError(f"--control {args.control!r} contradicts the options' control {control!r}")
    control = args.control or control
    for key in ("sampler", "sample_steps"):  # --sampler / --sample-steps: the method's options of those names
        if getattr(args, key) is not None:
            args.options[key] = getattr(args, key)
    if args.prompt is not None or args.image_prompt:
        if control:
            raise ValueError("condition controls apply to task splits (--tasks/--split), not to --prompt")
        return _generate_pmodel(args)
    missing = [f"--{n}" for n in ("images", "zoo", "tasks", "split") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"generate needs {' '.join(missing)} (or --prompt for one standalone p-Model)")
    args.encoder = args.encoder or {"name": "minilm"}
    device = _setup(args)
    bench, method = _bench(args, device), _method(args)
    method.setup(bench, args.workdir)
    tasks = Tasks.from_records(get_split(load_tasks(args.tasks), args.split))
    start = time.perf_counter()
    theta = generate_with_control(method, tasks, control, seed=args.seed, label=args.method)  # tasks: true order
    seconds = time.perf_counter() - start
    k = len(tasks.classes[0]) if len(tasks) and method.output_space == "task" else None  # padded-<k>: k-class p-Models
    n_params = method.bench.arch.layout(k).n_params if k else method.layout.n_params
    check_vectors(theta, len(tasks), n_params, method=args.method, task_ids=tasks.ids)
    artifacts.write_timing(args.out, seconds=seconds)
    artifacts.save_torch({"method": args.method, "split": args.split, "task_ids": tasks.ids,
                          "output_space": method.output_space, "theta": theta.detach().cpu().float(),
                          **({"control": control} if control else {})}, args.out)
    log.info("generated %d p-Models with %s%s in %.2fs -> %s", len(tasks), args.method,
             f" under the {control!r} condition control" if control else "", seconds, args.out)


def _generate_pmodel(args) -> None:
    """`generate --prompt`: one standalone p-Model file from a text or image prompt (benchmarks/text2model.py)."""
    from benchmarks.text2model import _promptable, generate_pmodel, load_bench, parse_prompt
    if args.method != "tina":
        raise ValueError(f"--prompt and --image-prompt generate with --method tina, got {args.method!r}")
    device = _setup(args)
    fitted = _promptable(args.method).fitted_bench(args.workdir)  # its encoder, class counts and sampler
    bench = load_bench(args.generic, args.workdir, encoder=args.encoder, encoder_cache=args.encoder_cache,
                       seed=args.seed, device=device, fitted=fitted)  # the encoder defaults to the fitted one
    out = generate_pmodel(args.workdir, bench, parse_prompt(args.prompt or ""), args.out, fitted=fitted,
                          image_prompt=args.image_prompt, descriptions=args.descriptions, options=args.options)
    log.info("generated a p-Model with tina -> %s", out)


def cmd_efficiency(args) -> None:
    """Seconds per personalized model, all in this one process: fine-tuning and each fitted method."""
    from benchmarks import artifacts
    from benchmarks.config import FinetuneConfig
    from benchmarks.efficiency import time_finetune, time_generate, write_efficiency
    from benchmarks.tasks import get_split, load_tasks
    from methods.base import Tasks
    from methods.registry import build_method
    device = _setup(args)
    records = get_split(load_tasks(args.tasks), args.split)
    bench = _bench(args, device)
    rows = [time_finetune(bench.generic, bench.train_x, bench.train_y, records[:args.n_finetune],
                          _train_cfg(args, FinetuneConfig), seed=args.seed, device=device, arch=bench.arch,
                          features=bench.train_features)]
    tasks = Tasks.from_records(records)
    for spec in args.methods:
        options = {k: v for k, v in spec.get("options", {}).items() if k != "control"}  # a control times alike
        method = build_method(spec["method"], options).setup(bench, spec["workdir"])
        rows += time_generate(spec["label"], method, tasks, args.n_single)
    prov = artifacts.provenance()
    write_efficiency(rows, args.out, header=f"Split `{args.split}`, {len(tasks)} tasks, seed {args.seed}; "
                     f"{prov['hardware']}; commit `{prov['commit']}`.")


def cmd_novelty(args) -> None:
    """Memorization panel (benchmarks/novelty.py): markdown, CSV of the plotted numbers, PNG and SVG figure."""
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.novelty import dataset_of, novelty_table, write_report
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import Generic, load_zoo
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    arch = _arch(args, generic)
    gen, zoo = _vectors(args.generated), load_zoo(args.zoo)
    if gen.get("output_space", "task") != "task":
        raise ValueError(f"{args.generated}: novelty compares task-space p-Models; these vectors answer among all "
                         "classes")
    by_id = {t["id"]: t for t in get_split(load_tasks(args.tasks), args.split)}
    missing = [t for t in gen["task_ids"] if t not in by_id]
    if missing:
        raise ValueError(f"vectors name tasks not in split {args.split!r}: {missing[:5]}")
    tasks = [by_id[t] for t in gen["task_ids"]]
    label = args.label or gen.get("method", "?")
    table = novelty_table(generic, arch, data.test_x, data.test_y, tasks, gen["theta"], zoo,
                          features=_features(args.features, "test"), reference_size=args.reference_size)
    prov = artifacts.provenance()
    write_report(table, args.out, label=label, arch=arch, split=args.split, dataset=dataset_of(args.generated),
                 footer=f"Commit `{prov['commit']}`; {prov['hardware']}.")
    g = table[table.kind == "generated"]
    log.info("novelty of %s: median distance to the zoo %.4g vs zoo-to-zoo %.4g -> %s", label, g["distance"].median(),
             table.loc[table.kind == "zoo", "distance"].median(), args.out)


def cmd_diagnose(args) -> None:
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.diagnostics import swap_table
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import Generic
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    arch = _arch(args, generic)
    gen, base = _vectors(args.generated), _vectors(args.baseline)
    if gen["task_ids"] != base["task_ids"] or base.get("output_space", "task") != "task":
        raise ValueError("--baseline must be task-space vectors (classifier-selection-slice) of the same tasks")
    by_id = {t["id"]: t for t in get_split(load_tasks(args.tasks), args.split)}
    tasks = [by_id[t] for t in gen["task_ids"]]
    table = swap_table(generic, data.test_x, data.test_y, tasks, arch.layout(len(tasks[0]["classes"])), gen["theta"],
                       base["theta"], arch=arch, features=_features(args.features, "test"))
    prov = artifacts.provenance()
    title = f"Swap diagnostic: {gen.get('method', '?')} vs classifier selection ({args.split} tasks)"
    _write_table_report(args.out, title,
                        "Body = every generated parameter before the classifier (a LoRA arch: the adapters); head = "
                        "the classifier rows. Same tasks in every row.", table,
                        f"Commit `{prov['commit']}`; {prov['hardware']}.")


def cmd_diagnose_autoencoder(args) -> None:
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.diagnostics import autoencoder_table
    from benchmarks.tasks import get_split, load_tasks
    from methods.base import Reconstructs, Tasks
    device, method = _setup(args), _method(args)
    if not isinstance(method, Reconstructs):  # before loading the benchmark: fail fast
        raise ValueError(f"method {args.method!r} has no autoencoder (no reconstruct()); use `nndiff diagnose`")
    bench = _bench(args, device)
    method.setup(bench, args.workdir)
    tasks = get_split(load_tasks(args.tasks), "id")
    index = {t: i for i, t in enumerate(bench.zoo.task_ids)}
    zoo = bench.zoo.theta[[index[t["id"]] for t in tasks]].float()
    records = Tasks.from_records(tasks)
    data = ImageData.load(args.images)
    table = autoencoder_table(bench.generic, data.test_x, data.test_y, tasks, zoo=zoo,
                              reconstructed=method.reconstruct(zoo, records), generated=method.generate(records),
                              arch=bench.arch, features=_features(args.features, "test"))
    prov = artifacts.provenance(args.options)
    title = f"Where {args.method} loses accuracy: autoencoder or diffusion ({len(tasks)} ID tasks)"
    _write_table_report(args.out, title,
                        "The zoo's own p-Models, the same through the fitted autoencoder (the best a latent sample can "
                        "be), and the generated p-Models of the same tasks; paired with the zoo p-Model.", table,
                        f"Options `{args.options}`; seed {args.seed}; commit `{prov['commit']}`; {prov['hardware']}.")


def _write_table_report(out: str, title: str, intro: str, table, footer: str) -> None:
    """A diagnostic's markdown: title, what the rows are, the table, provenance."""
    from benchmarks import artifacts
    artifacts.write_text("\n".join([f"# {title}", "", intro, "", table.to_markdown(index=False, floatfmt=".2f"), "",
                                     footer, ""]), out)


def cmd_classify(args) -> None:
    from benchmarks.text2model import classify
    for path, name, prob in classify(args.pmodel, args.images, device=_setup(args)):
        print(f"{path}\t{name}\t{prob:.3f}")


def cmd_evaluate(args) -> None:
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.evaluate import evaluate, summarize
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import Generic
    device = _setup(args)
    data, generic = ImageData.load(args.images), Generic.load(args.generic)
    vec = _vectors(args.vectors)
    by_id = {t["id"]: t for t in get_split(load_tasks(args.tasks), args.split)}
    missing = [t for t in vec["task_ids"] if t not in by_id]
    if missing:
        raise ValueError(f"vectors name tasks not in split {args.split!r}: {missing[:5]}")
    tasks = [by_id[t] for t in vec["task_ids"]]
    df = evaluate(generic, data.test_x, data.test_y, tasks, vec["theta"], output_space=vec.get("output_space", "task"),
                  features=_features(args.features, "test"), method=vec.get("method", "?"), device=device,
                  arch=_arch(args, generic))
    df.insert(0, "split", args.split)
    df.insert(0, "method", args.label or vec.get("method", "?"))
    spread = _collapse_check(df, vec, tasks, _arch(args, generic))
    with artifacts.atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False)
    s = summarize(df["accuracy"])
    log.info("%s on %s: p-Acc %.2f +- %.2f (95%% CI, n=%d) -> %s", df["method"][0], args.split, s["mean"],
             s["ci95"], s["n"], args.out)
    if spread and spread["identical"]:
        log.warning("%s on %s: the generated p-Models are near-identical across tasks (mean pairwise cosine of "
                    "the heads %.4f > %g): collapsed generator", df["method"][0], args.split,
                    spread["gen_head_cos"], spread["limit"])
    if spread and spread["collapse"]:
        log.warning("%s on %s: p-Acc %.2f +- %.2f reaches chance (%.2f%%): collapse", df["method"][0], args.split,
                    s["mean"], s["ci95"], spread["chance"])


def _collapse_check(df, vec, tasks, arch) -> dict:
    """Collapse alarm (benchmarks/report.py): head similarity across tasks of task-space vectors, written as
    columns of the per-task CSV, and whether p-Acc's interval reaches chance."""
    from benchmarks.report import HEAD_COS_LIMIT, collapse_flags, generated_spread
    if vec.get("output_space", "task") == "task" and len({len(t["classes"]) for t in tasks}) == 1:
        for key, value in generated_spread(vec["theta"], arch.layout(len(tasks[0]["classes"]))).items():
            df[key] = value
    return {**collapse_flags(df), **({"gen_head_cos": df["gen_head_cos"].iloc[0]} if "gen_head_cos" in df else {}),
            "limit": HEAD_COS_LIMIT}


def cmd_oracle(args) -> None:
    """Fine-tuned p-Models as vectors for the evaluation engine (the upper bound)."""
    from benchmarks import artifacts
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import load_zoo
    rec = load_zoo(args.finetuned)
    wanted = [t["id"] for t in get_split(load_tasks(args.tasks), args.split)]
    pos = {t: i for i, t in enumerate(rec["task_ids"])}
    missing = [t for t in wanted if t not in pos]
    if missing:
        raise ValueError(f"{len(missing)} task(s) of split {args.split!r} were not fine-tuned, e.g. {missing[:3]}")
    rows = [pos[t] for t in wanted]
    if rec["seconds"] is not None:  # fine-tuning seconds per p-Model of these tasks, mean
        artifacts.write_timing(args.out, seconds=float(rec["seconds"][rows].mean()) if rows else 0.0)
    artifacts.save_torch({"method": "oracle", "split": args.split, "task_ids": wanted, "output_space": "task",
                          "theta": rec["theta"][rows]}, args.out)


def cmd_headroom_cell(args) -> None:
    from benchmarks.config import FinetuneConfig
    from benchmarks.headroom import run_cell
    from benchmarks.train import Generic
    device = _setup(args)
    df = run_cell(args.images, args.generic, args.tasks, split=args.split, n_tasks=args.n_tasks,
                  recipe=_train_cfg(args, FinetuneConfig), seed=args.seed, device=device, out=args.out,
                  arch=_arch(args, Generic.load(args.generic)), features_path=args.features)
    log.info("head-room %d epochs lr %g: fine-tuned - CS %+.2f over %d tasks -> %s", args.epochs, args.lr,
             df["gain"].mean(), len(df), args.out)


def cmd_headroom_report(args) -> None:
    from benchmarks.headroom import write_report
    cells = [dict(zip(("dataset", "arch", "schedule", "epochs", "lr"), spec.split(":")), csv=csv)
             for spec, csv in zip(args.cell, args.csv)]
    if len(args.cell) != len(args.csv):
        raise ValueError("give one --cell DATASET:ARCH:SCHEDULE:EPOCHS:LR per CSV, in the same order")
    for c in cells:
        c["epochs"], c["lr"] = int(c["epochs"]), float(c["lr"])
    write_report(cells, args.out, config=args.config, floor=args.floor)


def cmd_claims(args) -> None:
    from benchmarks.claims import write_ledger
    table = write_ledger(args.results, args.out, config=args.config,
                         efficiency=[str(Path(p).with_suffix(".csv")) for p in args.efficiency],
                         headroom=args.headroom)
    log.info("claims ledger: %s -> %s", table["verdict"].value_counts().to_dict(), args.out)


def cmd_publish(args) -> None:
    from benchmarks import artifacts
    artifacts.write_bytes(Path(args.source).read_bytes(), args.dest)
    log.info("published %s -> %s", args.source, args.dest)


def cmd_report(args) -> None:
    from benchmarks.report import write_table1
    write_table1(args.results, args.out, config=args.config, stage_times=args.benchmarks,
                 **({"title": args.title} if args.title else {}))


def cmd_zoo_report(args) -> None:
    from benchmarks.report import write_zoo_report
    if not (len(args.generic) == len(args.zoo) == len(args.accuracy)):
        raise ValueError("give one --generic, --zoo and --accuracy per (dataset, arch), in the same order")
    entries = [{"generic": g, "zoo": z, "accuracy": a} for g, z, a in zip(args.generic, args.zoo, args.accuracy)]
    write_zoo_report(entries, args.out, config=args.config)


def cmd_glue_zoo(args) -> None:
    from benchmarks import artifacts
    from benchmarks.glue import ZooConfig, build_zoo, load_backbone
    device = _setup(args)
    backbone, tokenizer = load_backbone(args.model)
    cfg = ZooConfig(**args.lora, **args.train)
    zoo = build_zoo(backbone, tokenizer, args.root, args.tasks, cfg, seed=args.seed, device=device)
    artifacts.save_torch({**zoo, "model": args.model}, args.out)
    log.info("GLUE zoo: %d vectors of %d parameters -> %s", len(zoo["task_ids"]), zoo["theta"].shape[1], args.out)


def cmd_glue_run(args) -> None:
    from benchmarks import artifacts
    from benchmarks.glue import run_cond_pdiff
    device = _setup(args)
    zoo = artifacts.load_torch(args.zoo)
    df = run_cond_pdiff(zoo, zoo["model"], args.root, args.options, args.workdir, seed=args.seed, device=device,
                        encoder_spec=args.encoder, encoder_cache=Path(args.encoder_cache) if args.encoder_cache else None,
                        select_examples=args.select_examples, dev_limit=args.dev_limit)
    prov = artifacts.provenance(args.options)
    artifacts.write_text("\n".join([
        f"# Cond P-Diff on GLUE LoRA zoos ({zoo['model']})", "",
        "Dev-set accuracy and Matthews correlation (%, CoLA's metric) of each vector; one zoo per task from the",
        f"last {sum(1 for t in zoo['glue_task'] if t == zoo['glue_task'][0])} fine-tuning steps.", "",
        df.to_markdown(index=False, floatfmt=".2f"), "",
        f"Options `{args.options}`, LoRA `{zoo['lora']}`; seed {args.seed}; commit `{prov['commit']}`; "
        f"{prov['hardware']}.", ""]), args.out)
    with artifacts.atomic_path(Path(args.out).with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)


def cmd_ablation_report(args) -> None:
    from benchmarks.report import write_ablation
    write_ablation(args.results, args.out, config=args.config, name=args.name)


def cmd_figure(args) -> None:
    """One figure of the paper from per-task CSVs (benchmarks/figures.py): reports/<name>.md + figures/<name>.*"""
    from benchmarks.figures import FIGURES
    FIGURES[args.name](args.results, args.out, config=args.config)
    log.info("figure %s -> %s", args.name, args.out)


def cmd_methods(args) -> None:
    from methods.registry import available
    for name, target in sorted(available().items()):
        print(f"{name:28s} {target}")


def cmd_check_config(args) -> None:
    """The whole config, as `snakemake -n` checks it (benchmarks/workflow.py): the schema, then every method's
    options, variants, ablations, the labels reports name and the splits. Errors are one line naming the file."""
    import yaml

    from benchmarks.config import profile_path
    from benchmarks.workflow import check_config
    path = profile_path(args.config)
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark, start = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        context = f"{e.context} (line {start.line + 1}): " if start and getattr(e, "context", None) else ""
        raise ValueError(f"{where}: not valid YAML: {context}{getattr(e, 'problem', None) or e}") from None
    try:
        check_config(cfg)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    print(f"{args.config}: valid")


def cmd_site(args) -> None:
    from benchmarks.site import write_page
    out = write_page(args.out, args.reports or None, reports_dir=args.reports_dir)
    log.info("results page -> %s", out)
    if args.screenshot:
        from benchmarks.browser import screenshot
        log.info("screenshot -> %s", screenshot(out, args.screenshot))

# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.config import FinetuneConfig, Stage1Config
    from benchmarks.pmodels import PMODELS
    parser = argparse.ArgumentParser(prog="nndiff", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.add_argument("--images", required=True)
    p.add_argument("--generic", required=True)
    p.add_argument("--out", required=True)
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("finetune", help="fine-tune one shard of a task split into p-Models (resumable)")
    p.add_argument("--images", required=True)
    p.add_argument("--generic", required=True)
    p.add_argument("--tasks", required=True)
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

    p = sub.add_parser("oracle", help="fine-tuned p-Models of a split as vectors (upper bound)")
    p.add_argument("--finetuned", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_oracle)

    p = sub.add_parser("evaluate", help="vectors + tasks -> per-task accuracy CSV")
    p.add_argument("--images", required=True)
    p.add_argument("--generic", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--vectors", required=True)
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

    p = sub.add_parser("publish", help="copy a profile's report (results/<profile>/...) to its committed folder")
    p.add_argument("source")
    p.add_argument("dest")
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
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_zoo_report)

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
    p.add_argument("--zoo", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--options", type=_json, default={}, help="cond-pdiff options (JSON)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--encoder", type=_json, default={"name": "minilm"})
    p.add_argument("--encoder-cache", default=None)
    p.add_argument("--select-examples", type=int, default=64, help="train examples for the best-of-K rule")
    p.add_argument("--dev-limit", type=int, default=None, help="score on the first N dev examples (default all)")
    p.add_argument("--out", required=True, help="markdown report (a .csv is written beside it)")
    _add_common(p)
    p.set_defaults(func=cmd_glue_run)

    p = sub.add_parser("ablation-report", help="an `ablations:` entry of the config -> reports/<name>_ablation.md")
    p.add_argument("results", nargs="+", help="per-task CSVs of the ablation's rows and its base")
    p.add_argument("--name", required=True, help="the ablation's key in the config's `ablations:`")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_ablation_report)

    p = sub.add_parser("figure", help="a figure of the paper from per-task CSVs -> reports/<name>.md, "
                                      "figures/<name>.{png,svg,csv}")
    p.add_argument("name", choices=["fig6b"], help="fig6b: p-Acc vs number of classes (padded-<k> splits)")
    p.add_argument("results", nargs="+", help="per-task CSVs (data/<dataset>/<arch>/results/<label>/<split>.csv)")
    p.add_argument("--config", default=None, help="the profile's config (labels, provenance)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("efficiency", help="seconds per personalized model: fine-tuning vs fitted methods")
    for flag in ("--images", "--generic", "--zoo", "--tasks"):
        p.add_argument(flag, required=True)
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
    for flag in ("--images", "--generic", "--tasks", "--split", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--generated", required=True, help="generated vectors of the method")
    p.add_argument("--baseline", required=True, help="classifier-selection-slice vectors of the same split")
    p.add_argument("--features", default=None)
    p.add_argument("--arch", default=None, choices=sorted(PMODELS))
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("novelty", help="generated p-Models vs their nearest zoo p-Models (memorization panel)")
    for flag in ("--images", "--generic", "--tasks", "--zoo", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--split", default="ood", help="task split of the generated vectors (default ood)")
    p.add_argument("--generated", required=True, help="generated vectors of the method on --split")
    p.add_argument("--label", default=None, help="method label in the report (default: the vectors' method)")
    p.add_argument("--reference-size", type=int, default=None,
                   help="zoo p-Models whose nearest other zoo p-Model forms the reference (default all)")
    p.add_argument("--features", default=None)
    p.add_argument("--arch", default=None, choices=sorted(PMODELS))
    p.set_defaults(func=cmd_novelty)

    p = sub.add_parser("site", help="reports/*.md and reports/figures -> one self-contained page, reports/index.html")
    p.add_argument("reports", nargs="*", help="markdown reports (default: every *.md in --reports-dir)")
    p.add_argument("--reports-dir", default=None, help="folder of the reports and figures/ (default: that of --out)")
    p.add_argument("--out", default="reports/index.html")
    p.add_argument("--screenshot", default=None, help="also save the page's top as PNG (needs /usr/bin/chromium)")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("methods", help="list registered methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("check-config", help="validate a config YAML against the schema")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)
    return parser


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
