import pytest
import torch

from benchmarks.config import FinetuneConfig
from benchmarks.evaluate import evaluate
from benchmarks.lora import LORA_ARCHS, lora_arch
from benchmarks.pmodels import PMODELS, get_arch, to_float
from benchmarks.tasks import get_split
from benchmarks.train import finetune_task, task_data


def _conv_lora_params(r: int) -> int:
    # peft Conv2d LoRA: A = Conv2d(in, r, k, stride, padding) [r, in, 3, 3]; B = Conv2d(r, out, 1) [out, r, 1, 1]
    return r * 3 * 9 + 16 * r + r * 16 * 9 + 32 * r


def test_layout_names_shapes_and_head_last():
    layout = get_arch("cnn-5k-lora").layout(10)
    assert [(s.name, s.shape) for s in layout.segments] == [
        ("conv1.lora_A.default.weight", (4, 3, 3, 3)), ("conv1.lora_B.default.weight", (16, 4, 1, 1)),
        ("conv2.lora_A.default.weight", (4, 16, 3, 3)), ("conv2.lora_B.default.weight", (32, 4, 1, 1)),
        ("fc.weight", (10, 32)), ("fc.bias", (10,))]
    assert layout.n_params == 1206 == _conv_lora_params(4) + 330
    rows = layout.head_rows(torch.randn(2, layout.n_params))
    assert rows.shape == (2, 10, 33)  # head_rows / assemble rely on fc.* being the last two segments
    theta = torch.randn(3, layout.n_params)
    assert torch.equal(layout.assemble(layout.body(theta), layout.head_rows(theta)), theta)


@pytest.mark.parametrize("name,r", [("cnn-5k-lora1", 1), ("cnn-5k-lora", 4), ("cnn-5k-lora8", 8)])
def test_registered_ranks_and_counts(name, r):
    arch = PMODELS[name]
    assert arch.rank == r and arch.base == "cnn-5k" and not arch.head_only
    assert arch.layout(10).n_params == _conv_lora_params(r) + 330
    assert arch.layout(4).n_params == _conv_lora_params(r) + 4 * 33


def test_schema_lists_the_lora_archs():
    from benchmarks.config import load_schema
    enum = load_schema()["properties"]["archs"]["items"]["enum"]
    assert set(LORA_ARCHS) <= set(enum)


def test_personalized_names_match_trainable_params_and_shared_A_init():
    arch = get_arch("cnn-5k-lora")
    a, b = arch.build(10), arch.build(10)
    names = arch.personalized_names(a)
    assert names == [n for n, p in a.named_parameters() if p.requires_grad]
    assert names[-2:] == ["fc.weight", "fc.bias"]
    # every p-Model starts from the same A (one coordinate frame for the zoo) and B = 0
    assert torch.equal(a.conv1.lora_A["default"].weight, b.conv1.lora_A["default"].weight)
    assert a.conv2.lora_B["default"].weight.abs().sum() == 0


def test_from_generic_with_zero_B_is_classifier_selection_exactly(tiny):
    idx = [5, 1, 3, 7]
    lora = get_arch("cnn-5k-lora").from_generic(tiny.generic.state, idx).eval()
    plain = get_arch("cnn-5k").from_generic(tiny.generic.state, idx).eval()
    assert torch.equal(lora.conv1.base_layer.weight, tiny.generic.state["conv1.weight"])
    assert torch.equal(lora.fc.weight, tiny.generic.state["fc.weight"][idx])
    x = to_float(tiny.images.test_x[:50])
    with torch.no_grad():
        assert torch.equal(lora(x), plain(x))


def test_functional_evaluate_equals_module_forward(tiny):
    arch = get_arch("cnn-5k-lora")
    tasks = get_split(tiny.tasks, "zoo")[:3]
    index = {c: i for i, c in enumerate(tiny.generic.classes)}
    g = torch.Generator().manual_seed(0)
    thetas, expected = [], []
    for task in tasks:
        idx = [index[c] for c in task["classes"]]
        model = arch.from_generic(tiny.generic.state, idx).eval()
        with torch.no_grad():  # move every personalized tensor away from its init, B included
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn(p.shape, generator=g))
            x, y = task_data(tiny.images.test_x, tiny.images.test_y, idx)
            expected.append(100.0 * (model(to_float(x)).argmax(1) == y).float().mean().item())
        thetas.append(arch.layout(4).flatten(dict(model.named_parameters())))
    df = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, torch.stack(thetas), arch=arch)
    assert df["accuracy"].tolist() == pytest.approx(expected)


def test_finetune_trains_only_lora_and_head_and_beats_chance(tiny, monkeypatch):
    import benchmarks.train as train
    arch = get_arch("cnn-5k-lora")
    built = []
    original = train.init_pmodel
    monkeypatch.setattr(train, "init_pmodel", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    tasks = get_split(tiny.tasks, "zoo")[:2]
    index = {c: i for i, c in enumerate(tiny.generic.classes)}
    thetas = []
    for task in tasks:
        idx = [index[c] for c in task["classes"]]
        theta, acc = finetune_task(tiny.generic, tiny.images.train_x, tiny.images.train_y, idx,
                                   FinetuneConfig(epochs=3, batch_size=32), seed=0, device=torch.device("cpu"), arch=arch)
        model = built[-1]
        # the frozen body is the generic's, untouched; the head and adapters moved
        assert torch.equal(model.conv1.base_layer.weight, tiny.generic.state["conv1.weight"])
        assert torch.equal(model.conv2.base_layer.weight, tiny.generic.state["conv2.weight"])
        start = arch.layout(4).unflatten(arch.layout(4).flatten(dict(arch.from_generic(tiny.generic.state, idx)
                                                                      .named_parameters())))
        after = arch.layout(4).unflatten(theta)
        for name in after:
            assert not torch.equal(after[name], start[name]), f"{name} did not train"
        assert acc > 1 / 4
        thetas.append(theta)
    df = evaluate(tiny.generic, tiny.images.test_x, tiny.images.test_y, tasks, torch.stack(thetas), arch=arch)
    assert df["accuracy"].mean() > 2 * 100 / 4  # 4-way tasks: chance 25%


@pytest.mark.parametrize("kwargs,match", [
    ({"rank": 0}, "positive integer"),
    ({"rank": 17}, "exceeds the full rank"),  # conv1 3->16: rank <= 16
    ({"rank": 4, "targets": ("conv9",)}, r"conv9.*\['conv1', 'conv2'\]"),
    ({"rank": 4, "targets": ("fc",)}, r"personalized in full.*\['conv1', 'conv2'\]"),
])
def test_bad_rank_or_target_names_existing_layers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lora_arch("cnn-5k", **kwargs)


def test_lora_needs_a_full_body_base():
    with pytest.raises(ValueError, match="head"):
        lora_arch("resnet20-head", 4)
    with pytest.raises(ValueError, match="unknown base arch"):
        lora_arch("vgg", 4)
