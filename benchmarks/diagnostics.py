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
