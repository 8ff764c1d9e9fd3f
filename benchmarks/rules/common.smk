import json
import os
from types import SimpleNamespace

from snakemake.utils import validate

from benchmarks.config import data_root, method_specs
from benchmarks.pmodels import get_arch


validate(config, schema="../configs/config.schema.yaml")

DATASETS = list(config["datasets"])
ARCHS = list(config["archs"])
METHODS = [spec.label for spec in method_specs(config)]
SPLITS = config.get("evaluate", {}).get("splits", ["id", "ood"])
THREADS = config.get("threads", 1)
DEVICE = config.get("device", "auto")
GPU = 1 if DEVICE == "cuda" else 0
SHARDS = range(config["finetune"].get("shards", 4))
ORACLE = ["oracle"] if config.get("report", {}).get("oracle", True) else []
# Variants reuse another label's fitted state and change generate-time options only (e.g. the sampler).
VARIANTS = config.get("variants", {})
# Ablation rows are method labels of their own (own fit): the base label's options with `options` changed.
ABLATIONS = config.get("ablations", {})
ABLATION_ROWS = {label: {**row, "base": ab["base"]} for ab in ABLATIONS.values() for label, row in ab["rows"].items()}
EVALUATED = [*METHODS, *ORACLE, *VARIANTS, *ABLATION_ROWS]
TABLE1_VARIANTS = config.get("report", {}).get("table1_variants", [])
for _label, _variant in VARIANTS.items():
    if _variant["of"] not in METHODS:
        raise ValueError(f"variant {_label!r} is of unknown method label {_variant['of']!r}; labels: {METHODS}")
_unknown = sorted(set(TABLE1_VARIANTS) - set(VARIANTS))
if _unknown:
    raise ValueError(f"report.table1_variants {_unknown} are not variant labels; variants: {list(VARIANTS)}")
for _name, _ablation in ABLATIONS.items():
    if _ablation["base"] not in METHODS:
        raise ValueError(f"ablation {_name!r} has unknown base label {_ablation['base']!r}; labels: {METHODS}")
    _unknown = sorted(set(_ablation.get("references", [])) - {*METHODS, *ORACLE, *VARIANTS})
    if _unknown:
        raise ValueError(f"ablation {_name!r} has unknown references {_unknown}; labels: {[*METHODS, *ORACLE, *VARIANTS]}")
    _clash = sorted(set(_ablation["rows"]) & {*METHODS, *VARIANTS})
    if _clash:
        raise ValueError(f"ablation {_name!r} row labels {_clash} are already method or variant labels")


wildcard_constraints:
    dataset="|".join(DATASETS),
    arch="|".join(ARCHS),
    method="|".join(EVALUATED),
    split=r"zoo|id|ood|padded|unseen-zoo|unseen-\d+",  # the splits of tasks.py; "lora-id" is no split
    shard=r"\d+",
    name="|".join(ABLATIONS) or "(?!)",


ENCODER = json.dumps(config.get("encoder", {"name": "minilm"}))


def generic_path(wildcards):
    """A p-Model arch starts from the stage-1 model of its base arch (a LoRA variant shares the CNN's)."""
    return f"data/{wildcards.dataset}/{get_arch(wildcards.arch).base}/generic.pt"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def features_input(wildcards):
    """Head-only archs classify frozen backbone features, computed once."""
    if get_arch(wildcards.arch).head_only:
        return f"data/{wildcards.dataset}/{wildcards.arch}/features.pt"
    return []


def features_flag(wildcards, input):
    return f"--features {input.features}" if input.get("features") else ""


def fitted_label(wildcards):
    """The label whose fit a job uses: a variant's `of`, else the label itself."""
    return VARIANTS.get(wildcards.method, {}).get("of", wildcards.method)


def base_label(label):
    """The configured method label behind a label: itself, a variant's `of`, or an ablation row's base."""
    if label in ABLATION_ROWS:
        return ABLATION_ROWS[label]["base"]
    return VARIANTS.get(label, {}).get("of", label)


def method_options(wildcards):
    """(registry name, options JSON): a variant's (or ablation row's) options override its base label's."""
    spec = next(s for s in method_specs(config) if s.label == base_label(wildcards.method))
    extra = {k: v for k, v in VARIANTS.get(wildcards.method, {}).items() if k != "of"}
    extra.update(ABLATION_ROWS.get(wildcards.method, {}).get("options", {}))
    return spec.method, json.dumps({**spec.options, **extra})


def method_name(wildcards):
    return method_options(wildcards)[0]


def method_options_json(wildcards):
    return method_options(wildcards)[1]


def method_state(wildcards):
    return f"data/{wildcards.dataset}/{wildcards.arch}/methods/{fitted_label(wildcards)}/state"


def method_fit(wildcards):
    return f"data/{wildcards.dataset}/{wildcards.arch}/methods/{fitted_label(wildcards)}/fit.json"


# Inputs, params and flags shared by the rules that load a method (fit, generate, diagnose_autoencoder).
METHOD_INPUTS = {
    "images": "data/{dataset}/images.pt",
    "generic": generic_path,
    "zoo": "data/{dataset}/{arch}/finetuned/zoo.pt",
    "features": features_input,
}
METHOD_PARAMS = {
    "device": DEVICE,
    "encoder": ENCODER,
    "method": method_name,
    "options": method_options_json,
    "features": features_flag,
    "workdir": method_state,
    "seed": config["seed"],
}
METHOD_ARGS = (
    "--method {params.method} --options '{params.options}' --images {input.images}"
    " --generic {input.generic} --arch {wildcards.arch} --zoo {input.zoo} {params.features}"
    " --encoder-cache data/cache/encoders --encoder '{params.encoder}' --workdir {params.workdir}"
)


def method_command(subcommand, more_args):
    """`nndiff <subcommand>` with the method's shared flags, then the rule's own."""
    return f"nndiff {subcommand} {METHOD_ARGS} {more_args}"


def finetuned_split(wildcards):
    """The oracle of an ID task is its zoo p-Model; other splits are fine-tuned with the same recipe."""
    return "zoo" if wildcards.split == "id" else wildcards.split


def results(datasets=DATASETS, archs=ARCHS, methods=EVALUATED, splits=SPLITS):
    """Result CSVs of every (dataset, arch, method, split) asked for; a method's `archs` option limits it."""
    return [
        f"data/{d}/{a}/results/{m}/{s}.csv"
        for d in datasets
        for a in archs
        for m in methods
        if runs_on(m, a)
        for s in splits
    ]


def runs_on(label, arch):
    """Whether a method label (or a variant of one; the oracle always) runs on an arch."""
    specs = {s.label: s for s in method_specs(config)}
    spec = specs.get(base_label(label))
    return spec is None or spec.runs_on(arch)


def train_flags(section):
    """Explicit flags, so a job's command can be pasted and rerun by hand."""
    flags = []
    for key, value in config[section].items():
        if key == "shards":
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags.append(f"--{name} {value}")
    return " ".join(flags)


EFFICIENCY = config.get("report", {}).get("efficiency", {})


def efficiency_methods(wildcards):
    """JSON list of the fitted methods (labels or variants) timed by the efficiency report."""
    specs = []
    for label in [m for m in EFFICIENCY.get("methods", []) if runs_on(m, wildcards.arch)]:
        w = SimpleNamespace(dataset=wildcards.dataset, arch=wildcards.arch, method=label)
        name, options = method_options(w)
        specs.append({"label": label, "method": name, "options": json.loads(options), "workdir": method_state(w)})
    return json.dumps(specs)


def efficiency_fits(wildcards):
    return [
        method_fit(SimpleNamespace(dataset=wildcards.dataset, arch=wildcards.arch, method=m))
        for m in EFFICIENCY.get("methods", [])
        if runs_on(m, wildcards.arch)
    ]


def diagnostics(method="tina"):
    """Swap diagnostics of a generator against sliced classifier selection, per dataset, arch and split."""
    return [
        f"reports/diagnose-{method}-{d}-{a}-{s}.md"
        for d in DATASETS
        for a in ARCHS
        if runs_on(method, a)
        for s in SPLITS
    ]


def ablation_results(wildcards):
    """Result CSVs of an ablation: its base label and every row, on the splits each can produce."""
    ab = ABLATIONS[wildcards.name]
    splits = ab.get("splits", ["id", "ood"])
    rows = {ab["base"]: splits, **{label: splits for label in ab.get("references", [])},
            **{label: row.get("splits", splits) for label, row in ab["rows"].items()}}
    return [f"data/{ab['dataset']}/{ab['arch']}/results/{label}/{s}.csv" for label, ss in rows.items() for s in ss]


# Cond P-Diff's GLUE experiment (benchmarks/rules/glue.smk, only with a `glue:` config section).
GLUE = config.get("glue", {})


def glue_root():
    root = GLUE.get("root", "glue_data")
    return root if os.path.isabs(root) or not data_root(config) else os.path.join(data_root(config), root)
