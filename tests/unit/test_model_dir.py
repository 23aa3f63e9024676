"""Any Llama-family model directory scaffolds: the torchtune builder, checkpoint files and resources come from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.scaffold import ScaffoldError
from reconciler.scaffold.finetune_config import torchtune_model
from reconciler.scaffold.model_dir import llama_builder, read_model_dir
from reconciler.scaffold.render import render_unit
from reconciler.scaffold.resources import resources_for, size_by_parameters
from reconciler.spec.load import load_spec
from reconciler.spec.units import expand

# config.json of meta-llama/Llama-3.2-1B-Instruct (its published values) and of the tiny demo model.
LLAMA_3_2_1B = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": True,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
TINY = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 64, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
    "rope_parameters": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"},
}


def model_dir(tmp: Path, config: dict | None, name: str = "model", shards: int = 0) -> Path:
    d = tmp / name
    (d / "original").mkdir(parents=True)
    (d / "original" / "tokenizer.model").write_text("IQ== 0\n")
    (d / "tokenizer.json").write_text("{}")
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    if shards:
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {f"w{i}": n for i, n in enumerate(names)}}))
    else:
        (d / "model.safetensors").write_bytes(b"\0" * 8)
    return d


def test_a_llama_3_2_directory_maps_to_the_generic_builder_with_its_dimensions(tmp_path: Path) -> None:
    builder = llama_builder(read_model_dir(model_dir(tmp_path, TINY)), "models.base[tiny]")
    assert builder.component == "torchtune.models.llama3_2.lora_llama3_2"
    assert builder.model_type == "LLAMA3_2"
    assert builder.arguments == {
        "vocab_size": 128256, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "embed_dim": 64,
        "max_seq_len": 131072, "intermediate_dim": 256, "norm_eps": 1e-05, "rope_base": 500000,
        "scale_factor": 32, "tie_word_embeddings": True,
    }


def test_llama_3_1_and_3_map_to_their_own_builders(tmp_path: Path) -> None:
    untied = {**LLAMA_3_2_1B, "tie_word_embeddings": False, "rope_scaling": {**LLAMA_3_2_1B["rope_scaling"], "factor": 8.0}}
    b = llama_builder(read_model_dir(model_dir(tmp_path, untied, "a")), "x")
    assert (b.component, b.arguments["scale_factor"]) == ("torchtune.models.llama3_1.lora_llama3_1", 8)
    plain = {k: v for k, v in untied.items() if k != "rope_scaling"}
    b = llama_builder(read_model_dir(model_dir(tmp_path, plain, "b")), "x")
    assert b.component == "torchtune.models.llama3.lora_llama3" and "scale_factor" not in b.arguments


@pytest.mark.parametrize("config, message", [
    (None, "no config.json"),
    ({**TINY, "model_type": "qwen2"}, "model_type 'qwen2' is not a Llama model"),
    ({**TINY, "head_dim": 32}, "head_dim 32 x 4 heads is not hidden_size 64"),
    ({k: v for k, v in TINY.items() if k != "hidden_size"}, "missing or invalid dimension"),
])
def test_directories_the_scaffold_cannot_map_say_why(tmp_path: Path, config: dict | None, message: str) -> None:
    with pytest.raises(ScaffoldError, match=message):
        llama_builder(read_model_dir(model_dir(tmp_path, config)), "models.base[m]")


def test_parameter_counts_match_the_published_ones(tmp_path: Path) -> None:
    # Llama-3.2-1B: 1,235,814,400 parameters (tied embeddings counted once).
    assert read_model_dir(model_dir(tmp_path, LLAMA_3_2_1B, "big")).parameters == 1_235_814_400
    tiny = read_model_dir(model_dir(tmp_path, TINY, "tiny")).parameters
    assert tiny is not None and 8_000_000 < tiny < 9_000_000
    assert size_by_parameters(tiny) == "1B" and size_by_parameters(7_500_000_000) == "8B"


def spec_with(tmp: Path, model: Path, name: str = "tiny-llama", compute: str = "") -> Path:
    (tmp / "d.json").write_text('{"train": [], "validation": [], "test": []}')
    (tmp / "experiment_summary.yaml").write_text(f"""
experiment: {{name: "e", question: "q", date: "2026-01-01", dir: "."}}
tools: {{preparation: "torchtune"}}
controls: {{system_prompt: "", prompt: "{{input}}", dataset_type: "chat_completion", epochs: 2, batch_size: 4}}
models: {{base: [{{name: "{name}", path: "{model}"}}]}}
data: {{training: {{path: "d.json"}}}}
runs:
  - {{name: "r", type: "fine-tuned", model: "{name}", parameters: {{lora_rank: 4}}{compute}}}
evaluation:
  tasks: [{{name: "t", script: "t.py"}}]
  matrix: [{{run: "r", tasks: ["t"], epochs: [0, 1]}}]
""")
    return tmp / "experiment_summary.yaml"


def test_a_model_without_a_size_in_its_name_renders_from_its_directory(tmp_path: Path) -> None:
    model = model_dir(tmp_path, TINY, shards=2)
    desired = expand(load_spec(spec_with(tmp_path, model, compute=", compute: {device: cpu, dtype: fp32}")))
    unit = desired.by_key()["finetune/r"]
    rendered = render_unit(desired, unit)
    config = yaml.safe_load(next(f.text for f in rendered.files if f.path.name == "finetune.yaml"))
    assert config["model"]["_component_"] == "torchtune.models.llama3_2.lora_llama3_2"
    assert config["model"]["embed_dim"] == 64 and config["model"]["lora_rank"] == 4
    assert config["checkpointer"]["model_type"] == "LLAMA3_2"
    assert config["checkpointer"]["checkpoint_files"] == ["model-00001-of-00002.safetensors",
                                                          "model-00002-of-00002.safetensors"]
    assert (config["device"], config["dtype"]) == ("cpu", "fp32")
    assert not rendered.warnings  # sized from config.json, not guessed
    res = resources_for(desired.loaded, unit)
    assert res.size == "1B" and not res.warnings


def test_without_an_override_the_config_is_for_a_gpu(tmp_path: Path) -> None:
    desired = expand(load_spec(spec_with(tmp_path, model_dir(tmp_path, TINY))))
    rendered = render_unit(desired, desired.by_key()["finetune/r"])
    config = yaml.safe_load(next(f.text for f in rendered.files if f.path.name == "finetune.yaml"))
    assert (config["device"], config["dtype"]) == ("cuda", "bf16")
    assert "#SBATCH --gres=gpu:1" in rendered.script.text


def test_a_named_component_is_used_as_given(tmp_path: Path) -> None:
    model = model_dir(tmp_path, {**TINY, "model_type": "qwen2"})
    path = spec_with(tmp_path, model)
    path.write_text(path.read_text().replace(f'path: "{model}"}}',
                                             f'path: "{model}", component: "torchtune.models.qwen2_5.lora_qwen2_5_0_5b", '
                                             'model_type: "QWEN2"}'))
    desired = expand(load_spec(path))
    config = yaml.safe_load(next(f.text for f in render_unit(desired, desired.by_key()["finetune/r"]).files
                                 if f.path.name == "finetune.yaml"))
    assert config["model"]["_component_"] == "torchtune.models.qwen2_5.lora_qwen2_5_0_5b"
    assert config["checkpointer"]["model_type"] == "QWEN2"


def run_view(tmp: Path, files: list[str]) -> Path:
    """Run the eval script's checkpoint-view step on a checkpoint holding `files`."""
    import subprocess
    import sys

    from reconciler.scaffold.render import CHECKPOINT_VIEW_PY

    checkpoint, view = tmp / "epoch_0", tmp / "view"
    (checkpoint / "original").mkdir(parents=True)
    for name in files:
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_text('{"r": 4, "base_model_name_or_path": null}')
    subprocess.run([sys.executable, "-", str(checkpoint), "/models/base", str(view)], input=CHECKPOINT_VIEW_PY,
                   text=True, check=True)
    return view


def test_a_merged_checkpoint_is_loaded_without_its_adapter_files(tmp_path: Path) -> None:
    """transformers 5 with peft would apply the adapter a second time on top of the merged weights."""
    view = run_view(tmp_path, ["model-00001-of-00001.safetensors", "model.safetensors.index.json", "config.json",
                               "tokenizer.json", "adapter_config.json", "adapter_model.safetensors",
                               "adapter_model.pt", "adapter_weights/adapter_config.json"])
    assert sorted(p.name for p in view.iterdir()) == ["config.json", "model-00001-of-00001.safetensors",
                                                      "model.safetensors.index.json", "original", "tokenizer.json"]
    assert all(p.is_symlink() for p in view.iterdir())


def test_an_adapter_only_checkpoint_names_its_local_base_model(tmp_path: Path) -> None:
    """Without config.json transformers takes the directory for an adapter and loads the base named in it."""
    view = run_view(tmp_path, ["config.json", "tokenizer.json", "adapter_config.json", "adapter_model.safetensors"])
    assert sorted(p.name for p in view.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "original", "tokenizer.json"]
    assert json.loads((view / "adapter_config.json").read_text()) == {"r": 4, "base_model_name_or_path": "/models/base"}
    assert not (view / "adapter_config.json").is_symlink()
    # The checkpoint itself is untouched; a second run replaces the view's links.
    assert json.loads((tmp_path / "epoch_0" / "adapter_config.json").read_text())["base_model_name_or_path"] is None


@pytest.mark.parametrize(("name", "component"), [
    ("Foo-1B", "torchtune.models.llama3_2.lora_llama3_2_1b"),
    ("Qwen2.5-3B", "torchtune.models.llama3_2.lora_llama3_2_3b"),
    ("Mistral-7B-v0.1", "torchtune.models.llama3_1.lora_llama3_1_8b"),
    ("Qwen2-72B", "torchtune.models.llama3_3.lora_llama3_3_70b"),
])
def test_a_model_out_of_sight_renders_the_llama_model_of_its_size(tmp_path: Path, name: str, component: str) -> None:
    # No Llama 3.x name and no directory to read: the size table's row picks the model, with a warning.
    model, warning = torchtune_model(name, read_model_dir(tmp_path / "not-mounted-here"))
    assert model.component == component
    assert warning is not None and f"rendering {component}" in warning
