"""GLUE LoRA zoos: Cond P-Diff's own language experiment (its Table 1), run where the weights and data exist.

Nothing is downloaded. It needs
- a Hugging Face sequence-classification checkpoint (`bert-base-uncased`, `roberta-base`,
  `microsoft/deberta-v3-base`, ...) in the Hugging Face cache (`$HF_HUB_CACHE`) or a local directory with
  its config, weights and tokenizer files;
- GLUE in its original TSV distribution: `<root>/<SST-2|RTE|MRPC|QNLI|CoLA>/{train,dev}.tsv`.

Pipeline (config section `glue:`, rules in benchmarks/rules/glue.smk):
1. `build_zoo`: per GLUE task, LoRA (peft) on the backbone's attention layers plus the classifier, fine-tuned
   from the same backbone; the personalized parameters of the last `save_last` steps become zoo vectors
   (the paper saves the last 150 steps per task).
2. Cond P-Diff fits on the zoo with each GLUE task's label texts as its condition ("classes"), generates
   `n_candidates` vectors per task, and every vector is scored on the task's dev set (`evaluate_vectors`).
The tasks are binary classification; STS-B (regression) is left out. CoLA is scored by accuracy and
Matthews correlation (the paper's metric for it).
"""
from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from benchmarks.datasets import MissingDataError
from benchmarks.pmodels import Layout
from benchmarks.train import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueTask:
    folder: str
    text_columns: tuple  # column names (or indices for header-less files)
    label_column: str | int
    labels: tuple[str, ...]  # raw label values; position = class id
    label_texts: tuple[str, str]  # the task's "class names": the condition Cond P-Diff generates from
    header: bool = True


GLUE_TASKS = {
    "sst2": GlueTask("SST-2", ("sentence",), "label", ("0", "1"),
                     ("negative movie review", "positive movie review")),
    "rte": GlueTask("RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                    ("the premise entails the hypothesis", "the premise does not entail the hypothesis")),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"),
                     ("the two sentences differ in meaning", "the two sentences are paraphrases")),
    "qnli": GlueTask("QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                     ("the sentence answers the question", "the sentence does not answer the question")),
    "cola": GlueTask("CoLA", (3,), 1, ("0", "1"),
                     ("an ungrammatical English sentence", "a grammatical English sentence"), header=False),
}


@dataclass
class GlueSplit:
    task: str
    texts: list[tuple[str, ...]]  # one or two texts per example
    labels: Tensor  # int64 [n]


def load_split(root: str | Path, task: str, split: str, limit: int | None = None) -> GlueSplit:
    """Read `<root>/<folder>/<split>.tsv` of a GLUE task (the original distribution's layout)."""
    if task not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    spec = GLUE_TASKS[task]
    path = Path(root) / spec.folder / f"{split}.tsv"
    if not path.exists():
        raise MissingDataError(f"GLUE {task}: {path} not found. Put the original GLUE TSVs under {root}/ as "
                               f"{spec.folder}/train.tsv and {spec.folder}/dev.tsv (glue_data layout)")
    df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                     header=0 if spec.header else None, on_bad_lines="skip")
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in df.columns]
    if missing:
        raise ValueError(f"GLUE {task}: {path} lacks columns {missing}; it has {list(df.columns)}")
    index = {v: i for i, v in enumerate(spec.labels)}
    df = df[df[spec.label_column].isin(index)]
    if limit:
        df = df.iloc[:limit]
    texts = list(zip(*(df[c].tolist() for c in spec.text_columns)))
    labels = torch.tensor([index[v] for v in df[spec.label_column]], dtype=torch.long)
    return GlueSplit(task, texts, labels)


def load_backbone(name: str, num_labels: int = 2):
    """(model, tokenizer) from a local directory or the Hugging Face cache; never downloads."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=num_labels, local_files_only=True)
    except OSError as e:
        raise MissingDataError(f"model {name!r} is not available offline ({e.__class__.__name__}). Put it in the "
                               "Hugging Face cache ($HF_HUB_CACHE; `huggingface-cli download` on a machine with a "
                               "network) or give a directory with config.json, the weights and tokenizer files") from None
    return model, tokenizer


def lora_model(backbone: nn.Module, rank: int, alpha: float, targets: list[str], dropout: float = 0.1,
               seed: int = 0) -> nn.Module:
    """The backbone with peft LoRA on `targets` and its classifier trainable (`modules_to_save`); A is drawn
    from one fixed seed for every task, so the zoo's adapters share a coordinate frame (benchmarks/lora.py)."""
    import copy

    from peft import LoraConfig, get_peft_model
    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)} | \
            {n for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise ValueError(f"LoRA targets {unknown} match no linear layer; e.g. {sorted(names)[:12]}")
    torch.manual_seed(derive_seed(seed, "glue-lora-init"))
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                     modules_to_save=["classifier"])
    return get_peft_model(copy.deepcopy(backbone), cfg)


def personalized_layout(model: nn.Module) -> Layout:
    """The trainable parameters (adapters + classifier copy), in registration order, as a flat layout."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    head = next((n.rsplit(".", 1)[0] for n in reversed(list(shapes)) if n.endswith(".weight")), "classifier")
    return Layout(shapes, head=head)


def _encode(tokenizer, texts: list[tuple[str, ...]], max_length: int, device) -> dict:
    columns = list(zip(*texts))
    enc = tokenizer(*columns, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


@dataclass
class ZooConfig:
    rank: int = 4
    alpha: float = 8.0
    targets: tuple[str, ...] = ("query", "value")
    steps: int = 1000
    save_last: int = 150  # paper: the last 150 steps' checkpoints per task
    lr: float = 5e-4
    batch_size: int = 32
    max_length: int = 128
    train_limit: int | None = None  # examples per task (None: the whole train split)


def build_zoo(backbone: nn.Module, tokenizer, root: str | Path, tasks: list[str], cfg: ZooConfig, *, seed: int = 0,
              device=torch.device("cpu")) -> dict:
    """LoRA fine-tuning per GLUE task; the last `save_last` steps' personalized parameters become zoo vectors.

    Returns {"task_ids", "classes", "theta" [n_tasks * save_last, P], "names", "shapes", "glue_task"}."""
    if cfg.save_last > cfg.steps:
        raise ValueError(f"save_last {cfg.save_last} exceeds steps {cfg.steps}")
    rows, ids, classes, glue_task = [], [], [], []
    layout = None
    for task in tasks:
        data = load_split(root, task, "train", cfg.train_limit)
        model = lora_model(backbone, cfg.rank, cfg.alpha, list(cfg.targets), seed=seed).to(device).train()
        layout = layout or personalized_layout(model)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr)
        gen = torch.Generator().manual_seed(derive_seed(seed, "glue-zoo", task))
        for step in tqdm(range(cfg.steps), desc=f"glue {task}", unit="step"):
            idx = torch.randint(0, len(data.labels), (cfg.batch_size,), generator=gen)
            batch = _encode(tokenizer, [data.texts[i] for i in idx], cfg.max_length, device)
            loss = nn.functional.cross_entropy(model(**batch).logits, data.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= cfg.steps - cfg.save_last:
                named = dict(model.named_parameters())
                rows.append(layout.flatten({n: named[n] for n in layout.by_name}).cpu())
                ids.append(f"{task}#{step}")
                classes.append(list(GLUE_TASKS[task].label_texts))
                glue_task.append(task)
        log.info("glue %s: final train loss %.4f", task, loss.item())
    theta = torch.stack(rows)
    if not torch.isfinite(theta).all():
        raise FloatingPointError("GLUE zoo holds NaN/inf parameters; lower the learning rate")
    return {"task_ids": ids, "classes": classes, "theta": theta, "glue_task": glue_task,
            "names": [s.name for s in layout.segments], "shapes": [list(s.shape) for s in layout.segments],
            "head": layout.head, "lora": {"rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.targets),
                                          "max_length": cfg.max_length}}


def matthews(pred: Tensor, y: Tensor) -> float:
    tp = ((pred == 1) & (y == 1)).sum().item()
    tn = ((pred == 0) & (y == 0)).sum().item()
    fp = ((pred == 1) & (y == 0)).sum().item()
    fn = ((pred == 0) & (y == 1)).sum().item()
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


@torch.no_grad()
def evaluate_vectors(model: nn.Module, tokenizer, layout: Layout, theta: Tensor, data: GlueSplit, *,
                     max_length: int = 128, batch_size: int = 64, device=torch.device("cpu")) -> list[dict]:
    """Accuracy (%) and Matthews correlation of each vector [n, P] on `data` (a LoRA model of the same layout)."""
    model = model.to(device).eval()
    batches = [(_encode(tokenizer, data.texts[i:i + batch_size], max_length, device), data.labels[i:i + batch_size])
               for i in range(0, len(data.labels), batch_size)]
    out = []
    for vec in theta:
        if not torch.isfinite(vec).all():
            raise ValueError("a GLUE vector holds NaN/inf; nothing was evaluated for it")
        params = {n: t.to(device) for n, t in layout.unflatten(vec.float()).items()}
        pred = torch.cat([functional_call(model, params, args=(), kwargs=b).logits.argmax(-1).cpu() for b, _ in batches])
        out.append({"accuracy": 100.0 * (pred == data.labels).float().mean().item(),
                    "mcc": 100.0 * matthews(pred, data.labels), "n": len(data.labels)})
    return out


@dataclass
class GlueArch:
    """A stand-in p-Model arch for the method contract: the zoo's flat layout; no image model behind it."""

    name: str
    shapes: dict
    head: str
    head_only: bool = False

    def layout(self, num_classes: int = 2) -> Layout:
        return Layout(self.shapes, head=self.head)


GENERATORS = ("text", "class-tokens", "one-hot")  # conditions that need no images


def run_cond_pdiff(zoo: dict, model_name: str, root: str | Path, options: dict, workdir: str | Path, *, seed: int = 0,
                   device=torch.device("cpu"), encoder_spec: dict | None = None, encoder_cache: Path | None = None,
                   select_examples: int = 64, dev_limit: int | None = None) -> pd.DataFrame:
    """Fit Cond P-Diff on a GLUE LoRA zoo, generate K candidates per task, score everything on the dev sets.

    Rows per task: the zoo's last fine-tuned checkpoint ("original" in the paper), candidate 0, the mean of the
    candidates (plain rules), and the candidate best on `select_examples` train examples (the paper's rule)."""
    from methods.base import Bench, Candidates, Tasks, Zoo
    from methods.registry import build_method
    options = dict(options)
    if options.get("condition", "text") not in GENERATORS:
        raise ValueError(f"GLUE runs condition on text; choose condition from {list(GENERATORS)}")
    options["select"] = "first"  # every candidate is scored here; the rules are applied below
    backbone, tokenizer = load_backbone(model_name)
    lora = zoo["lora"]
    model = lora_model(backbone, lora["rank"], lora["alpha"], lora["targets"], seed=seed)
    layout = personalized_layout(model)
    if [s.name for s in layout.segments] != list(zoo["names"]):
        raise ValueError(f"the zoo was built for another model or LoRA setting than {model_name!r}")
    arch = GlueArch(f"glue-lora:{model_name}", {n: tuple(sh) for n, sh in zip(zoo["names"], zoo["shapes"])},
                    zoo["head"])
    labels = sorted({t for cs in zoo["classes"] for t in cs})
    bench = Bench(arch=arch, generic=None, zoo=Zoo(list(zoo["task_ids"]), zoo["classes"], zoo["theta"],
                                                   torch.zeros(len(zoo["task_ids"]))),
                  train_x=torch.zeros(0, 3, 32, 32, dtype=torch.uint8), train_y=torch.zeros(0, dtype=torch.long),
                  class_names=labels, num_classes=2, seed=seed, device=device, encoder_cache=encoder_cache,
                  text_encoder_spec=encoder_spec or {"name": "minilm"}, dataset="glue")
    method = build_method("cond-pdiff", options).setup(bench, workdir)
    if not isinstance(method, Candidates):
        raise TypeError("the registered cond-pdiff has no candidates(): GLUE scores every candidate")
    method.fit(bench, Path(workdir))
    tasks = list(dict.fromkeys(zoo["glue_task"]))
    cand = method.candidates(Tasks(tasks, [list(GLUE_TASKS[t].label_texts) for t in tasks]))  # [n, K, P]
    rows = []
    for i, task in enumerate(tasks):
        dev = load_split(root, task, "dev", dev_limit)
        shots = load_split(root, task, "train", select_examples)
        last = zoo["theta"][max(j for j, t in enumerate(zoo["glue_task"]) if t == task)]
        train_scores = evaluate_vectors(model, tokenizer, layout, cand[i], shots, max_length=lora["max_length"],
                                        device=device)
        best = max(range(len(train_scores)), key=lambda j: train_scores[j]["accuracy"])
        vectors = {"zoo: last fine-tuned checkpoint": last, "cond-pdiff: first candidate": cand[i, 0],
                   "cond-pdiff: mean of candidates": cand[i].mean(0),
                   f"cond-pdiff: best of {cand.shape[1]} on {len(shots.labels)} train examples": cand[i, best]}
        scores = evaluate_vectors(model, tokenizer, layout, torch.stack(list(vectors.values())), dev,
                                  max_length=lora["max_length"], device=device)
        rows += [{"task": task, "vector": name, **score} for name, score in zip(vectors, scores)]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- `nndiff glue-zoo`, `nndiff glue-run`


def write_zoo(model_name: str, root: str | Path, tasks: list[str], *, lora: dict, train: dict, seed: int, device,
              out) -> dict:
    """`nndiff glue-zoo`: the LoRA zoo of `tasks` on the local model `model_name`, saved with the model's name.
    `lora` and `train`: ZooConfig fields (e.g. {"rank": 4}, {"steps": 1000, "save_last": 150})."""
    from benchmarks import artifacts
    backbone, tokenizer = load_backbone(model_name)
    cfg = ZooConfig(**lora, **train)
    zoo = build_zoo(backbone, tokenizer, root, tasks, cfg, seed=seed, device=device)
    artifacts.save_torch({**zoo, "model": model_name}, out)
    log.info("GLUE zoo: %d vectors of %d parameters -> %s", len(zoo["task_ids"]), zoo["theta"].shape[1], out)
    return zoo


def write_cond_pdiff_report(zoo_path, root: str | Path, options: dict, workdir: str | Path, *, seed: int, device,
                            encoder_spec: dict | None, encoder_cache: str | None, select_examples: int,
                            dev_limit: int | None, out) -> pd.DataFrame:
    """`nndiff glue-run`: `run_cond_pdiff` on a zoo of `nndiff glue-zoo`, as a markdown report with a CSV beside it."""
    from benchmarks import artifacts
    zoo = artifacts.load_torch(zoo_path)
    df = run_cond_pdiff(zoo, zoo["model"], root, options, workdir, seed=seed, device=device,
                        encoder_spec=encoder_spec, encoder_cache=Path(encoder_cache) if encoder_cache else None,
                        select_examples=select_examples, dev_limit=dev_limit)
    prov = artifacts.provenance(options)
    artifacts.write_text("\n".join([
        f"# Cond P-Diff on GLUE LoRA zoos ({zoo['model']})", "",
        "Dev-set accuracy and Matthews correlation (%, CoLA's metric) of each vector; one zoo per task from the",
        f"last {sum(1 for t in zoo['glue_task'] if t == zoo['glue_task'][0])} fine-tuning steps.", "",
        df.to_markdown(index=False, floatfmt=".2f"), "",
        f"Options `{options}`, LoRA `{zoo['lora']}`; seed {seed}; commit `{prov['commit']}`; "
        f"{prov['hardware']}.", ""]), out)
    with artifacts.atomic_path(Path(out).with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    return df
