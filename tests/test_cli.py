"""clear-native measure MODEL, offline, with local config files (issue 13, item 6). Measuring needs a
GPU; everything before it (the config, the model, its inputs, the plan) runs here."""

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from clear_native import cli  # noqa: E402


@pytest.fixture
def configs(tmp_path):
    T.LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=128, vocab_size=100, architectures=["LlamaForCausalLM"]).save_pretrained(
        tmp_path / "llama")
    T.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=8, architectures=["ViTModel"]).save_pretrained(tmp_path / "vit")
    T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, vocab_size=100,
               architectures=["T5ForConditionalGeneration"]).save_pretrained(tmp_path / "t5")
    return tmp_path


def test_a_local_folder_is_planned_with_its_layers_cut(configs, capsys):
    assert cli.main(["measure", str(configs / "llama"), "--dry-run", "--layers", "2", "--seq", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LlamaForCausalLM (prefill, batch 1 x 16, bf16)")
    assert "2 blocks in 1 groups" in out                      # 4 layers cut to 2
    assert "| model.layers.0.self_attn | self_attention | 2 |" in out
    assert "| model.layers.0 | block | 2 |" in out


def test_a_config_file_of_a_vision_model_and_a_decode_step(configs, capsys):
    assert cli.main(["measure", str(configs / "vit" / "config.json"), "--dry-run", "--batch", "2"]) == 0
    assert "ViTModel (prefill, batch 2" in capsys.readouterr().out
    assert cli.main(["measure", str(configs / "t5"), "--dry-run", "--mode", "decode", "--cache-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "T5ForConditionalGeneration (decode" in out and "| decoder.block.0 | block |" in out


def test_inputs_follow_the_model_kind(configs):
    model = cli.build(cli.load_config(str(configs / "vit")), "fp32", "cpu")
    (pixels,), kw = cli.inputs_for(model, 2, 128, "cpu")
    assert pixels.shape == (2, 3, 32, 32) and kw == {}
    model = cli.build(cli.load_config(str(configs / "t5")), "fp32", "cpu")
    (ids,), kw = cli.inputs_for(model, 3, 7, "cpu")
    assert ids.shape == (3, 7) and kw["decoder_input_ids"].shape == (3, 7) and int(ids.max()) < 100


def test_bad_input_is_one_line_and_exit_2(configs, capsys, monkeypatch):
    assert cli.main(["measure", str(configs / "nonesuch")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clear-native: no transformers config for") and len(err.splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["measure", str(configs / "llama")]) == 2
    assert "needs an NVIDIA GPU" in capsys.readouterr().err
    for bad in (["--batch", "0"], ["--instances", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["measure", str(configs / "llama"), *bad])
        assert "must be >= 1" in capsys.readouterr().err


def test_repeats_in_fresh_processes_say_how_much_each_number_moves(configs, tmp_path, capsys):
    # Issue 14: measure again in fresh processes on request; on the simulated GPU, each process its own noise.
    out = tmp_path / "rep"
    assert cli.main(["measure", str(configs / "llama"), "--simulate", "--seq", "16", "--window-s", "0.1",
                     "--repeats", "3", "--instances", "4", "--out", str(out)]) == 0
    import json

    reports = [json.loads((out / f"repeat{i}" / "report.json").read_text()) for i in (1, 2, 3)]
    # --instances reaches every repeat: each part over 4 graphs of it (Note [Graph instances]), said in the report.
    assert all(r["run"]["settings"]["instances"] == 4 and {g["graph_instances"] for g in r["groups"]} == {4}
               for r in reports)
    res = json.loads((out / "repeats.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert res["repeats"] == 3 and "whole model" in rows and "model.layers.0.mlp" in rows
    whole = [r["whole"]["energy_per_call_j"] for r in reports]
    assert rows["whole model"]["energy_per_call_j"] == pytest.approx(sum(whole) / 3)
    for r in rows.values():
        assert r["processes"] == 3 and 0 < r["process_sd_rel"] < 0.02      # they differ, a little
        assert r["interval95_rel"] >= max(r["max_ci95_rel"], 1.96 * r["process_sd_rel"])
    assert "fresh process" in (out / "REPEATS.md").read_text()
    assert "| whole model |" in capsys.readouterr().out
