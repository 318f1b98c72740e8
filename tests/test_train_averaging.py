"""Checkpoint averaging on real train.py checkpoints: the mean by hand, selection, export, refusals."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from composer.loggers import InMemoryLogger
from conftest import cli_error
from test_train_entrypoint import wiki_shards, write_yaml  # noqa: F401  (wiki_shards is a fixture)

from modernenc.cli import main
from modernenc.model import ModernEncoderForMaskedLM
from modernenc.train.averaging import average_checkpoints, list_checkpoints, select_best, select_last
from modernenc.train.builders import build_trainer
from modernenc.train.config import load_config

EVAL_LOSS = {}  # batch -> held-out MLM cross-entropy, as composer logged it while training


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, wiki_shards) -> Path:  # noqa: F811
    """Three batches of `tiny`, an evaluation and a checkpoint after each."""
    folder = tmp_path_factory.mktemp("avg")
    eval_shards = shutil.copytree(wiki_shards, folder / "eval")
    overrides = [
        "max_duration=3ba",
        "save_interval=1ba",
        "save_num_checkpoints_to_keep=-1",
        f"data.eval={eval_shards}",
        "eval_interval=1ba",
        "eval_subset_num_batches=1",
    ]
    memory = InMemoryLogger()
    trainer = build_trainer(load_config(write_yaml(folder, wiki_shards), overrides), loggers=[memory])
    trainer.fit()
    trainer.close()
    EVAL_LOSS.update({int(ts.batch): float(v) for ts, v in memory.data["metrics/eval/LanguageCrossEntropy"]})
    return folder / "run"


def model_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def test_checkpoints_are_listed_by_step_without_the_latest_symlink(run_folder):
    assert (run_folder / "latest-rank0.pt").is_symlink()
    found = list_checkpoints(run_folder)
    assert [(c.path.name, c.batch) for c in found] == [(f"ep0-ba{b}-rank0.pt", b) for b in (1, 2, 3)]
    assert [c.batch for c in select_last(found, 2)] == [2, 3]
    with pytest.raises(ValueError, match="asked for 4 checkpoints but the folder holds 3"):
        select_last(found, 4)


def test_average_of_the_last_two_is_their_mean(run_folder, tmp_path):
    out = average_checkpoints(
        [run_folder / "ep0-ba2-rank0.pt", run_folder / "ep0-ba3-rank0.pt"], tmp_path / "a.pt"
    )
    a, b = model_state(run_folder / "ep0-ba2-rank0.pt"), model_state(run_folder / "ep0-ba3-rank0.pt")
    averaged = torch.load(out, map_location="cpu", weights_only=False)
    got = averaged["state"]["model"]
    assert set(got) == set(a)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            expected = ((value.double() + b[key].double()) / 2).float()
            assert torch.allclose(got[key], expected, rtol=1e-6, atol=1e-9), key
    assert not torch.equal(
        a["model.model.layers.0.attn.Wqkv.weight"], b["model.model.layers.0.attn.Wqkv.weight"]
    )
    tied = got["model.decoder.weight"], got["model.model.embeddings.tok_embeddings.weight"]
    assert tied[0].data_ptr() == tied[1].data_ptr()  # still tied, stored once
    assert averaged["state"]["timestamp"]["Timestamp"]["batch"] == 3  # the rest is the newest's
    assert averaged["modernenc_averaged_from"] == [
        str((run_folder / f"ep0-ba{k}-rank0.pt").resolve()) for k in (2, 3)
    ]


def test_integer_tensors_are_taken_from_the_newest_not_averaged(run_folder, tmp_path):
    paths = []
    for batch, count in ((2, 4), (3, 7)):
        checkpoint = torch.load(
            run_folder / f"ep0-ba{batch}-rank0.pt", map_location="cpu", weights_only=False
        )
        checkpoint["state"]["model"]["model.counter"] = torch.tensor([count])
        paths.append(tmp_path / f"ep0-ba{batch}-rank0.pt")
        torch.save(checkpoint, paths[-1])
    got = model_state(average_checkpoints(paths, tmp_path / "avg.pt"))
    assert got["model.counter"].tolist() == [7] and got["model.counter"].dtype == torch.int64


def test_best_by_the_default_metric_picks_the_lowest_eval_loss(run_folder, tmp_path, capsys):
    assert sorted(EVAL_LOSS) == [1, 2, 3]  # evaluated at every checkpoint's step
    ranked = sorted(EVAL_LOSS, key=EVAL_LOSS.get)
    found = list_checkpoints(run_folder)
    assert [c.batch for c in select_best(found, 2, "eval/LanguageCrossEntropy", minimize=True)] == sorted(
        ranked[:2]
    )
    assert [c.batch for c in select_best(found, 2, "LanguageCrossEntropy", minimize=False)] == sorted(
        ranked[1:]
    )
    out = tmp_path / "best.pt"
    main(["average-checkpoints", str(run_folder), str(out), "--best", "2"])
    assert "ranked by eval/LanguageCrossEntropy (lower is better)" in capsys.readouterr().out
    expected = average_checkpoints(
        [run_folder / f"ep0-ba{b}-rank0.pt" for b in sorted(ranked[:2])], tmp_path / "r.pt"
    )
    key = "model.model.layers.1.mlp.Wi.weight"
    assert torch.equal(model_state(out)[key], model_state(expected)[key])


def test_an_unlogged_metric_is_named_with_the_logged_ones(run_folder):
    with pytest.raises(ValueError, match=r"no logged metric 'F1'; logged: eval/LanguageCrossEntropy, .*loss"):
        select_best(list_checkpoints(run_folder), 2, "F1", minimize=False)


def test_a_metric_not_evaluated_at_a_checkpoint_step_is_refused(run_folder, tmp_path):
    checkpoint = torch.load(run_folder / "ep0-ba3-rank0.pt", map_location="cpu", weights_only=False)
    checkpoint["state"]["callbacks"]["TrainingCurves"]["history"]["eval/F1"] = [(2, 0.5), (3, 0.6)]
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run_folder / "ep0-ba1-rank0.pt", folder / "ep0-ba1-rank0.pt")
    torch.save(checkpoint, folder / "ep0-ba3-rank0.pt")
    chosen = select_best(list_checkpoints(folder), 1, "F1", minimize=False)  # bare names get eval/
    assert [c.batch for c in chosen] == [3]
    with pytest.raises(ValueError, match=r"no evaluation at the step of ep0-ba1-rank0.pt"):
        select_best(list_checkpoints(folder), 2, "F1", minimize=False)


def test_cli_writes_a_checkpoint_export_hf_reads_and_refuses_to_overwrite(run_folder, tmp_path, capsys):
    out, hf = tmp_path / "avg.pt", tmp_path / "hf"
    main(["average-checkpoints", str(run_folder), str(out), "--last", "2", "--hf-out", str(hf)])
    averaged = model_state(out)
    model = ModernEncoderForMaskedLM.from_pretrained(hf)
    key = "model.layers.2.attn.Wo.weight"
    assert torch.equal(model.state_dict()[key], averaged[f"model.{key}"])
    main(["export-hf", str(out), str(tmp_path / "hf2")])  # the averaged file is a train.py checkpoint
    before = out.read_bytes()
    message = cli_error(capsys, "average-checkpoints", str(run_folder), str(out), "--last", "3")
    assert "already exists; pass --force" in message
    assert out.read_bytes() == before
    main(["average-checkpoints", str(run_folder), str(out), "--last", "3", "--force", "--hf-out", str(hf)])
    assert out.read_bytes() != before


def test_mismatched_shapes_are_refused_naming_the_tensor(run_folder, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run_folder / "ep0-ba2-rank0.pt", folder / "ep0-ba2-rank0.pt")
    checkpoint = torch.load(run_folder / "ep0-ba3-rank0.pt", map_location="cpu", weights_only=False)
    key = "model.model.layers.1.mlp.Wi.weight"
    checkpoint["state"]["model"][key] = checkpoint["state"]["model"][key][:8]
    torch.save(checkpoint, folder / "ep0-ba3-rank0.pt")
    message = cli_error(capsys, "average-checkpoints", str(folder), str(tmp_path / "avg.pt"), "--last", "2")
    assert re.search(rf"tensor {key} has shape \(384, 128\) in ep0-ba2-rank0.pt", message)
    assert not (tmp_path / "avg.pt").exists()


def test_a_model_of_another_size_is_named_by_its_sizes_in_one_short_line(run_folder, tmp_path, capsys):
    """A checkpoint of another run (a model one layer shallower) among the run's: the message listed every
    tensor of the missing layer, hundreds of names for a base model."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(run_folder / "ep0-ba2-rank0.pt", folder / "ep0-ba2-rank0.pt")
    checkpoint = torch.load(run_folder / "ep0-ba3-rank0.pt", map_location="cpu", weights_only=False)
    state = checkpoint["state"]["model"]
    last = state["_extra_state"]["model_config"]["num_hidden_layers"] - 1
    for key in [k for k in state if k.startswith(f"model.model.layers.{last}.")]:
        del state[key]
    torch.save(checkpoint, folder / "ep0-ba3-rank0.pt")  # its tensors, with the config of the deeper model
    message = cli_error(capsys, "average-checkpoints", str(folder), str(tmp_path / "avg.pt"), "--last", "2")
    assert message.endswith(
        f"ep0-ba2-rank0.pt and ep0-ba3-rank0.pt hold different tensors: ep0-ba2-rank0.pt lacks none and has "
        f"extra model.model.layers.{last}.attn.Wo.weight, model.model.layers.{last}.attn.Wqkv.weight, "
        f"model.model.layers.{last}.attn_norm.weight, ... (6 in all)"
    )
    state["_extra_state"]["model_config"]["num_hidden_layers"] = last  # and now its own config too
    torch.save(checkpoint, folder / "ep0-ba3-rank0.pt")
    message = cli_error(capsys, "average-checkpoints", str(folder), str(tmp_path / "avg.pt"), "--last", "2")
    assert message.endswith("are different models: their configs differ in ['num_hidden_layers']")
    assert not (tmp_path / "avg.pt").exists()


def test_another_architecture_is_refused(run_folder, tmp_path):
    checkpoint = torch.load(run_folder / "ep0-ba3-rank0.pt", map_location="cpu", weights_only=False)
    checkpoint["state"]["model"]["_extra_state"]["model_config"]["global_attn_every_n_layers"] = 2
    torch.save(checkpoint, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"different models: their configs differ in \['global_attn_every"):
        average_checkpoints([run_folder / "ep0-ba2-rank0.pt", tmp_path / "other.pt"], tmp_path / "avg.pt")


def test_a_bad_tokenizer_or_output_name_fails_before_anything_is_written(run_folder, tmp_path, capsys):
    out, hf = tmp_path / "avg.pt", tmp_path / "hf"
    argv = ["average-checkpoints", str(run_folder), str(out), "--last", "2", "--hf-out", str(hf)]
    message = cli_error(capsys, *argv, "--tokenizer", str(tmp_path / "nowhere"))
    assert message.startswith(
        "modernenc average-checkpoints: error: no tokenizer files (tokenizer.json, "
    ) and message.endswith(f" in {tmp_path / 'nowhere'}")
    assert not out.exists() and not hf.exists()  # so the corrected rerun needs no --force
    message = cli_error(capsys, *argv[:5], "--tokenizer", str(tmp_path))
    assert "error: --tokenizer is copied to the --hf-out folder" in message
    for name in ("avg", "avg.safetensors", "avg.PT"):  # init_from would read these as HF folders
        message = cli_error(
            capsys, "average-checkpoints", str(run_folder), str(tmp_path / name), "--last", "2"
        )
        assert message == (
            f"modernenc average-checkpoints: error: output {tmp_path / name} must end in .pt, the suffix "
            "model.init_from and export-hf expect of a checkpoint"
        )
        assert not (tmp_path / name).exists()
    with pytest.raises(ValueError, match=r"must end in \.pt"):
        average_checkpoints([run_folder / "ep0-ba3-rank0.pt"], tmp_path / "avg.bin")


def test_a_torn_member_is_named(run_folder, tmp_path, capsys):
    """What a kill during composer's in-place save leaves: the error names the file, not torch's reader."""
    torn = tmp_path / "run"
    torn.mkdir()
    for name in ("ep0-ba1-rank0.pt", "ep0-ba2-rank0.pt"):
        shutil.copy(run_folder / name, torn / name)
    whole = (torn / "ep0-ba2-rank0.pt").read_bytes()
    (torn / "ep0-ba2-rank0.pt").write_bytes(whole[: len(whole) // 3])
    message = cli_error(capsys, "average-checkpoints", torn, tmp_path / "avg.pt", "--last", "2")
    assert (
        f"{torn / 'ep0-ba2-rank0.pt'} is not a composer checkpoint written by train.py, or it was cut short"
        in message
    )
    assert not (tmp_path / "avg.pt").exists()
