import json
import os
from types import SimpleNamespace

from snakemake.utils import validate

from benchmarks import workflow as wf  # not `workflow`: that name is Snakemake's own global
from benchmarks.config import data_root
from benchmarks.pmodels import get_arch


validate(config, schema="../configs/config.schema.yaml")
# Every method's options, variants, ablations, report labels and splits (benchmarks/workflow/checks.py), before any job.
wf.check_config(config)

DATASETS = list(config["datasets"])
ARCHS = list(config["archs"])
PLACES = wf.places(config)  # the (dataset, arch) pairs of Table 1: a dataset's `archs:` may leave some out
METHODS = wf.method_labels(config)
SPLITS = wf.evaluated_splits(config)
THREADS = config.get("threads", 1)
DEVICE = config.get("device", "auto")
GPU = 1 if DEVICE == "cuda" else 0
SHARDS = range(config["finetune"].get("shards", 4))
ORACLE = wf.oracle_labels(config)
# Variants reuse another label's fitted state and change generate-time options only (e.g. the sampler).
VARIANTS = wf.variants(config)
# Ablation rows are method labels of their own (own fit): the base label's options with `options` changed.
ABLATIONS = wf.ablations(config)
ABLATION_ROWS = wf.ablation_rows(config)
EVALUATED = wf.evaluated(config)
TABLE1_VARIANTS = config.get("report", {}).get("table1_variants", [])


wildcard_constraints:
    dataset="|".join(DATASETS),
    arch="|".join(dict.fromkeys([*ARCHS, *wf.scaling_archs(config), *wf.clip_archs(config)])),  # clip: clip.smk  # scaling archs: the scaling figures only (scaling.smk)
    method="|".join(EVALUATED),
    split=wf.SPLIT_PATTERN,  # the splits of tasks.py; "lora-id" is no split
    shard=r"\d+",
    name="|".join(ABLATIONS) or "(?!)",


# Where a profile's reports go (config `reports`; cpu: reports/, others reports/<profile>/, git-ignored) and the
# committed folder that the target `all` copies them to (config `publish`; cpu: reports/published/): the DAG
# never finds its own target already committed, so a fresh clone's `snakemake reports/table1.md` really runs.
REPORTS = os.path.join(config.get("reports", f"reports/{config['profile']}"), "")
PUBLISH = os.path.join(config["publish"], "") if config.get("publish") else None


def published(paths):
    """Where the target `all` wants each report: its published copy when the profile publishes, else itself."""
    if not PUBLISH:
        return list(paths)
    return [PUBLISH + p[len(REPORTS) :] if p.startswith(f"{REPORTS}") else p for p in paths]


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
    return wf.fitted_label(config, wildcards.method)


def base_label(label):
    """The configured method label behind a label: itself, a variant's `of`, or an ablation row's base."""
    return wf.base_label(config, label)


def method_options(wildcards):
    """(registry name, options JSON): a variant's (or ablation row's) options override its base label's."""
    name, options = wf.method_options(config, wildcards.method)
    # `init_from: <dataset>:<label>` (parameter inheritance) becomes that fit's state folder on this arch
    return name, json.dumps(wf.resolve_init_from(config, wildcards.method, wildcards.arch, options))


def method_name(wildcards):
    return method_options(wildcards)[0]


def method_options_json(wildcards):
    return method_options(wildcards)[1]


def method_state(wildcards):
    return f"data/{wildcards.dataset}/{wildcards.arch}/methods/{fitted_label(wildcards)}/state"


def method_fit(wildcards):
    return f"data/{wildcards.dataset}/{wildcards.arch}/methods/{fitted_label(wildcards)}/fit.json"


def method_zoo(wildcards):
    """The p-Models a label fits on: the zoo, or the unseen-class zoo (half A only) for a `<label>~unseen`."""
    return f"data/{wildcards.dataset}/{wildcards.arch}/finetuned/{wf.zoo_split(config, wildcards.method)}.pt"


# Inputs, params and flags shared by the rules that load a method (fit, generate, diagnose_autoencoder).
METHOD_INPUTS = {
    "images": "data/{dataset}/images.pt",
    "generic": generic_path,
    "zoo": method_zoo,
    "features": features_input,
    "inherit": lambda w: wf.init_from_input(config, w.method, w.arch),  # the fit an `init_from` label starts from
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
    return wf.results(config, datasets, archs, methods, splits)


def runs_on(label, arch):
    """Whether a method label (or a variant of one; the oracle always) runs on an arch."""
    return wf.runs_on(config, label, arch)


def train_flags(section, arch=None):
    """Explicit flags, so a job's command can be pasted and rerun by hand. A section's `archs` map overrides
    its recipe per p-Model arch (e.g. `finetune: {archs: {cnn-5k-lora: {epochs: 5}}}`)."""
    flags = []
    settings = {**config[section], **config[section].get("archs", {}).get(arch, {})}
    for key, value in settings.items():
        if key in ("shards", "archs"):
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
    """Swap diagnostics of a generator against sliced classifier selection, per dataset, arch (with a body) and split."""
    return [
        f"{REPORTS}diagnose-{method}-{d}-{a}-{s}.md"
        for d, a in PLACES
        if runs_on(method, a) and not get_arch(a).head_only  # a head-only p-Model has no body to swap
        for s in SPLITS
    ]


def ablation_results(wildcards):
    """Result CSVs of an ablation: its base label and every row, on the splits each can produce."""
    return wf.ablation_results(config, wildcards.name)


# Cond P-Diff's GLUE experiment (benchmarks/rules/glue.smk, only with a `glue:` config section).
GLUE = config.get("glue", {})


def glue_root():
    root = GLUE.get("root", "glue_data")
    return root if os.path.isabs(root) or not data_root(config) else os.path.join(data_root(config), root)


# Head-room over classifier selection (benchmarks/rules/headroom.smk).
HEADROOM = config.get("headroom", {})


def headroom_generic(wildcards):
    """The profile's own generic model for its schedule; a generic of the other schedule is built apart."""
    base = get_arch(wildcards.arch).base
    if wildcards.schedule == config["stage1"].get("schedule", "cosine"):
        return f"data/{wildcards.dataset}/{base}/generic.pt"
    return f"data/{wildcards.dataset}/{base}/generic-{wildcards.schedule}.pt"


def headroom_cells():
    from benchmarks.headroom import cell_label, sweep_cells

    return [
        {**c, "csv": f"data/{c['dataset']}/{c['arch']}/headroom/{c['schedule']}/{cell_label(c['epochs'], c['lr'])}.csv"}
        for c in sweep_cells(config)
    ]


# The claims ledger (benchmarks/rules/claims.smk).
def claims_results(wildcards):
    """Every label's results the config produces: methods, variants, the oracle, each ablation's rows, and
    Table 3's unseen-class rows."""
    return sorted(
        set(results(methods=[*METHODS, *VARIANTS, *ORACLE]))
        | {p for name in ABLATIONS for p in ablation_results(SimpleNamespace(name=name))}
        | set(wf.unseen_results(config))
    )


def figure_outputs(name):
    """A figure report's files: <reports>/<name>.md and <reports>/figures/<name>.{csv,png,svg}."""
    return {
        "md": f"{REPORTS}{name}.md",
        "csv": f"{REPORTS}figures/{name}.csv",
        "png": f"{REPORTS}figures/{name}.png",
        "svg": f"{REPORTS}figures/{name}.svg",
    }
