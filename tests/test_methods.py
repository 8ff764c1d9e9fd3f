import pytest
import torch

from benchmarks.evaluate import evaluate
from benchmarks.tasks import get_split
from methods.base import Tasks
from methods.registry import available, build_method


# Small settings so every method fits in seconds on the tiny bench (defaults are the paper's scale).
TINY_OPTIONS = {
    "taper": {"expert_epochs": 1, "mixer_epochs": 1, "mixer_steps_per_task": 1},
    "tina": {"width": 32, "depth": 2, "heads": 2, "steps": 10, "sample_steps": 5},
    "cond-pdiff": {"ae_steps": 20, "diffusion_steps": 10, "fold": 4, "ae_layers": 2, "ae_width": 8, "unet_width": 16,
                   "emb_dim": 32, "batch_size": 8, "sample_steps": 4, "n_candidates": 2, "select_shots": 3,
                   "fewshot_pool": 8, "checkpoint_every": 0},
    "hypernet": {"width": 16, "heads": 2, "body_hidden": 16, "steps": 20, "batch_size": 16},
}


@pytest.mark.parametrize("name", sorted(available()))
def test_every_registered_method_fits_and_generates(tiny, tmp_path, name):
    options = TINY_OPTIONS.get(name, {})
    method = build_method(name, options).setup(tiny.bench, tmp_path)
    method.fit(tiny.bench, tmp_path)
    tasks = Tasks.from_records(get_split(tiny.tasks, "ood"))
    # generate in a "fresh process": a new instance that only has the workdir
    fresh = build_method(name, options).setup(tiny.bench, tmp_path)
    theta = fresh.generate(tasks)
    assert theta.shape == (len(tasks), fresh.layout.n_params)
    assert torch.isfinite(theta).all()


def test_classifier_selection_rules(tiny, tmp_path):
    tasks_rec = get_split(tiny.tasks, "ood")
    tasks = Tasks.from_records(tasks_rec)
    out = {}
    for rule in ["mask", "slice"]:
        m = build_method("classifier-selection", {"rule": rule}).setup(tiny.bench, tmp_path / rule)
        m.fit(tiny.bench, tmp_path / rule)
        theta = m.generate(tasks)
        out[rule] = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks_rec, theta,
                             output_space=m.output_space)["accuracy"]
    slice_theta = build_method("classifier-selection", {"rule": "slice"}).setup(tiny.bench, tmp_path / "slice") \
        .generate(tasks)
    idx = tasks.class_indices(tiny.bench.class_names)
    w = tiny.bench.layout.unflatten(slice_theta)["fc.weight"]
    assert torch.equal(w, tiny.generic.state["fc.weight"][idx])
    # slicing can only help: a masked model may also answer with a zeroed class
    assert (out["slice"] >= out["mask"]).all()


def test_unknown_class_and_option_errors(tiny, tmp_path):
    m = build_method("classifier-selection").setup(tiny.bench, tmp_path)
    m.fit(tiny.bench, tmp_path)
    with pytest.raises(ValueError, match="unicorn"):
        m.generate(Tasks(["t"], [["unicorn", "apple", "ant", "bee"]]))
    with pytest.raises(ValueError, match="rule"):
        build_method("classifier-selection", {"rul": "x"})


def test_generate_before_fit_says_so(tiny, tmp_path):
    m = build_method("generic").setup(tiny.bench, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="fit"):
        m.generate(Tasks(["t"], [tiny.bench.class_names[:4]]))


def test_classifier_selection_in_a_lora_layout(tiny, tmp_path):
    """Under a LoRA arch, CS is the LoRA p-Model at its start (B = 0): same outputs as the plain CNN's CS."""
    import dataclasses

    from benchmarks.pmodels import get_arch
    lora = get_arch("cnn-5k-lora")
    bench = dataclasses.replace(tiny.bench, arch=lora)
    tasks_rec = get_split(tiny.tasks, "ood")
    tasks = Tasks.from_records(tasks_rec)
    accs = []
    for b in (tiny.bench, bench):
        m = build_method("classifier-selection", {"rule": "slice"}).setup(b, tmp_path / b.arch.name)
        m.fit(b, tmp_path / b.arch.name)
        theta = m.generate(tasks)
        assert theta.shape == (len(tasks), b.arch.layout(4).n_params)
        accs.append(evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks_rec, theta,
                             arch=b.arch)["accuracy"])
    assert (accs[0] == accs[1]).all()
