import pytest
import torch

from benchmarks.pmodels import PMODELS, Layout, get_arch


@pytest.mark.parametrize("name,k,n", [("cnn-5k", 10, 5370), ("cnn-14k", 10, 14586), ("resnet20-head", 10, 650),
                                      ("vit-b32-head", 10, 5130)])
def test_personalized_parameter_counts(name, k, n):
    # the official code's counts (docs/design-notes.md §6.1): ConvNet 5,370; ConvNet10k 14,586; ResNet20 head 650;
    # ViT head 5,130.
    assert get_arch(name).layout(k).n_params == n


def test_resnet20_total_size():
    total = sum(p.numel() for p in get_arch("resnet20-head").build(10).parameters())
    assert 265_000 < total < 275_000  # "~272K" (paper 3.1)


@pytest.mark.parametrize("name", ["cnn-5k", "cnn-14k", "resnet20-head"])
def test_flatten_unflatten_round_trip(name):
    arch = get_arch(name)
    model = arch.build(7)
    layout = arch.layout(7)
    params = dict(model.named_parameters())
    theta = layout.flatten(params)
    assert theta.shape == (layout.n_params,)
    back = layout.unflatten(theta)
    for seg in layout.segments:
        assert torch.equal(back[seg.name], params[seg.name].detach())
    # segments tile the vector exactly, in order
    assert layout.segments[0].offset == 0 and layout.segments[-1].stop == layout.n_params


def test_unflatten_keeps_batch_dims_and_rejects_wrong_size():
    layout = get_arch("cnn-5k").layout(10)
    theta = torch.randn(3, 2, layout.n_params)
    assert layout.unflatten(theta)["conv1.weight"].shape == (3, 2, 16, 3, 3, 3)
    with pytest.raises(ValueError, match="5370"):
        layout.unflatten(torch.randn(5))


def test_head_rows_and_assemble_are_inverse():
    layout = get_arch("cnn-5k").layout(10)
    theta = torch.randn(4, layout.n_params)
    rows = layout.head_rows(theta)
    assert rows.shape == (4, 10, 33)
    assert torch.equal(layout.assemble(layout.body(theta), rows), theta)


def test_take_rows_selects_classes_in_task_order():
    full = get_arch("cnn-5k").layout(12)
    theta = torch.randn(full.n_params)
    rows = torch.tensor([[3, 0, 7], [11, 5, 2]])
    out = full.take_rows(theta, rows)
    small = full.with_classes(3)
    assert out.shape == (2, small.n_params)
    w_full = full.unflatten(theta)["fc.weight"]
    assert torch.equal(small.unflatten(out[1])["fc.weight"], w_full[[11, 5, 2]])
    assert torch.equal(small.body(out[0]), full.body(theta))


def test_functional_forward_matches_module():
    from torch.func import functional_call
    arch = get_arch("cnn-5k")
    model = arch.build(10).eval()
    layout = arch.layout(10)
    theta = layout.flatten(dict(model.named_parameters()))
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(functional_call(model, layout.unflatten(theta), (x,)), model(x), atol=1e-6)


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match="cnn-5k"):
        get_arch("mlp")
    assert set(PMODELS) >= {"cnn-5k", "cnn-14k", "resnet20-head", "vit-b32-head"}
    assert isinstance(get_arch("cnn-5k").layout(), Layout)
