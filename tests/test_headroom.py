"""Head-room sweep: paired fine-tuned - CS per recipe, the recipe rule, and the constant-lr generic."""
import pandas as pd
import torch

from benchmarks import artifacts
from benchmarks.config import FinetuneConfig
from benchmarks.headroom import cheapest_clear, measure_cell, summarize_cells, timing_path
from benchmarks.tasks import get_split
from benchmarks.train import init_pmodel


def test_cell_pairs_finetuned_with_classifier_selection(tiny):
    tasks = get_split(tiny.tasks, "zoo")[:3]
    recipe = FinetuneConfig(epochs=2, batch_size=32)  # the zoo's recipe and seed: the zoo's own p-Models
    df, seconds = measure_cell(tiny.generic, tiny.images, tasks, recipe, seed=0, device=torch.device("cpu"))
    assert list(df.task_id) == [t["id"] for t in tasks] and len(seconds) == 3
    from benchmarks.evaluate import evaluate
    zoo = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, tiny.zoo_record["theta"][:3])
    assert df["finetuned"].tolist() == zoo["accuracy"].tolist()
    index = {c: i for i, c in enumerate(tiny.generic.classes)}
    cs_theta = torch.stack([tiny.generic.arch.layout(4).flatten(dict(init_pmodel(
        tiny.generic, [index[c] for c in t["classes"]], torch.device("cpu")).named_parameters())) for t in tasks])
    cs = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, cs_theta)
    assert df["cs"].tolist() == cs["accuracy"].tolist()
    assert (df["gain"] == df["finetuned"] - df["cs"]).all()


def test_a_vanishing_lr_leaves_no_headroom(tiny):
    tasks = get_split(tiny.tasks, "zoo")[:3]
    df, _ = measure_cell(tiny.generic, tiny.images, tasks, FinetuneConfig(epochs=1, lr=1e-12, batch_size=32),
                         seed=0, device=torch.device("cpu"))
    assert df["gain"].abs().max() == 0


def _cell(tmp_path, name, schedule, epochs, lr, cs, ft, seconds):
    csv = tmp_path / f"{name}.csv"
    pd.DataFrame({"task_id": [f"t{i}" for i in range(len(cs))], "cs": cs, "finetuned": ft,
                  "gain": [f - c for f, c in zip(ft, cs)]}).to_csv(csv, index=False)
    artifacts.write_json({"seconds_per_pmodel": [seconds] * len(cs)}, timing_path(csv))
    return {"dataset": "d", "arch": "a", "schedule": schedule, "epochs": epochs, "lr": lr, "csv": str(csv)}


def test_cheapest_clear_recipe_is_the_cheapest_whose_lower_bound_clears(tmp_path):
    cs = [50, 52, 48, 51, 49, 50]
    cells = [_cell(tmp_path, "small", "cosine", 5, 1e-3, cs, [c + 0.5 + 0.1 * (i % 2) for i, c in enumerate(cs)], 1.0),
             _cell(tmp_path, "clear", "cosine", 10, 3e-3, cs, [c + 2 + 0.1 * (i % 2) for i, c in enumerate(cs)], 4.0),
             _cell(tmp_path, "clear-dear", "cosine", 20, 3e-3, cs, [c + 3 + 0.1 * (i % 2) for i, c in enumerate(cs)], 9.0),
             _cell(tmp_path, "const", "constant", 5, 1e-3, [c - 2 for c in cs], [c + 1 for c in cs], 1.0)]
    table = summarize_cells(cells)
    best = cheapest_clear(table, "d", "a", floor=1.0)
    assert (best.epochs, best.lr) == (10, 3e-3)  # not the dearer 20-epoch recipe, not the constant generic
    assert cheapest_clear(table, "d", "a", floor=5.0) is None
    const = table[table.generic == "constant"].iloc[0]
    assert abs(const["head-room"] - 3.0) < 1e-9  # against its own (uncalibrated) CS
    assert const["vs cosine CS"].startswith("+1.00")  # against the annealed generic's CS: recalibration removed


def test_report_names_the_chosen_recipe_and_writes_the_figure(tmp_path):
    from benchmarks.headroom import write_report
    cs = [50, 52, 48, 51]
    cells = [_cell(tmp_path, "a", "cosine", 5, 1e-3, cs, [c + 0.2 for c in cs], 1.0),
             _cell(tmp_path, "b", "cosine", 10, 3e-3, cs, [c + 2 + 0.1 * (i % 2) for i, c in enumerate(cs)], 4.0)]
    out = tmp_path / "reports" / "headroom.md"
    write_report(cells, out, config="smoke")
    text = out.read_text()
    assert "`cosine` generic" in text and "10 epochs, lr 0.003" in text and (out.parent / "figures" / "headroom.png").stat().st_size > 1000
    assert (out.parent / "headroom.csv").exists()


def test_the_zoo_recipe_comes_from_the_generic_with_the_strongest_cs(tmp_path):
    from benchmarks.headroom import choose
    cs = [50, 52, 48, 51]
    cells = [_cell(tmp_path, "weak-cs", "cosine", 5, 1e-3, cs, [c + 3 + 0.1 * (i % 2) for i, c in enumerate(cs)], 1.0),
             _cell(tmp_path, "strong", "wsd", 5, 1e-3, [c + 2 for c in cs], [c + 2.5 for c in cs], 1.0),
             _cell(tmp_path, "strong-dear", "wsd", 20, 3e-3, [c + 2 for c in cs],
                   [c + 4 + 0.1 * (i % 2) for i, c in enumerate(cs)], 8.0)]
    generic, best = choose(summarize_cells(cells), "d", "a", floor=1.0)
    assert generic == "wsd" and (best.epochs, best.lr) == (20, 3e-3)  # not the weak CS's cheap clear recipe
