"""`mmhub demo`: generated scenes, the trained demo end to end, real-weights mode, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from hub_configs.cli import main
from hub_configs.demo import rankings_agree, recall_at_1
from hub_configs.demo_scenes import BACKGROUND, COLOURS, PREAMBLE, QUARTERS, Scene, first_detail_token, generate_scenes


@pytest.fixture(scope="module")
def clip_tokenizer():
    from hub_configs.clip_tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(model_max_length=248)


def _demo_env(tmp_path) -> dict[str, str]:
    """A child environment with its own temporary folder and Hugging Face home, importing this checkout."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(
        {
            "TMPDIR": str(tmp_path / "tmp"),
            "HF_HOME": str(tmp_path / "hf"),
            "PYTHONPATH": REPO_ROOT,
            # Nothing listens here: any request to the Hub would fail (and show up as retries).
            "HF_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    return env


def _run_mmhub(args: list[str], env: dict[str, str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_configs.cli", *args],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _is_empty_torch_cache(entry: os.DirEntry) -> bool:
    return entry.is_dir() and entry.name.startswith("torchinductor_") and not any(os.scandir(entry.path))


def _message_lines(stderr: str) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    lines = [line.split("\r")[-1].strip() for line in stderr.splitlines()]
    return [line for line in lines if line and "%|" not in line and "it/s]" not in line]


# ---------------------------------------------------------------------------------------------------- the scenes


def test_scenes_are_seeded_distinct_and_differ_only_after_token_77(clip_tokenizer):
    from st_modules.token_truncation import truncate_keeping_end_token

    scenes = generate_scenes(300, seed=5)
    assert scenes == generate_scenes(300, seed=5)
    assert scenes != generate_scenes(300, seed=6)
    captions = [scene.caption() for scene in scenes]
    assert len(set(captions)) == len(captions)
    assert all(2 <= len(scene.objects) <= 4 for scene in scenes)

    detail = first_detail_token(clip_tokenizer)
    assert detail > 76  # a 77-token reading keeps tokens 0..75 and the end token
    ids = clip_tokenizer(captions)["input_ids"]
    assert all(77 < len(row) <= 248 for row in ids)
    assert all(row[:detail] == ids[0][:detail] for row in ids)  # the shared preamble, token for token
    special = set(clip_tokenizer.all_special_ids)
    at_77, cut = truncate_keeping_end_token(ids, 77, special)
    assert cut == len(ids) and len({tuple(row) for row in at_77}) == 1
    at_248, cut = truncate_keeping_end_token(ids, 248, special)
    assert cut == 0 and len({tuple(row) for row in at_248}) == len(ids)


def test_a_scene_draws_what_its_caption_says():
    scene = Scene(
        (("top left", "red", "circle"), ("bottom left", "blue", "square"), ("bottom right", "orange", "triangle"))
    )
    assert (
        scene.details()
        == "Top left: a red circle. Top right: nothing. Bottom left: a blue square. Bottom right: an orange triangle."
    )
    assert scene.caption() == f"{PREAMBLE} {scene.details()}"
    size = 64
    pixels = np.asarray(scene.render(size))
    assert pixels.shape == (size, size, 3)
    half = size // 2

    def at(quarter, dx, dy):
        column, row = QUARTERS[quarter]
        return tuple(pixels[row * half + dy, column * half + dx])

    centre = half // 2
    assert at("top left", centre, centre) == COLOURS["red"]
    assert at("top right", centre, centre) == BACKGROUND
    assert at("bottom left", centre, centre) == COLOURS["blue"]
    assert at("bottom right", centre, centre + 6) == COLOURS["orange"]
    # Shapes: a square fills the corners of its box, a circle does not, a triangle is narrow at the top.
    assert at("bottom left", 5, 5) == COLOURS["blue"]
    assert at("top left", 5, 5) == BACKGROUND
    assert at("bottom right", 6, 6) == BACKGROUND
    assert at("bottom right", 6, half - 6) == COLOURS["orange"]


def test_recall_and_ranking_agreement():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.7, 0.3, 0.5]])
    assert recall_at_1(scores) == pytest.approx(2 / 3)
    # Identical captions (as every caption read at 77 tokens): all retrieve one image, one of them correctly.
    assert recall_at_1(torch.tensor([[0.1, 0.5, 0.2]]).repeat(3, 1)) == pytest.approx(1 / 3)
    assert rankings_agree(scores, scores + 1e-6)
    near_tie = torch.tensor([[0.5, 0.5 + 1e-6, 0.1]])
    assert rankings_agree(near_tie, torch.tensor([[0.5 + 1e-6, 0.5, 0.1]]))  # swaps within rounding allowed
    assert not rankings_agree(scores, scores[:, [1, 0, 2]])
    assert not rankings_agree(scores, scores + 1e-3)


# ------------------------------------------------------------------------------------------- the trained demo


@pytest.mark.slow
def test_demo_end_to_end_offline(tmp_path):
    """The default demo: 248 tokens beat 77 by at least 0.3 R@1, both doors agree, nothing is left behind."""
    env = _demo_env(tmp_path)
    png = tmp_path / "examples.png"
    done = _run_mmhub(["demo", "--json", "--png", str(png)], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # stdout is exactly one JSON object
    r77, r248 = result["r_at_1"]["77"], result["r_at_1"]["248"]
    assert r248 - r77 >= 0.3, result
    assert r77 == pytest.approx(1 / result["held_out"])  # every caption reads the same at 77 tokens
    assert result["r_at_1_automodel"] == result["r_at_1"]
    assert result["doors_agree"] is True and result["max_score_difference"] < 1e-4
    assert result["r_at_1_before_finetuning"]["248"] < 0.1  # what it finds, it learned in this run
    assert result["training"]["loss_last"] < result["training"]["loss_first"]
    assert result["seconds"] < 300, "the demo should take about a minute on 2 cores (2 minutes at most)"
    # Only torch's own per-user cache folder may be there, empty: `import torch._dynamo` (which sentence-transformers
    # does) creates it in the temporary folder of every program, and every later run reuses it.
    left = [entry for entry in os.scandir(tmp_path / "tmp") if not _is_empty_torch_cache(entry)]
    assert left == [], [entry.name for entry in left]
    assert not (tmp_path / "hf" / "hub").exists()  # nothing was downloaded
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] > 400 and image.size[1] > 4 * 96
    messages = _message_lines(done.stderr)
    assert not [line for line in messages if "retry" in line.lower() or "warning" in line.lower()], messages


@pytest.mark.slow
def test_demo_is_deterministic(capsys):
    args = ["demo", "--json", "--png", "", "--train-pairs", "128", "--held-out", "16", "--epochs", "2"]
    runs = []
    for _ in range(2):
        assert main(args) == 0
        result = json.loads(capsys.readouterr().out)
        result.pop("seconds")
        result["training"].pop("seconds")
        runs.append(result)
    assert runs[0] == runs[1]
    assert runs[0]["training"]["steps"] == 4


# --------------------------------------------------------------------------------------------- with real weights


def _reference_r_at_1(repo: str, captions: list[str], images: list) -> dict[str, float]:
    """R@1 from stock `CLIPModel` / `CLIPProcessor` (no remote code), texts cut by hand keeping the end token."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(repo).eval()
    processor = CLIPProcessor.from_pretrained(repo)
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token_id
    ids = tokenizer(captions)["input_ids"]
    with torch.inference_mode():
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pictures = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        result = {}
        for length in (77, 248):
            rows = [row if len(row) <= length else row[: length - 1] + [eos] for row in ids]
            width = max(map(len, rows))
            input_ids = torch.tensor([row + [eos] * (width - len(row)) for row in rows])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
            texts = model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output
            scores = torch.nn.functional.normalize(texts, dim=-1) @ pictures.T
            result[str(length)] = round(recall_at_1(scores), 4)
    return result


def _captioned_folder(folder, count=5):
    from PIL import Image

    folder.mkdir()
    for index in range(count):
        array = (np.random.RandomState(index).rand(40, 48, 3) * 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"picture{index}.png")
        (folder / f"picture{index}.txt").write_text(f"{PREAMBLE} Picture number {index} of random noise.")
    return folder


def test_demo_with_a_converted_folder_a_checkpoint_and_user_images(
    longclip_repo, longclip_checkpoint_path, tmp_path, capsys
):
    images_dir = _captioned_folder(tmp_path / "mine")
    png = tmp_path / "examples.png"
    common = ["--held-out", "12", "--json", "--png", str(png), "--images", str(images_dir)]
    assert main(["demo", "--model", longclip_repo, *common]) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert from_folder["trained_in_this_run"] is False and from_folder["doors_agree"] is True
    assert from_folder["held_out"] == 12 and from_folder["user_images"]["pairs"] == 5
    assert from_folder["user_images"]["captions_over_77"] == 5
    assert png.is_file()

    scenes = generate_scenes(12, seed=0)
    size = from_folder["image_size"]
    expected = _reference_r_at_1(longclip_repo, [s.caption() for s in scenes], [s.render(size) for s in scenes])
    assert from_folder["r_at_1"] == expected == from_folder["r_at_1_automodel"]

    # The original checkpoint is converted on the fly (in a temporary folder) and gives the same numbers.
    assert main(["demo", "--model", longclip_checkpoint_path, *common]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert from_checkpoint["r_at_1"] == from_folder["r_at_1"]
    assert from_checkpoint["user_images"]["r_at_1"] == from_folder["user_images"]["r_at_1"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model", "/nonexistent"], "does not exist; expected a repo folder"),
        (["--model", "README.md"], "not an original Long-CLIP .pt checkpoint"),
        (["--images", "."], "--images needs --model"),
        (["--held-out", "1"], "--held-out must be at least 2"),
    ],
)
def test_bad_demo_arguments_are_one_line_errors(args, expected, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert main(["demo", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and expected in captured.err, captured.err


def test_uncaptioned_user_images_are_named(longclip_repo, tmp_path, capsys):
    images_dir = _captioned_folder(tmp_path / "mine", count=3)
    (images_dir / "picture1.txt").unlink()
    assert main(["demo", "--model", longclip_repo, "--images", str(images_dir), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "picture1.png" in err and "picture0.png" not in err
