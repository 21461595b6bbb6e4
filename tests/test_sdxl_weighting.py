"""Weighted prompts on both encoders against independent per-token references (chunked, paper, refiner)."""

from __future__ import annotations

import pytest
import torch
from sdxl_fixtures import (
    assert_all_equal,
    chunked_reference,
    joint_length,
    long_components,
    long_pipeline,
    paper_reference,
    refiner_components,
    stock_pipeline,
    tiny_components,
    token_ids,
    words,
)

from diffusers_adapters.pipeline_longclip_sdxl import enable_long_prompts

CPU = torch.device("cpu")
UP, DOWN = 1.1, 1 / 1.1
# Each fixture word is one BPE token, so token positions follow word positions.
WEIGHTED = [
    f"{words(20)} (river:1.5) {words(99, 4)} ((stone)) {words(30, 1)} [{words(3, 2)}]",
    f"{words(10, 5)} BREAK ({words(4)}:0.5) {words(120, 3)}",
]


def _contents_and_weights(tokenizer):
    """Token ids and per-token weights of `WEIGHTED`, written out by hand from the syntax."""
    first = (
        token_ids(tokenizer, words(20))
        + token_ids(tokenizer, "river")
        + token_ids(tokenizer, words(99, 4))
        + token_ids(tokenizer, "stone")
        + token_ids(tokenizer, words(30, 1))
        + token_ids(tokenizer, words(3, 2))
    )
    first_weights = [1.0] * 20 + [1.5] + [1.0] * 99 + [UP * UP] + [1.0] * 30 + [DOWN] * 3
    second = token_ids(tokenizer, words(10, 5)) + [None] * 65 + token_ids(tokenizer, words(4) + " " + words(120, 3))
    second_weights = [1.0] * 75 + [0.5] * 4 + [1.0] * 120
    return [first, second], [first_weights, second_weights]


@pytest.mark.parametrize("weighting", ["offset", "mean-restore"])
def test_weighted_prompts_match_per_token_reference(weighting):
    components = long_components()
    pipe = enable_long_prompts(long_pipeline(components), weighting=weighting)
    embeds, _, pooled, _ = pipe.encode_prompt(WEIGHTED, device=CPU, do_classifier_free_guidance=False)
    contents, weights = _contents_and_weights(components["tokenizer"])
    length = joint_length(*contents)
    assert embeds.shape == (2, length, 64) and length == 231
    expected, expected_pooled = chunked_reference(components, contents, length, weights=weights, weighting=weighting)
    torch.testing.assert_close(embeds, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pooled, expected_pooled, rtol=0, atol=0)  # pooled embeddings are not weighted
    plain, _ = chunked_reference(components, contents, length)
    assert not torch.allclose(embeds, plain), "weights had no effect"


def test_weight_one_is_bitwise_unweighted():
    pipe = long_pipeline()
    plain = f"{words(120)} river {words(60, 3)}"
    expected = pipe.encode_prompt(plain, device=CPU, negative_prompt=f"blurry {words(90)}")
    for spelling in ("(river:1)", "(river:1.0)", "[(river)]"):
        prompt = f"{words(120)} {spelling} {words(60, 3)}"
        negative = f"(blurry:1.0) {words(90)}"
        assert_all_equal(expected, pipe.encode_prompt(prompt, device=CPU, negative_prompt=negative))


@pytest.mark.parametrize("mode", ["chunked", "paper"])
def test_weight_past_token_77_changes_exactly_its_positions(mode):
    pipe = long_pipeline(mode=mode)
    before, after = words(120), words(60, 3)
    plain = pipe.encode_prompt(f"{before} river {after}", device=CPU, negative_prompt="blurry")
    weighted = pipe.encode_prompt(f"{before} (river:1.4) {after}", device=CPU, negative_prompt="blurry")
    for half, columns in (("LongCLIP", slice(0, 32)), ("bigG", slice(32, 64))):
        changed = (plain[0][0, :, columns] != weighted[0][0, :, columns]).any(-1).nonzero().flatten().tolist()
        assert changed == [121], f"{half}: positions {changed} changed, expected only 121 (BOS + 120 tokens)"
    for index in (1, 2, 3):  # negative, pooled, negative pooled
        assert torch.equal(plain[index], weighted[index])


def test_weighted_negative_and_clip_skip_match_reference():
    components = long_components()
    pipe = long_pipeline(components)
    prompt, negative = words(150), f"(blurry:1.3) {words(90, 2)} [dark]"
    embeds, negative_embeds, _, negative_pooled = pipe.encode_prompt(
        prompt, device=CPU, negative_prompt=negative, clip_skip=1
    )
    tokenizer = components["tokenizer"]
    positive_ids = [token_ids(tokenizer, prompt)]
    negative_ids = [token_ids(tokenizer, f"blurry {words(90, 2)} dark")]
    negative_weights = [[1.3] + [1.0] * 90 + [DOWN]]
    length = joint_length(*positive_ids, *negative_ids)
    torch.testing.assert_close(embeds, chunked_reference(components, positive_ids, length, hidden_index=-3)[0])
    expected, expected_pooled = chunked_reference(components, negative_ids, length, weights=negative_weights)
    torch.testing.assert_close(negative_embeds, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(negative_pooled, expected_pooled)


@pytest.mark.parametrize("weighting", ["offset", "mean-restore"])
def test_weighted_paper_mode_matches_recipe(weighting):
    components = long_components()
    pipe = enable_long_prompts(long_pipeline(components), mode="paper", weighting=weighting)
    prompt = f"{words(100)} (river:1.5) {words(80, 2)}"
    embeds, _, pooled, _ = pipe.encode_prompt([prompt, words(30)], device=CPU, do_classifier_free_guidance=False)
    ids = torch.zeros(2, 248, dtype=torch.long)
    for row, text in enumerate((f"{words(100)} river {words(80, 2)}", words(30))):
        content = token_ids(components["tokenizer"], text)
        ids[row, : len(content) + 2] = torch.tensor([49406, *content, 49407])
    weights = torch.ones(2, 248)
    weights[0, 101] = 1.5
    expected, expected_pooled = paper_reference(components, ids, weights=weights, weighting=weighting)
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-5, atol=1e-5)


def test_weighted_refiner_chunked_and_paper():
    from diffusers import StableDiffusionXLImg2ImgPipeline

    components = refiner_components()
    pipe = enable_long_prompts(StableDiffusionXLImg2ImgPipeline(**components, requires_aesthetics_score=True))
    embeds, _, pooled, _ = pipe.encode_prompt(WEIGHTED, device=CPU, do_classifier_free_guidance=False)
    contents, weights = _contents_and_weights(components["tokenizer_2"])
    length = joint_length(*contents)
    assert embeds.shape == (2, length, 32)  # bigG only
    expected, expected_pooled = chunked_reference(components, contents, length, weights=weights)
    torch.testing.assert_close(embeds, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pooled, expected_pooled, rtol=0, atol=0)

    enable_long_prompts(pipe, mode="paper")
    embeds, _, pooled, _ = pipe.encode_prompt(
        f"{words(100)} (river:1.5)", device=CPU, do_classifier_free_guidance=False
    )
    ids = torch.zeros(1, 248, dtype=torch.long)
    ids[0, :103] = torch.tensor([49406, *token_ids(components["tokenizer_2"], f"{words(100)} river"), 49407])
    weights = torch.ones(1, 248)
    weights[0, 101] = 1.5
    expected, expected_pooled = paper_reference(components, ids, weights=weights)
    assert embeds.shape == (1, 248, 32)
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-5, atol=1e-5)


def test_short_weighted_prompt_on_stock_encoders_and_weighting_off():
    stock, pipe = stock_pipeline(), long_pipeline(tiny_components())
    kwargs = dict(device=CPU, negative_prompt="blurry")
    text = "a (red:1.5) cat, BREAK [dark] sky"
    # "off" reads the syntax as text, exactly as stock SDXL does.
    enable_long_prompts(pipe, weighting="off")
    assert_all_equal(stock.encode_prompt(text, **kwargs), pipe.encode_prompt(text, **kwargs))
    enable_long_prompts(pipe)
    weighted = pipe.encode_prompt("a (red:1.5) cat", **kwargs)
    plain = stock.encode_prompt("a red cat", **kwargs)
    changed = (weighted[0][0] != plain[0][0]).any(-1).nonzero().flatten().tolist()
    assert changed == [2] and weighted[0].shape == plain[0].shape == (1, 77, 64)


def test_bad_weighting_named_before_forward():
    with pytest.raises(ValueError, match="weighting"):
        enable_long_prompts(long_pipeline(), weighting="a1111")
    pipe = long_pipeline()
    with pytest.raises(ValueError, match="finite"):
        pipe.encode_prompt("(" * 8000 + "x" + ")" * 8000, device=CPU)


def test_fp16_weighted_close_to_fp32():
    import copy

    reference = long_pipeline().encode_prompt(WEIGHTED, device=CPU, negative_prompt="blurry")
    half = long_components()
    for key in ("text_encoder", "text_encoder_2"):
        half[key] = copy.deepcopy(half[key]).half()
    outputs = long_pipeline(half).encode_prompt(WEIGHTED, device=CPU, negative_prompt="blurry")
    assert all(output.dtype == torch.float16 for output in outputs)
    for left, right in zip(outputs, reference):
        torch.testing.assert_close(left.float(), right, rtol=2e-2, atol=2e-2)
