"""A Llama-3-format LLM end to end: `spectral-llava build --llm DIR|ORG/NAME`, prompts in its chat format, batched
generation with its pad token, `pipeline()` stopping at `<|eot_id|>`, the Hub-id path through an offline cache and
its errors. Training on it: tests/train/test_llama3_training.py."""

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from fixtures.llama3 import ASSISTANT, EOT, LLAMA3_CHAT_TEMPLATE, USER, make_hub_cache
from safetensors import safe_open
from testing_utils import DATA, REPO, TINY_CHECKPOINT, subprocess_env
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from spectral_llava.processing.processing_spectral_llava import FLATTEN_CONTENT

TIF = os.path.join(DATA, "eurosat-ms", "Forest", "Forest_1.tif")
CAPTION = "[caption] Describe this multispectral satellite image."


@pytest.fixture(scope="module")
def processor(llama3_model_dir):
    return AutoProcessor.from_pretrained(llama3_model_dir, trust_remote_code=True)


@pytest.fixture(scope="module")
def model_fp32(llama3_model_dir):
    return AutoModelForImageTextToText.from_pretrained(llama3_model_dir, trust_remote_code=True,
                                                       dtype=torch.float32).eval()


def test_build_keeps_llama3_tokens_dtype_and_end_of_turn(llama3_model_dir, processor):
    tokenizer = processor.tokenizer
    config = json.loads(Path(os.path.join(llama3_model_dir, "config.json")).read_text())
    assert config["dtype"] == "bfloat16"  # --llm-dtype auto: the LLM config's dtype
    with safe_open(os.path.join(llama3_model_dir, "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert dtypes == {"BF16"}
    generation = json.loads(Path(os.path.join(llama3_model_dir, "generation_config.json")).read_text())
    eos, eot = tokenizer.convert_tokens_to_ids(["<|end_of_text|>", EOT])
    assert generation["eos_token_id"] == [eos, eot]  # the LLM's own config stopped at <|end_of_text|> only
    assert tokenizer.pad_token == "<|reserved_special_token_0|>"
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    assert tokenizer.pad_token_id not in (eos, eot)
    for token in ("<image>", "[caption]", "[classification]", EOT, "<|start_header_id|>"):
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1, token
    saved = Path(os.path.join(llama3_model_dir, "chat_template.jinja")).read_text()
    assert saved == FLATTEN_CONTENT + LLAMA3_CHAT_TEMPLATE


def test_prompts_render_in_llama3_format(processor):
    assert processor.build_prompt("caption") == f"<|begin_of_text|>{USER}<image>\n{CAPTION}<|eot_id|>{ASSISTANT}"
    assert processor.build_prompt("classification", text="Which classes?") == (
        f"<|begin_of_text|>{USER}<image>\n[classification] Which classes?<|eot_id|>{ASSISTANT}")
    conversation = [
        {"role": "system", "content": "You describe Sentinel-2 scenes."},
        {"role": "user", "content": [{"type": "image", "path": TIF}, {"type": "text", "text": CAPTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A dense forest. "}]},
        {"role": "user", "content": "[classification] And the classes?"},
    ]
    assert processor.apply_chat_template(conversation, add_generation_prompt=True) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou describe Sentinel-2 scenes.<|eot_id|>"
        f"{USER}<image>\n{CAPTION}<|eot_id|>{ASSISTANT}A dense forest.<|eot_id|>"
        f"{USER}[classification] And the classes?<|eot_id|>{ASSISTANT}")
    # tokenised: exactly one <|begin_of_text|>, the headers and <|eot_id|> as single tokens, 16 image tokens
    inputs = processor.apply_chat_template(conversation[1:2], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    assert tokens[:4] == ["<|begin_of_text|>", "<|start_header_id|>", *processor.tokenizer.tokenize("user"),
                          "<|end_header_id|>"][:4]
    assert tokens.count("<|begin_of_text|>") == 1 and tokens.count("<image>") == 16 and tokens.count(EOT) == 1
    assert tokens[-1] != EOT and inputs["pixel_values"].shape == (1, 12, 32, 32)
    # the same ids from the rendered string passed to the processor, and from a raw prompt BOS is added once
    rendered = processor(images=TIF, text=processor.apply_chat_template(conversation[1:2], add_generation_prompt=True))
    assert rendered["input_ids"].tolist() == inputs["input_ids"].tolist()
    raw = processor(images=TIF, text="<image>\n[caption] Describe.")["input_ids"][0].tolist()
    assert raw[0] == processor.tokenizer.bos_token_id and raw.count(processor.tokenizer.bos_token_id) == 1


def test_batches_are_left_padded_and_generate_as_single_prompts(processor, model_fp32):
    prompts = [processor.build_prompt("caption"), processor.build_prompt("classification", text="Classes?")]
    batch = processor(images=[TIF, TIF], text=prompts, return_tensors="pt")
    singles = [processor(images=TIF, text=prompt, return_tensors="pt") for prompt in prompts]
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert lengths[0] != lengths[1] and processor.tokenizer.padding_side == "left"
    pad = max(lengths) - min(lengths)
    short = lengths.index(min(lengths))
    assert batch["input_ids"][short, :pad].tolist() == [processor.tokenizer.pad_token_id] * pad
    assert batch["attention_mask"][short].tolist() == [0] * pad + [1] * min(lengths)
    assert batch["input_ids"][short, pad:].tolist() == singles[short]["input_ids"][0].tolist()
    with torch.no_grad():
        together = model_fp32.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
        for row, single in enumerate(singles):
            alone = model_fp32.generate(**single, max_new_tokens=5, do_sample=False, min_new_tokens=5)
            assert together[row, -5:].tolist() == alone[0, -5:].tolist()


def test_pipeline_answers_and_stops_at_eot(llama3_model_dir, processor, tmp_path):
    """The random LLM's head is edited so that `<|eot_id|>` wins the 3rd greedy step: the pipeline answers with the
    first two tokens and stops there, although max_new_tokens allows more and the tokenizer's eos is another token."""
    from spectral_llava.processing.pipeline_spectral_llava import register_pipeline_in_model_dir

    model = AutoModelForImageTextToText.from_pretrained(llama3_model_dir, trust_remote_code=True,
                                                        dtype=torch.float32).eval()
    messages = processor.build_messages("caption", image=TIF)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    eot = processor.tokenizer.convert_tokens_to_ids(EOT)
    assert processor.tokenizer.eos_token_id != eot
    with torch.no_grad():
        free = model.generate(**inputs, max_new_tokens=3, do_sample=False, min_new_tokens=3)[0, -3:].tolist()
        assert eot not in free and free[2] not in free[:2]
        prefix = torch.cat([inputs["input_ids"], torch.tensor([free[:2]])], dim=1)
        hidden = model(input_ids=prefix, pixel_values=inputs["pixel_values"],
                       output_hidden_states=True).hidden_states[-1][0, -3:]  # the states predicting steps 1, 2, 3
        # eot's head row: the 3rd token's plus a direction orthogonal to the states of steps 1 and 2, so that eot
        # ties with that token (which lost) at steps 1 and 2 and beats it by 2 at step 3
        basis, _ = torch.linalg.qr(hidden[:2].T)
        direction = hidden[2] - basis @ (basis.T @ hidden[2])
        head = model.lm_head.weight
        head[eot] = head[free[2]] + 2.0 * direction / direction.pow(2).sum()
    edited = tmp_path / "model"
    model.save_pretrained(edited)
    processor.save_pretrained(edited)
    register_pipeline_in_model_dir(str(edited))

    pipe = pipeline("image-text-to-text", model=str(edited), trust_remote_code=True)
    answer = pipe(text=messages, max_new_tokens=10, return_full_text=False,
                  generate_kwargs={"do_sample": False})[0]["generated_text"]
    with torch.no_grad():
        ids = pipe.model.generate(**inputs, max_new_tokens=10, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert ids.tolist() == free[:2] + [eot]
    assert answer == processor.tokenizer.decode(free[:2], skip_special_tokens=True) and answer.strip()


@pytest.fixture(scope="module")
def hub_home(llama3_llm_dir, tmp_path_factory):
    """HF_HOME holding tiny-org/llama3-tiny (the Llama-3-format LLM) and tiny-org/spectralgpt-tiny (a converted
    tower), laid out as huggingface_hub's cache."""
    from spectral_llava.modeling_spectral_llava.tools.convert_spectralgpt import convert

    home = tmp_path_factory.mktemp("hf-home")
    tower = tmp_path_factory.mktemp("tower") / "spectralgpt-tiny"
    convert(TINY_CHECKPOINT, tower)
    commits = {"llm": make_hub_cache(home, "tiny-org/llama3-tiny", llama3_llm_dir),
               "tower": make_hub_cache(home, "tiny-org/spectralgpt-tiny", tower)}
    return home, commits


def run_builds(builds, **env):
    """Run `spectral-llava build ARGS` for each ARGS of `builds` in one process with `env` (huggingface_hub reads
    HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT at import, hence a process); each one's (exit status, stderr)."""
    script = (
        "import sys\nfrom spectral_llava.cli import main\n"
        f"for args in {builds!r}:\n"
        "    print('=== build', file=sys.stderr, flush=True)\n"
        "    code = main(['build', *args])\n"
        "    print(f'=== exit {code}', file=sys.stderr, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=subprocess_env(**env))
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [(int(code), text) for text, code in re.findall(r"=== build\n(.*?)=== exit (\d+)\n", done.stderr, re.S)]
    assert len(runs) == len(builds), done.stderr[-3000:]
    return runs


def error_line(run, output):
    """The error line of a failed build, which must exit with status 2 and leave nothing at `output`."""
    code, stderr = run
    assert code == 2 and not os.path.exists(output), stderr[-3000:]
    return stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def offline_builds(hub_home, tmp_path_factory):
    """Offline builds from Hub ids, in one process: the cached LLM and tower, then a repo and a revision that are
    not cached. (output dir, runs)"""
    home, commits = hub_home
    out = tmp_path_factory.mktemp("hub-builds")
    builds = [[str(out / "from-hub"), "--llm", "tiny-org/llama3-tiny", "--revision", commits["llm"],
               "--vision", "tiny-org/spectralgpt-tiny", "--image-size", "32", "--layout", "spectral_mean"],
              [str(out / "failed"), "--llm", "tiny-org/not-cached"],
              [str(out / "failed"), "--llm", "tiny-org/llama3-tiny", "--revision", "v2"]]
    return out, run_builds(builds, HF_HOME=str(home), HF_HUB_OFFLINE="1")


def test_build_from_hub_ids_offline(hub_home, offline_builds, llama3_model_dir):
    _, commits = hub_home
    out, (done, _, _) = offline_builds
    out = out / "from-hub"
    assert done[0] == 0, done[1][-3000:]
    assert f"tiny-org/llama3-tiny@{commits['llm']}" in done[1]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["language_model"] == f"tiny-org/llama3-tiny@{commits['llm']}"
    assert provenance["vision_tower"] == "tiny-org/spectralgpt-tiny"
    assert "base_model:\n- tiny-org/llama3-tiny\n" in (out / "README.md").read_text().split("---")[1]
    # the same LLM and tower as the build from local paths: the same model dir
    with safe_open(out / "model.safetensors", "pt") as hub, \
            safe_open(os.path.join(llama3_model_dir, "model.safetensors"), "pt") as local:
        assert set(hub.keys()) == set(local.keys())
        for name in local.keys():
            assert torch.equal(hub.get_tensor(name), local.get_tensor(name)), name
    for name in ("chat_template.jinja", "generation_config.json", "tokenizer.json", "processor_config.json"):
        assert (out / name).read_text() == Path(llama3_model_dir, name).read_text(), name


def test_hub_errors_offline_say_what_to_do(hub_home, offline_builds):
    home, _ = hub_home
    out, (_, missing, revision) = offline_builds
    missing, revision = error_line(missing, out / "failed"), error_line(revision, out / "failed")
    assert missing.startswith("spectral-llava build: error: --llm tiny-org/not-cached: tiny-org/not-cached is "
                              f"neither a local directory nor in the Hugging Face cache {home}")
    assert "HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE" in missing
    assert "--llm tiny-org/llama3-tiny: tiny-org/llama3-tiny at revision v2 is neither" in revision


class FakeHub(BaseHTTPRequestHandler):
    """Answers file requests as the Hub does for a gated repo (logged in without access), a repo that does not
    exist or is private, and a missing revision: the status and the X-Error-Code header huggingface_hub reads."""

    ANSWERS = {"tiny-org/gated": (403, "GatedRepo"), "tiny-org/missing": (401, "RepoNotFound")}
    repo_requests = []  # (path, Authorization header) of the requests for files or info of tiny-org repos

    def answer(self):
        if "tiny-org/" in self.path:
            self.repo_requests.append((self.path, self.headers.get("Authorization")))
        repo = "/".join(self.path.strip("/").split("/")[:2])
        status, code = self.ANSWERS.get(repo, (404, "RevisionNotFound"))
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = answer

    def log_message(self, *args):
        pass


def test_hub_errors_online_say_what_to_do(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    output = tmp_path / "out"
    try:
        runs = run_builds([[str(output), "--llm", "tiny-org/gated"], [str(output), "--llm", "tiny-org/missing"],
                           [str(output), "--llm", "tiny-org/llama3", "--revision", "v9"]],
                          HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="0",
                          HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_TOKEN="hf_token_of_this_test")
        gated, missing, revision = (error_line(run, output) for run in runs)
    finally:
        server.shutdown()
        server.server_close()
    # HF_TOKEN reaches the Hub with every request for the repos
    repos = {"/".join(path.removeprefix("/api/models").strip("/").split("/")[:2]) for path, _ in FakeHub.repo_requests}
    assert repos == {"tiny-org/gated", "tiny-org/missing", "tiny-org/llama3"}
    assert {token for _, token in FakeHub.repo_requests} == {"Bearer hf_token_of_this_test"}
    assert gated.startswith("spectral-llava build: error: --llm tiny-org/gated: tiny-org/gated is a gated model")
    assert "accept its licence on https://huggingface.co/tiny-org/gated" in gated and "hf auth login" in gated
    assert "--llm tiny-org/missing: tiny-org/missing is neither a local directory nor a model repo on the Hub (or it " \
        "is private)" in missing
    assert "check the path, or the id (ORG/NAME)" in missing and "hf auth login" in missing
    assert "--llm tiny-org/llama3: tiny-org/llama3 has no revision 'v9'" in revision
