"""Stage 1 / stage 2 training, the collator and the feature cache, on the tiny tower + real SmolLM2.

Runs are a few optimizer steps on the repo's EuroSAT subset; subprocess runs use the `python -m train.*` and
`accelerate launch` entry points exactly as a user would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DATA, REPO
from safetensors.torch import load_file

from train.data import IGNORE_INDEX, FeatureCache, SpectralLlavaCollator, feature_fingerprint, load_split

EUROSAT = os.path.join(DATA, "eurosat-ms")
PROJECTOR = "model.multi_modal_projector."
# few steps, short answers, no warm-up so that every step moves the weights
QUICK = dict(batch_size=2, grad_accum=1, warmup_ratio=0.0, lr=1e-3)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Spectral-Inst built from tests/data/eurosat-ms with the template captioner (80/10/10 patches)."""
    from train.spectral_inst import BuildConfig, build_dataset

    out = tmp_path_factory.mktemp("data") / "spectral-inst"
    build_dataset(BuildConfig(output=str(out), eurosat=EUROSAT))
    return str(out)


@pytest.fixture(scope="session")
def model_and_processor(tiny_model_dir):
    from train.common import load_model_and_processor

    return load_model_and_processor(tiny_model_dir)


@pytest.fixture(scope="session")
def aligned(tiny_model_dir, dataset_dir, tmp_path_factory):
    """Stage 1 (uncached), 2 steps on class-label text."""
    from train.align import run_alignment

    out = tmp_path_factory.mktemp("align") / "uncached"
    return run_alignment(tiny_model_dir, dataset_dir, out, max_steps=2, text="class-labels", **QUICK)


def weights(model_dir):
    return load_file(os.path.join(model_dir, "model.safetensors"))


def subprocess_env():
    return {**os.environ, "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def test_collator_masks_everything_but_the_answer(model_and_processor, dataset_dir):
    model, processor = model_and_processor
    records, roots = load_split(dataset_dir, "instructions", "train")
    classification = next(r for r in records if r["task"] == "classification")
    caption = next(r for r in records if r["task"] == "caption")
    batch = SpectralLlavaCollator(processor, roots)([classification, caption])

    assert batch["pixel_values"].shape == (2, 12, 32, 32)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    for row, record in enumerate((classification, caption)):
        assert int((ids[row] == processor.image_token_id).sum()) == model.num_image_tokens == 16
        answer = processor.tokenizer.decode(labels[row][labels[row] != IGNORE_INDEX])
        assert answer == record["conversations"][1]["value"] + "<|im_end|>\n"
        length = int(mask[row].sum())
        assert (labels[row, length:] == IGNORE_INDEX).all() and (mask[row, :length] == 1).all()
    # the prompt is the one used at inference: the processor's chat template with a generation prompt
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                                      classification["conversations"][0]["value"].split("\n", 1)[1]}]}],
        add_generation_prompt=True,
    )
    first_answer = int((labels[0] != IGNORE_INDEX).nonzero()[0])
    expected = processor(text=prompt, images=[torch.ones(12, 32, 32)], return_tensors="pt")["input_ids"][0]
    assert ids[0, :first_answer].tolist() == expected.tolist()


def test_feature_cache_matches_tower_and_is_invalidated(model_and_processor, dataset_dir, tmp_path):
    from train.spectral_inst import resolve_image_path

    model, processor = model_and_processor
    records, roots = load_split(dataset_dir, "patches", "test")
    images = {r["id"]: resolve_image_path(r["image_path"], roots) for r in records.select(range(5))}
    fingerprint = feature_fingerprint(model, processor.image_processor)
    cache = FeatureCache(tmp_path / "cache", fingerprint).build(model, processor.image_processor, images,
                                                                batch_size=2, shard_size=3)
    assert len(cache) == 5 and len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 2
    ids = list(images)[:3]
    pixels = processor.image_processor([images[i] for i in ids], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.model.select_vision_features(pixels)
    assert expected.shape == (3, 4 * 4 * 4, 64)  # 4 spectral groups x 4x4 patches, width 64
    torch.testing.assert_close(cache.get(ids), expected, rtol=0, atol=1e-6)

    # same tower and processing: reused as is; another processing config or other weights: a new fingerprint
    assert FeatureCache(tmp_path / "cache", fingerprint).open().get(ids[:1]).shape == (1, 64, 64)
    processor.image_processor.image_size, size = 64, processor.image_processor.image_size
    try:
        assert feature_fingerprint(model, processor.image_processor) != fingerprint
    finally:
        processor.image_processor.image_size = size
    layer_norm = model.model.vision_tower.post_layernorm.weight
    with torch.no_grad():
        layer_norm.add_(1.0)
    try:
        changed = feature_fingerprint(model, processor.image_processor)
        assert changed != fingerprint
        with pytest.raises(FileNotFoundError, match="another tower"):
            FeatureCache(tmp_path / "cache", changed).open()
        rebuilt = FeatureCache(tmp_path / "cache", changed).build(model, processor.image_processor,
                                                                  dict(list(images.items())[:2]))
        assert len(rebuilt) == 2 and len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 1
    finally:
        with torch.no_grad():
            layer_norm.sub_(1.0)


def test_stage1_trains_only_the_projector(aligned, tiny_model_dir):
    assert aligned["steps"] == 2
    before, after = weights(tiny_model_dir), weights(aligned["outputs"]["model"])
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if name.startswith(PROJECTOR)} and changed
    log = open(aligned["outputs"]["loss_csv"]).read().splitlines()
    assert log[0] == "step,epoch,loss,learning_rate,grad_norm" and len(log) == 3
    assert os.path.getsize(aligned["outputs"]["loss_curve"]) > 1000
    assert os.listdir(aligned["outputs"]["tensorboard"])
    hyper = json.load(open(os.path.join(os.path.dirname(aligned["outputs"]["loss_csv"]), "..", "hyperparameters.json")))
    assert hyper["text"] == "class-labels" and hyper["effective_batch_size"] == 2 and hyper["optimizer"].startswith("Adam")


def test_stage1_output_is_a_complete_model_dir(aligned):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = aligned["outputs"]["model"]
    for name in ("config.json", "processor_config.json", "chat_template.jinja", "README.md",
                 "modeling_spectral_llava.py", "processing_spectral_llava.py"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    model = AutoModelForImageTextToText.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    assert processor.num_image_tokens == model.num_image_tokens == 16


def test_cached_features_give_the_same_loss(aligned, tiny_model_dir, dataset_dir, tmp_path):
    from train.align import run_alignment

    cached = run_alignment(tiny_model_dir, dataset_dir, tmp_path / "cached", max_steps=2, text="class-labels",
                           cache_features=str(tmp_path / "features"), **QUICK)
    assert len(json.load(open(tmp_path / "features" / "index.json"))) == 80  # one entry per training image
    first = open(aligned["outputs"]["loss_csv"]).read().splitlines()[1:]
    second = open(cached["outputs"]["loss_csv"]).read().splitlines()[1:]
    for a, b in zip(first, second):
        assert abs(float(a.split(",")[2]) - float(b.split(",")[2])) <= 1e-6
    assert abs(aligned["final_loss"] - cached["final_loss"]) <= 1e-6


def test_stage2_adapter_and_merged_load_and_agree(aligned, dataset_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    from train.finetune import run_finetune

    base = aligned["outputs"]["model"]
    result = run_finetune(base, dataset_dir, tmp_path / "ft", max_steps=2, lora_r=8, lora_alpha=16, **QUICK)
    adapter, merged_dir = result["outputs"]["adapter"], result["outputs"]["merged"]
    adapter_weights = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    assert any("multi_modal_projector" in name for name in adapter_weights)
    assert any("lora_A" in name and "language_model" in name for name in adapter_weights)
    assert not any("vision_tower" in name for name in adapter_weights)

    with_adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=True),
                                             adapter).eval()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(merged_dir, trust_remote_code=True)
    records, roots = load_split(dataset_dir, "instructions", "test")
    batch = SpectralLlavaCollator(processor, roots)([records[0], records[1]])
    batch.pop("labels")
    with torch.no_grad():
        expected, got = with_adapter(**batch).logits, merged(**batch).logits
    # merging W + scale * B @ A rounds differently from applying LoRA on the fly: same logits to float32 noise
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    # the projector was trained in stage 2 as well, and the merged model carries it
    stage1 = weights(base)
    assert not torch.equal(weights(merged_dir)[PROJECTOR + "linear_1.weight"], stage1[PROJECTOR + "linear_1.weight"])

    pipe = pipeline("image-text-to-text", model=merged_dir, trust_remote_code=True)
    image = os.path.join(EUROSAT, "Forest", sorted(os.listdir(os.path.join(EUROSAT, "Forest")))[0])
    out = pipe(images=image, text=processor.build_prompt("classification"), max_new_tokens=4)
    assert isinstance(out[0]["generated_text"], str)


@pytest.mark.slow
def test_accelerate_launch_on_cpu(tiny_model_dir, dataset_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` trains; accelerate's launcher starts ONE process for it (its
    multi-CPU mode needs MPI), so real 2-process gloo DDP on CPU is checked through `--multi_gpu` (torchrun)."""
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    train = ["-m", "train.align", "--model", tiny_model_dir, "--dataset", dataset_dir, "--max-steps", "2",
             "--batch-size", "1", "--text", "class-labels", "--warmup-ratio", "0"]
    common = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    before = weights(tiny_model_dir)
    for mode, world_size in (("--cpu", 1), ("--multi_gpu", 2)):
        out = tmp_path / mode.strip("-")
        command = [accelerate, "launch", mode, *common, *train, "--output", str(out)]
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        hyper = json.load(open(out / "hyperparameters.json"))
        assert hyper["world_size"] == world_size and hyper["effective_batch_size"] == world_size
        assert len(open(out / "logs" / "loss.csv").read().splitlines()) == 3
        after = weights(out / "model")
        assert not torch.equal(before[PROJECTOR + "linear_1.weight"], after[PROJECTOR + "linear_1.weight"])
        assert torch.equal(before["model.language_model.norm.weight"], after["model.language_model.norm.weight"])


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tiny_model_dir, dataset_dir, tmp_path):
    def command(out, *extra):
        return [sys.executable, "-m", "train.align", "--model", tiny_model_dir, "--dataset", dataset_dir,
                "--output", str(out), "--max-steps", "6", "--save-steps", "2", "--batch-size", "2",
                "--text", "class-labels", "--seed", "3", *extra]

    env = subprocess_env()
    straight = tmp_path / "straight"
    subprocess.run(command(straight), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    marker = killed / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists() and not (killed / "model").exists(), "the run must die after a checkpoint, before the end"

    resumed = subprocess.run(command(killed, "--resume"), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.load(open(killed / "train_summary.json"))
    assert summary["resumed_from"].startswith(str(killed / "checkpoint-")) and summary["steps"] == 6
    a, b = weights(straight / "model"), weights(killed / "model")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert open(straight / "logs" / "loss.csv").read() == open(killed / "logs" / "loss.csv").read()


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = os.path.join(REPO, "train", "configs")
    expected = {"single_gpu_bf16": "NO", "multi_gpu_ddp": "MULTI_GPU", "fsdp": "FSDP",
                "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}
    for name, kind in expected.items():
        config = load_config_from_file(os.path.join(configs, f"{name}.yaml"))
        assert str(config.distributed_type).endswith(kind), name
        if kind == "DEEPSPEED":
            path = os.path.join(REPO, config.deepspeed_config["deepspeed_config_file"])
            stage = json.load(open(path))["zero_optimization"]["stage"]
            assert stage == int(name[-1])
    fsdp = load_config_from_file(os.path.join(configs, "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_use_orig_params"] and "LlamaDecoderLayer" in fsdp["fsdp_transformer_layer_cls_to_wrap"]


def test_training_reads_images_with_the_builds_explicit_radiometry(model_and_processor, tmp_path):
    from train.data import processor_for_dataset

    _, processor = model_and_processor
    (tmp_path / "build_info.json").write_text(json.dumps({"radiometry": {"input_offset": None, "input_scale": None}}))
    assert processor_for_dataset(processor, tmp_path) is processor
    (tmp_path / "build_info.json").write_text(json.dumps({"radiometry": {"input_offset": -1000.0, "strict": True}}))
    configured = processor_for_dataset(processor, tmp_path)
    assert (configured.image_processor.input_offset, configured.image_processor.strict) == (-1000.0, True)
    assert configured.tokenizer is processor.tokenizer
    assert (processor.image_processor.input_offset, processor.image_processor.strict) == (None, False)
