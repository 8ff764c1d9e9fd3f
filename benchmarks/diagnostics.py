"""Which part of a generated p-Model fails?

- Swap its body and head with classifier selection (docs/design-notes.md §2): across a zoo the conv layers barely move
  while the classifier rows carry the task, so a generator can be right in one part and wrong in the other.
  Evaluating generated-body + CS-head and CS-body + generated-head on the same tasks tells which to blame.
- For a latent generator (Cond P-Diff): the zoo's own p-Models through its autoencoder, beside what it
  generates for the same (ID) tasks, split the loss into the autoencoder's and the diffusion's.
"""
from __future__ import annotations

import pandas as pd
from torch import Tensor

from benchmarks.evaluate import evaluate, paired, summarize
from benchmarks.pmodels import Layout


def swaps(layout: Layout, generated: Tensor, baseline: Tensor) -> dict[str, Tensor]:
    """The four combinations of (body, head) from the generated and the baseline vectors, [n_tasks, n_params]."""
    gb, bb = layout.body(generated), layout.body(baseline)
    gh, bh = layout.head_rows(generated), layout.head_rows(baseline)
    return {"generated": generated, "generated body + CS head": layout.assemble(gb, bh),
            "CS body + generated head": layout.assemble(bb, gh), "classifier selection": baseline}


def swap_table(generic, test_x, test_y, tasks: list[dict], layout: Layout, generated: Tensor, baseline: Tensor,
               *, arch=None, features=None) -> pd.DataFrame:
    results = {name: evaluate(generic, test_x, test_y, tasks, theta, arch=arch, features=features, method=name)
               for name, theta in swaps(layout, generated, baseline).items()}
    return comparison_table(results, "classifier selection", "CS")


def comparison_table(results: dict[str, pd.DataFrame], reference: str, short: str) -> pd.DataFrame:
    """One row per named result (per-task accuracies of the same tasks), paired with `reference` ("minus short")."""
    rows = []
    for name, df in results.items():
        s, d = summarize(df["accuracy"]), paired(df, results[reference])
        rows.append({"p-Model": name, "p-Acc": s["mean"], "± 95% CI": s["ci95"], f"minus {short}": d["mean"],
                     "± 95% CI (paired)": d["ci95"], "n": s["n"]})
    return pd.DataFrame(rows)


def autoencoder_table(generic, test_x, test_y, tasks: list[dict], *, zoo: Tensor, reconstructed: Tensor,
                      generated: Tensor, arch=None, features=None) -> pd.DataFrame:
    """Zoo p-Models, the same through the autoencoder, and generated ones, on the same ID tasks."""
    vectors = {"zoo p-Model": zoo, "zoo p-Model through the autoencoder": reconstructed, "generated": generated}
    return comparison_table({name: evaluate(generic, test_x, test_y, tasks, theta, arch=arch, features=features,
                                            method=name) for name, theta in vectors.items()}, "zoo p-Model", "zoo")


def write_table_report(out: str, title: str, intro: str, table: pd.DataFrame, footer: str) -> None:
    """A diagnostic's markdown: title, what the rows are, the table, provenance."""
    from benchmarks import artifacts
    artifacts.write_text("\n".join([f"# {title}", "", intro, "", table.to_markdown(index=False, floatfmt=".2f"), "",
                                     footer, ""]), out)


def run_swap_diagnostic(images_path, generic_path, tasks_path, *, split: str, generated, baseline, out,
                        features_path=None, arch_name: str | None = None) -> pd.DataFrame:
    """`nndiff diagnose`: the swap table of a method's generated vectors against classifier selection's
    (classifier-selection-slice, task space) on the same tasks of `split`, as a markdown report."""
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.evaluate import load_vectors, vector_tasks
    from benchmarks.train import Generic, load_features, pmodel_arch
    data, generic = ImageData.load(images_path), Generic.load(generic_path)
    arch = pmodel_arch(generic, arch_name)
    gen, base = load_vectors(generated), load_vectors(baseline)
    if gen["task_ids"] != base["task_ids"] or base.get("output_space", "task") != "task":
        raise ValueError("--baseline must be task-space vectors (classifier-selection-slice) of the same tasks")
    tasks = vector_tasks(gen, tasks_path, split)
    table = swap_table(generic, data.test_x, data.test_y, tasks, arch.layout(len(tasks[0]["classes"])), gen["theta"],
                       base["theta"], arch=arch, features=load_features(features_path, "test"))
    prov = artifacts.provenance()
    title = f"Swap diagnostic: {gen.get('method', '?')} vs classifier selection ({split} tasks)"
    write_table_report(out, title,
                       "Body = every generated parameter before the classifier (a LoRA arch: the adapters); head = "
                       "the classifier rows. Same tasks in every row.", table,
                       f"Commit `{prov['commit']}`; {prov['hardware']}.")
    return table


def run_autoencoder_diagnostic(method: str, options: dict, files, workdir, tasks_path, *, seed: int, device,
                               out) -> pd.DataFrame:
    """`nndiff diagnose-autoencoder`: on the ID tasks, the zoo's p-Models, the same through the fitted method's
    autoencoder (methods.base.Reconstructs) and its generated ones, as a markdown report.
    `files`: the benchmark's files (benchmarks.methods_runner.BenchFiles)."""
    from benchmarks import artifacts
    from benchmarks.datasets import ImageData
    from benchmarks.methods_runner import build
    from benchmarks.tasks import get_split, load_tasks
    from benchmarks.train import load_features
    from methods.base import Reconstructs, Tasks
    generator = build(method, options)
    if not isinstance(generator, Reconstructs):  # before loading the benchmark: fail fast
        raise ValueError(f"method {method!r} has no autoencoder (no reconstruct()); use `nndiff diagnose`")
    bench = files.load(seed=seed, device=device)
    generator.setup(bench, workdir)
    tasks = get_split(load_tasks(tasks_path), "id")
    index = {t: i for i, t in enumerate(bench.zoo.task_ids)}
    zoo = bench.zoo.theta[[index[t["id"]] for t in tasks]].float()
    records = Tasks.from_records(tasks)
    data = ImageData.load(files.images)
    table = autoencoder_table(bench.generic, data.test_x, data.test_y, tasks, zoo=zoo,
                              reconstructed=generator.reconstruct(zoo, records), generated=generator.generate(records),
                              arch=bench.arch, features=load_features(files.features, "test"))
    prov = artifacts.provenance(options)
    title = f"Where {method} loses accuracy: autoencoder or diffusion ({len(tasks)} ID tasks)"
    write_table_report(out, title,
                       "The zoo's own p-Models, the same through the fitted autoencoder (the best a latent sample can "
                       "be), and the generated p-Models of the same tasks; paired with the zoo p-Model.", table,
                       f"Options `{options}`; seed {seed}; commit `{prov['commit']}`; {prov['hardware']}.")
    return table
