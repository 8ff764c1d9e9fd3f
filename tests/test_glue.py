"""GLUE LoRA zoos and Cond P-Diff on them, on a tiny random BERT and GLUE-format TSVs made here."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.datasets import MissingDataError
from benchmarks.glue import (ZooConfig, build_zoo, evaluate_vectors, load_backbone, load_split, lora_model,
                             matthews, personalized_layout)

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "a", "plot", "cast"]
TINY_ZOO = ZooConfig(rank=2, targets=("query", "value"), steps=150, save_last=3, lr=2e-2, batch_size=16,
                     max_length=16)
TINY_CPD = dict(ae_steps=20, diffusion_steps=10, fold=4, ae_layers=2, ae_width=8, unet_width=16, emb_dim=32,
                batch_size=4, sampler="ddpm", sample_steps=4, n_candidates=2, checkpoint_every=0)


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """(model dir, GLUE root): a 1-layer random BERT with a word-level vocab, and SST-2/RTE-format TSVs whose
    labels follow from the words (so a LoRA fine-tune can learn them)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
    root = tmp_path_factory.mktemp("glue")
    model_dir = root / "tiny-bert"
    model_dir.mkdir()
    vocab = model_dir / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(model_dir)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(model_dir)
    rng = random.Random(0)

    def sentence(positive: bool) -> str:
        mood = rng.choice(WORDS[:3] if positive else WORDS[3:6])
        return " ".join(rng.sample(WORDS[6:], 3) + [mood])

    for folder, kind in (("SST-2", "sst2"), ("RTE", "rte")):
        (root / folder).mkdir()
        for split, n in (("train", 120), ("dev", 40)):
            labels = [rng.random() < 0.5 for _ in range(n)]
            if kind == "sst2":
                df = pd.DataFrame({"sentence": [sentence(y) for y in labels], "label": [int(y) for y in labels]})
            else:  # "entails" when both halves share the mood
                df = pd.DataFrame({"index": range(n), "sentence1": [sentence(True) for _ in labels],
                                   "sentence2": [sentence(y) for y in labels],
                                   "label": ["entailment" if y else "not_entailment" for y in labels]})
            df.to_csv(root / folder / f"{split}.tsv", sep="\t", index=False)
    return model_dir, root


def test_load_split_reads_glue_tsvs_and_names_what_is_missing(glue, tmp_path):
    _, root = glue
    rte = load_split(root, "rte", "dev")
    assert len(rte.texts) == 40 and len(rte.texts[0]) == 2 and set(rte.labels.tolist()) <= {0, 1}
    assert len(load_split(root, "sst2", "train", limit=10).labels) == 10
    with pytest.raises(MissingDataError, match="MRPC/train.tsv"):
        load_split(root, "mrpc", "train")
    with pytest.raises(ValueError, match="unknown GLUE task 'stsb'"):
        load_split(root, "stsb", "train")
    with pytest.raises(MissingDataError, match="not available offline"):
        load_backbone(str(tmp_path / "no-such-model"))


def test_zoo_vectors_are_the_trained_adapters_and_classifier(glue):
    model_dir, root = glue
    backbone, tokenizer = load_backbone(str(model_dir))
    zoo = build_zoo(backbone, tokenizer, root, ["sst2", "rte"], TINY_ZOO, seed=0)
    assert zoo["task_ids"] == ["sst2#147", "sst2#148", "sst2#149", "rte#147", "rte#148", "rte#149"]
    layout = personalized_layout(lora_model(backbone, 2, 8.0, ["query", "value"]))
    assert zoo["theta"].shape == (6, layout.n_params) and torch.isfinite(zoo["theta"]).all()
    assert any(".lora_A." in n for n in zoo["names"]) and zoo["names"][-1].endswith("bias")
    assert not any("word_embeddings" in n for n in zoo["names"])  # the backbone stays frozen
    model = lora_model(backbone, 2, 8.0, ["query", "value"])
    dev = load_split(root, "sst2", "dev")
    fresh = layout.flatten(dict(model.named_parameters()))
    scores = evaluate_vectors(model, tokenizer, layout, torch.stack([fresh, zoo["theta"][2]]), dev, max_length=16)
    assert scores[1]["accuracy"] > 75 and scores[1]["accuracy"] > scores[0]["accuracy"]  # fine-tuning learned it
    with pytest.raises(ValueError, match="match no linear layer"):
        lora_model(backbone, 2, 8.0, ["q_proj"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_vectors(model, tokenizer, layout, torch.full((1, layout.n_params), float("nan")), dev)


def test_matthews_correlation():
    y = torch.tensor([0, 0, 1, 1])
    assert matthews(y, y) == pytest.approx(1.0) and matthews(1 - y, y) == pytest.approx(-1.0)
    assert matthews(torch.ones(4, dtype=torch.long), y) == 0.0


@pytest.mark.slow  # the CLI in subprocesses; the functions are unit-tested above
def test_glue_commands_end_to_end(glue, tmp_path):
    model_dir, root = glue
    nndiff = [sys.executable, "-m", "benchmarks.cli"]
    zoo = tmp_path / "zoo.pt"
    subprocess.run(nndiff + ["glue-zoo", "--model", str(model_dir), "--root", str(root), "--tasks", "sst2", "rte",
                             "--lora", '{"rank": 2}', "--train", '{"steps": 30, "save_last": 4, "lr": 0.005, '
                             '"batch_size": 16, "max_length": 16}', "--out", str(zoo)], check=True,
                   cwd=Path(__file__).parent.parent)
    import json
    out = tmp_path / "glue.md"
    run = subprocess.run(nndiff + ["glue-run", "--zoo", str(zoo), "--root", str(root), "--options",
                                   json.dumps(dict(TINY_CPD, condition="one-hot")), "--workdir", str(tmp_path / "cpd"),
                                   "--select-examples", "16", "--out", str(out)], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    df = pd.read_csv(out.with_suffix(".csv"))
    assert set(df.task) == {"sst2", "rte"} and len(df) == 8
    assert df.accuracy.between(0, 100).all() and "commit" in out.read_text()
