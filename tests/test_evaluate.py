import pytest
import torch

from benchmarks.evaluate import check_vectors, evaluate, paired, summarize
from benchmarks.tasks import get_split


def _eval(tiny, tasks, theta, **kw):
    return evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, theta, **kw)


def test_rows_per_task_with_counts(tiny):
    tasks = get_split(tiny.tasks, "zoo")
    df = _eval(tiny, tasks, tiny.zoo_record["theta"])
    assert list(df.columns) == ["task_id", "classes", "n_images", "correct", "accuracy"]
    assert len(df) == len(tasks)
    assert (df["n_images"] == 4 * 10).all()  # 4 classes x 10 test images
    assert ((df["accuracy"] >= 0) & (df["accuracy"] <= 100)).all()


def test_permuting_classes_and_rows_together_keeps_accuracy(tiny):
    """Output i means task class i: permuting both leaves accuracy unchanged; permuting rows alone does not."""
    tasks = get_split(tiny.tasks, "zoo")[:3]
    theta = tiny.zoo_record["theta"][:3]
    layout = tiny.bench.layout
    perm = torch.tensor([2, 0, 3, 1])
    permuted_tasks = [{**t, "classes": [t["classes"][i] for i in perm]} for t in tasks]
    permuted = layout.assemble(layout.body(theta), layout.head_rows(theta)[:, perm])
    base = _eval(tiny, tasks, theta)["accuracy"]
    assert (_eval(tiny, permuted_tasks, permuted)["accuracy"] == base).all()
    assert (_eval(tiny, tasks, permuted)["accuracy"] < base).any()


def test_nan_and_wrong_shape_rejected_naming_method_and_task(tiny):
    tasks = get_split(tiny.tasks, "zoo")[:2]
    theta = tiny.zoo_record["theta"][:2].clone()
    theta[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"mymethod.*zoo-"):
        _eval(tiny, tasks, theta, method="mymethod")
    with pytest.raises(ValueError, match="expected"):
        check_vectors(torch.zeros(2, 3), 2, 5370, method="m", task_ids=["a", "b"])


def test_unknown_class_rejected(tiny):
    with pytest.raises(ValueError, match="unicorn"):
        _eval(tiny, [{"id": "x", "classes": ["unicorn"] * 4}], tiny.zoo_record["theta"][:1])


def test_summary_and_paired():
    import pandas as pd
    a = pd.DataFrame({"task_id": list("abcd"), "accuracy": [50.0, 60, 70, 80]})
    b = pd.DataFrame({"task_id": list("abcd"), "accuracy": [49.0, 59, 69, 79]})
    s = summarize(a["accuracy"])
    assert s["n"] == 4 and s["mean"] == 65 and s["ci95"] > 0
    d = paired(a, b)
    assert d["mean"] == pytest.approx(1.0) and d["ci95"] == pytest.approx(0.0)


def test_swap_diagnostic_combines_body_and_head(tiny):
    from benchmarks.diagnostics import swap_table, swaps
    layout = tiny.bench.layout
    a, b = torch.randn(2, layout.n_params), torch.randn(2, layout.n_params)
    out = swaps(layout, a, b)
    mixed = out["generated body + CS head"]
    assert torch.equal(layout.body(mixed), layout.body(a)) and torch.equal(layout.head_rows(mixed), layout.head_rows(b))
    tasks = get_split(tiny.tasks, "zoo")[:2]
    theta = tiny.zoo_record["theta"][:2]
    table = swap_table(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, layout, theta, theta)
    assert (table["minus CS"] == 0).all() and len(table) == 4
