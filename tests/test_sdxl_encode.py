"""`encode_prompt` of the LongCLIP SDXL adapter: stock parity, long prompts against a reference, paper mode."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from sdxl_fixtures import (
    assert_all_equal,
    kps_loop,
    long_components,
    long_pipeline,
    longclip_pair,
    paper_reference,
    stock_pipeline,
    tiny_components,
    words,
)

import diffusers_adapters.pipeline_longclip_sdxl as adapter
import diffusers_adapters.sdxl_long_prompt_encoder as encoder_module

CPU = torch.device("cpu")


# ---------------------------------------------------------------- stock parity (77-position first encoder)

PARITY_CASES = {
    "negative-none-zeros": dict(prompt="a red cat"),
    "negative-str": dict(prompt="a red cat", negative_prompt="blurry dark"),
    "negative-list": dict(prompt=["a red cat", words(60)], negative_prompt=["blurry", words(75, 3)]),
    "images-per-prompt-2": dict(prompt=["a red cat", "old tree"], negative_prompt="blurry", num_images_per_prompt=2),
    "prompt-2": dict(prompt="a red cat", prompt_2="a green dog by the river", negative_prompt_2="dark"),
    "clip-skip-1": dict(prompt=words(40), negative_prompt="blurry", clip_skip=1),
    "no-cfg": dict(prompt=words(30), do_classifier_free_guidance=False),
    "exactly-77-tokens": dict(prompt=words(75), negative_prompt=words(75, 5)),
    "empty-prompt": dict(prompt=""),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_bitwise_equal_to_stock_for_short_prompts(case):
    kwargs = dict(device=CPU, **PARITY_CASES[case])
    expected = stock_pipeline().encode_prompt(**kwargs)
    actual = long_pipeline(tiny_components()).encode_prompt(**kwargs)
    assert_all_equal(expected, actual)


def test_bitwise_equal_without_force_zeros():
    stock, long = stock_pipeline(), long_pipeline(tiny_components())
    for pipe in (stock, long):
        pipe.register_to_config(force_zeros_for_empty_prompt=False)
    kwargs = dict(prompt=["a red cat", "a dog"], device=CPU, num_images_per_prompt=2)
    assert_all_equal(stock.encode_prompt(**kwargs), long.encode_prompt(**kwargs))


def test_precomputed_embeds_pass_through():
    stock, long = stock_pipeline(), long_pipeline(tiny_components())
    embeds, _, pooled, _ = stock.encode_prompt("a red cat", device=CPU, do_classifier_free_guidance=False)
    kwargs = dict(prompt=None, prompt_embeds=embeds, pooled_prompt_embeds=pooled, negative_prompt="blurry", device=CPU)
    expected, actual = stock.encode_prompt(**kwargs), long.encode_prompt(**kwargs)
    assert_all_equal(expected, actual)
    assert actual[0] is not None and torch.equal(actual[0], embeds)


def _fake_lora(monkeypatch, modules):
    """Stand-in for PEFT LoRA layers: scaling multiplies each encoder's final layer norm weight."""

    def scale(encoder, weight):
        getattr(encoder, "text_model", encoder).final_layer_norm.weight.data.mul_(weight)

    def unscale(encoder, weight):
        if weight is not None and weight != 0:
            getattr(encoder, "text_model", encoder).final_layer_norm.weight.data.div_(weight)

    for module in modules:
        monkeypatch.setattr(module, "USE_PEFT_BACKEND", True)
        monkeypatch.setattr(module, "scale_lora_layers", scale)
        monkeypatch.setattr(module, "unscale_lora_layers", unscale)


def test_lora_scale_applied_and_restored_like_stock(monkeypatch):
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl as stock_module

    _fake_lora(monkeypatch, [stock_module, encoder_module])
    components = tiny_components(fresh=True)
    stock, long = stock_pipeline(components), long_pipeline(components)
    norm = components["text_encoder_2"].text_model.final_layer_norm.weight
    before = norm.detach().clone()
    kwargs = dict(prompt=words(20), negative_prompt="blurry", device=CPU, lora_scale=0.5)
    expected = stock.encode_prompt(**kwargs)
    actual = long.encode_prompt(**kwargs)
    assert_all_equal(expected, actual)
    assert torch.equal(norm, before), "LoRA scale was not undone"
    unscaled = long.encode_prompt(**{**kwargs, "lora_scale": None})
    assert not torch.equal(unscaled[2], actual[2]), "lora_scale had no effect"
    assert long._lora_scale == 0.5


def test_textual_inversion_like_stock():
    components = tiny_components(fresh=True)
    stock = stock_pipeline(components)
    torch.manual_seed(3)
    for encoder, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        stock.load_textual_inversion(
            {"<toy>": torch.randn(2, 32)},
            token="<toy>",
            text_encoder=components[encoder],
            tokenizer=components[tokenizer],
        )
    long = long_pipeline(components)
    kwargs = dict(prompt="a photo of <toy> on a table", negative_prompt="blurry", device=CPU)
    expected, actual = stock.encode_prompt(**kwargs), long.encode_prompt(**kwargs)
    assert_all_equal(expected, actual)
    plain = long.encode_prompt(**{**kwargs, "prompt": "a photo of on a table"})
    assert not torch.equal(plain[0], actual[0])


# ---------------------------------------------------------------- long prompts vs an independent reference


def _reference_chunked(components, prompts, hidden_index=-2):
    """Per row and per position: LongCLIP over the whole prompt; bigG over [BOS] + 75 + [EOS] windows."""
    te1, tok1 = components["text_encoder"], components["tokenizer"]
    te2, tok2 = components["text_encoder_2"], components["tokenizer_2"]
    contents = [tok1(p, add_special_tokens=False).input_ids for p in prompts]
    needed = max(len(c) for c in contents) + 2
    length = min(te1.config.max_position_embeddings, 77 * -(-needed // 77))
    bos, eos, pad2 = tok2.bos_token_id, tok2.eos_token_id, tok2.pad_token_id
    rows, pooled = [], []
    with torch.no_grad():
        for prompt, content in zip(prompts, contents):
            ids1 = tok1(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            states1 = te1(ids1.input_ids, output_hidden_states=True).hidden_states[hidden_index][0]
            content = content[: length - 2]
            stream = content + [eos] + [pad2] * (length - 2 - len(content))  # stream[j] sits at position j + 1

            content_length = len(content)

            @functools.cache
            def window(k, stream=tuple(stream), content_length=content_length):
                padded = list(stream) + [pad2] * 400
                body, following = padded[75 * k : 75 * k + 75], padded[75 * k + 75]
                last = eos if 75 * k + 75 < content_length else following
                out = te2(torch.tensor([[bos, *body, last]]), output_hidden_states=True)
                return out.hidden_states[hidden_index][0], out.text_embeds[0]

            columns = [window(0)[0][0]]
            for j in range(length - 1):
                k, slot = divmod(j, 75)
                if slot == 0 and j > 0 and j >= len(content):
                    columns.append(window(k - 1)[0][76])  # an EOS/pad opening a window also ends the previous one
                else:
                    columns.append(window(k)[0][1 + slot])
            rows.append(torch.cat([states1, torch.stack(columns)], dim=-1))
            pooled.append(window(0)[1])
    return torch.stack(rows), torch.stack(pooled)


@pytest.mark.parametrize("tokens", [160, 248])
def test_long_prompt_matches_reference(tokens):
    components = long_components()
    prompts = [words(tokens - 2), words(tokens - 40, 7)]
    embeds, negative, pooled, negative_pooled = long_pipeline(components).encode_prompt(
        prompts, device=CPU, do_classifier_free_guidance=False
    )
    expected_embeds, expected_pooled = _reference_chunked(components, prompts)
    assert embeds.shape == (2, 77 * -(-tokens // 77) if tokens <= 231 else 248, 64)
    torch.testing.assert_close(embeds, expected_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-5, atol=1e-5)
    assert negative is None and negative_pooled is None


def test_clip_skip_on_long_prompt_matches_reference():
    components = long_components()
    prompts = [words(120)]
    embeds, *_ = long_pipeline(components).encode_prompt(prompts, device=CPU, clip_skip=1)
    torch.testing.assert_close(embeds, _reference_chunked(components, prompts, hidden_index=-3)[0])


def test_word_past_token_77_changes_embedding_unlike_stock():
    base, changed = words(100), words(85) + " river " + words(14, 2)
    assert len(base.split()) == len(changed.split())
    long = long_pipeline()
    first = long.encode_prompt(base, device=CPU, do_classifier_free_guidance=False)[0]
    second = long.encode_prompt(changed, device=CPU, do_classifier_free_guidance=False)[0]
    assert first.shape[1] == 154
    assert torch.equal(first[:, :86], second[:, :86]), "causal encoders: positions before the change must not move"
    assert not torch.allclose(first[:, 86:, :32], second[:, 86:, :32]), "LongCLIP half ignored the change"
    assert not torch.allclose(first[:, 86:, 32:], second[:, 86:, 32:]), "bigG half ignored the change"
    stock = stock_pipeline(tiny_components())
    stock_first = stock.encode_prompt(base, device=CPU, do_classifier_free_guidance=False)[0]
    stock_second = stock.encode_prompt(changed, device=CPU, do_classifier_free_guidance=False)[0]
    assert torch.equal(stock_first, stock_second)


def test_short_row_in_mixed_batch_equals_solo():
    long = long_pipeline()
    short = "a red cat under a tree"
    batch = long.encode_prompt([short, words(200)], device=CPU, negative_prompt=["blurry", "dark"])
    solo = long.encode_prompt(short, device=CPU, negative_prompt="blurry")
    assert batch[0].shape[1] == 231 and solo[0].shape[1] == 77
    for index in range(4):
        torch.testing.assert_close(
            batch[index][:1, : solo[index].shape[1]] if index < 2 else batch[index][:1], solo[index]
        )


def test_negative_longer_than_positive():
    long = long_pipeline()
    embeds, negative, pooled, negative_pooled = long.encode_prompt(
        "a red cat", device=CPU, negative_prompt=words(130), num_images_per_prompt=2
    )
    assert embeds.shape == negative.shape == (2, 154, 64)
    solo_negative = long.encode_prompt(words(130), device=CPU, do_classifier_free_guidance=False)
    torch.testing.assert_close(negative[:1], solo_negative[0])
    torch.testing.assert_close(negative_pooled[:1], solo_negative[2])
    solo_positive = long.encode_prompt("a red cat", device=CPU, do_classifier_free_guidance=False)
    torch.testing.assert_close(embeds[:1, :77], solo_positive[0])


def test_over_248_tokens_truncates_with_one_warning(monkeypatch):
    messages = []
    monkeypatch.setattr(encoder_module.logger, "warning", lambda message, *args: messages.append(message))
    long = long_pipeline()
    too_long = long.encode_prompt([words(300), words(250, 1)], device=CPU, negative_prompt=words(260))
    exact = long.encode_prompt([words(246), words(246, 1)], device=CPU, negative_prompt=words(246))
    assert len(messages) == 1 and "truncated" in messages[0]
    for left, right in zip(too_long, exact):
        torch.testing.assert_close(left, right)
    assert too_long[0].shape[1] == 248


def test_mismatched_tokenizer_and_encoder_named_before_forward():
    from hub_configs.clip_tokenizer import build_clip_tokenizer

    longclip, tokenizer_248 = longclip_pair()
    components = tiny_components()
    with pytest.raises(ValueError, match=r"`tokenizer` truncates at 77 tokens but `text_encoder` has 248"):
        long_pipeline({**components, "text_encoder": longclip})
    with pytest.raises(ValueError, match=r"`tokenizer` truncates at 248 tokens but `text_encoder` has 77"):
        long_pipeline({**components, "tokenizer": tokenizer_248})
    pipe = long_pipeline()
    pipe.tokenizer_2 = build_clip_tokenizer(248, pad_token="!")
    with pytest.raises(ValueError, match="tokenizer_2"):
        pipe.encode_prompt("a cat", device=CPU)
    with pytest.raises(ValueError, match="mode"):
        long_pipeline(mode="fancy")
    with pytest.raises(TypeError, match="prompt"):
        long_pipeline().encode_prompt(3, device=CPU)
    with pytest.raises(ValueError, match="paper"):
        long_pipeline(tiny_components(), mode="paper")


def test_fp16_cast():
    reference = long_pipeline().encode_prompt(words(150), device=CPU, negative_prompt="blurry")
    half = long_components()
    for key in ("text_encoder", "text_encoder_2"):
        half[key] = copy.deepcopy(half[key]).half()
    outputs = long_pipeline(half).encode_prompt(words(150), device=CPU, negative_prompt="blurry")
    assert outputs[0].dtype == outputs[1].dtype == outputs[2].dtype == torch.float16
    for left, right in zip(outputs, reference):
        torch.testing.assert_close(left.float(), right, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------- paper mode vs a re-implementation of the recipe


def test_stretch_position_embedding_matches_loop():
    old = torch.randn(77, 16)
    torch.testing.assert_close(adapter.stretch_position_embedding(old), kps_loop(old))
    with pytest.raises(ValueError, match="weight"):
        adapter.stretch_position_embedding(torch.randn(77))


def test_paper_mode_matches_recipe():
    import open_clip

    components = long_components()
    te2 = components["text_encoder_2"]
    prompts = [words(200), "a red cat"]
    long = long_pipeline(components, mode="paper")
    embeds, negative, pooled, negative_pooled = long.encode_prompt(prompts, device=CPU, negative_prompt="blurry")

    # open_clip's own tokenizer: BOS + BPE + EOS, zero padding, cut to 248 with EOS last.
    expected, expected_pooled = paper_reference(components, open_clip.tokenize(prompts, context_length=248))
    assert embeds.shape == (2, 248, 64)
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-5, atol=1e-5)
    assert negative.shape == embeds.shape
    # bigG's own table is back in place afterwards
    assert te2.text_model.embeddings.position_embedding.weight.shape[0] == 77


# ---------------------------------------------------------------- identical windows are forwarded once


def _count_rows(module, counts: list[int]):
    def hook(_, args, kwargs):
        counts.append((kwargs["input_ids"] if "input_ids" in kwargs else args[0]).shape[0])

    return module.register_forward_pre_hook(hook, with_kwargs=True)


# The case: batch 4 at 246 tokens, a 5-token negative. In chunked mode each row has 4 bigG windows; the
# negative's windows 1-3 are all padding and its 4 rows are the same. Forwarded rows per call: (LongCLIP, bigG).
DEDUP_COUNTS = {
    "chunked": (([4, 1], [16, 2]), ([4, 4], [16, 16])),
    "paper": (([4, 1], [4, 1]), ([4, 4], [4, 4])),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("mode", sorted(DEDUP_COUNTS))
def test_identical_rows_and_windows_forwarded_once_with_identical_outputs(mode, weighted):
    components = long_components()
    pipe = long_pipeline(components, mode=mode)
    rows_1, rows_2 = [], []
    handles = [_count_rows(components["text_encoder"], rows_1), _count_rows(components["text_encoder_2"], rows_2)]
    prompts, negative = [words(246, offset) for offset in range(4)], words(5, 3)
    if weighted:  # a weight past token 77 on one row, and a weighted negative repeated on every row
        prompts[1] = f"{words(120, 1)} (red fox:1.4) {words(120, 2)}"
        negative = f"[{negative}]"
    try:
        deduplicated = pipe.encode_prompt(prompts, device=CPU, negative_prompt=negative)
        counts = (rows_1[:], rows_2[:])
        rows_1.clear(), rows_2.clear()
        every_window = adapter.encode_long_prompt(
            pipe, prompts, device=CPU, negative_prompt=negative, deduplicate=False
        )
        every_counts = (rows_1[:], rows_2[:])
    finally:
        for handle in handles:
            handle.remove()
    if not weighted:  # weighted branches add one empty-prompt forward per encoder
        assert (counts, every_counts) == DEDUP_COUNTS[mode]
    assert sum(map(sum, counts)) < sum(map(sum, every_counts))
    assert_all_equal(every_window, deduplicated)


# Forwarded rows per encoder when both guidance branches are weighted (batch 2, 154 positions): the prompts, the
# empty prompt once for the whole call, then the negative's distinct rows. bigG in chunked mode reads 3 windows per
# row (152 tokens); the third is padding in every row, so the prompts need 5 distinct windows and the negative 3.
EMPTY_ONCE_COUNTS = {"chunked": ([2, 1, 1], [5, 1, 3]), "paper": ([2, 1, 1], [2, 1, 1])}


@pytest.mark.parametrize("mode", sorted(EMPTY_ONCE_COUNTS))
def test_empty_prompt_reference_forwarded_once_per_call(mode):
    components = long_components()
    pipe = long_pipeline(components, mode=mode)
    prompts = [f"(red fox:1.3) {words(100)}", f"{words(120, 2)} [dark]"]
    negative = f"[blurry] {words(110, 4)}"
    rows_1, rows_2 = [], []
    handles = [_count_rows(components["text_encoder"], rows_1), _count_rows(components["text_encoder_2"], rows_2)]
    try:
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            prompts, device=CPU, negative_prompt=negative
        )
    finally:
        for handle in handles:
            handle.remove()
    assert (rows_1, rows_2) == EMPTY_ONCE_COUNTS[mode]
    # Sharing the reference changes nothing: each branch alone (same length, 154) gives the same embeddings.
    alone = dict(device=CPU, do_classifier_free_guidance=False)
    assert_all_equal(pipe.encode_prompt(prompts, **alone)[::2], (embeds, pooled))
    assert_all_equal(pipe.encode_prompt([negative] * 2, **alone)[::2], (negative_embeds, negative_pooled))


def test_deduplicated_batch_equals_every_window_reference_exactly():
    from sdxl_fixtures import chunked_reference, joint_length, token_ids

    components = long_components()
    pipe = long_pipeline(components)
    prompts = [words(200), words(100, 3), words(200), words(170, 5)]
    negatives = ["blurry", words(90, 1), "blurry", "blurry"]
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(prompts, device=CPU, negative_prompt=negatives)
    tokenizer = components["tokenizer"]
    positive_ids, negative_ids = ([token_ids(tokenizer, p) for p in texts] for texts in (prompts, negatives))
    length = joint_length(*positive_ids, *negative_ids)
    # The reference forwards every row and window (no deduplication); deduplicating must not change a bit.
    for (states, pooled_states), ids in (
        ((embeds, pooled), positive_ids),
        ((negative, negative_pooled), negative_ids),
    ):
        expected, expected_pooled = chunked_reference(components, ids, length)
        assert torch.equal(states, expected) and torch.equal(pooled_states, expected_pooled)
    assert torch.equal(embeds[0], embeds[2]) and torch.equal(negative[2], negative[3])


def test_repeated_prompts_equal_the_distinct_batch_exactly():
    pipe = long_pipeline()
    distinct = pipe.encode_prompt([words(200), words(130, 2)], device=CPU, negative_prompt=["blurry"] * 2)
    repeated = pipe.encode_prompt([words(200), words(130, 2)] * 2, device=CPU, negative_prompt=["blurry"] * 4)
    for left, right in zip(distinct, repeated):
        assert torch.equal(left.repeat(2, *([1] * (left.ndim - 1))), right)


# ---------------------------------------------------------------- precomputed embeddings (compel)


def test_compel_embeddings_of_any_length_accepted_like_stock():
    from compel import CompelForSDXL

    stock = stock_pipeline()
    conditioning = CompelForSDXL(stock, device="cpu")(f"(red)1.3 {words(228)}", negative_prompt="blurry")
    assert conditioning.embeds.shape[1] == 308  # compel's length for a 230-token prompt
    long = long_pipeline()
    given = dict(
        prompt=None,
        prompt_embeds=conditioning.embeds,
        pooled_prompt_embeds=conditioning.pooled_embeds,
        negative_prompt_embeds=conditioning.negative_embeds,
        negative_pooled_prompt_embeds=conditioning.negative_pooled_embeds,
    )
    for extra in (dict(num_images_per_prompt=2), dict(do_classifier_free_guidance=False)):
        kwargs = dict(given, device=CPU, **extra)
        assert_all_equal(stock.encode_prompt(**kwargs), long.encode_prompt(**kwargs))
    zeros = dict(prompt=None, prompt_embeds=given["prompt_embeds"], pooled_prompt_embeds=given["pooled_prompt_embeds"])
    assert_all_equal(stock.encode_prompt(**zeros, device=CPU), long.encode_prompt(**zeros, device=CPU))
    long.set_progress_bar_config(disable=True)
    run = dict(
        num_inference_steps=2, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    )
    images = long(**{key: value for key, value in given.items() if key != "prompt"}, **run).images
    stock.set_progress_bar_config(disable=True)
    run["generator"] = torch.Generator().manual_seed(0)
    assert np.array_equal(
        images, stock(**{key: value for key, value in given.items() if key != "prompt"}, **run).images
    )


def test_text_negative_next_to_precomputed_embeddings_takes_their_length():
    long = long_pipeline()
    embeds, _, pooled, _ = long.encode_prompt(words(130), device=CPU, do_classifier_free_guidance=False)
    _, negative, _, negative_pooled = long.encode_prompt(
        None, prompt_embeds=embeds, pooled_prompt_embeds=pooled, negative_prompt=words(20), device=CPU
    )
    assert negative.shape == embeds.shape == (1, 154, 64)
    solo = long.encode_prompt([words(20), words(130)], device=CPU, do_classifier_free_guidance=False)
    torch.testing.assert_close(negative, solo[0][:1])
    torch.testing.assert_close(negative_pooled, solo[2][:1])
    too_long = torch.zeros(1, 308, 64)
    with pytest.raises(ValueError, match="308 positions.*negative_prompt_embeds"):
        long.encode_prompt(None, prompt_embeds=too_long, pooled_prompt_embeds=pooled, negative_prompt="x", device=CPU)
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        long.encode_prompt(None, prompt_embeds=embeds, device=CPU)
    with pytest.raises(ValueError, match="negative_prompt_embeds.*154"):
        long.encode_prompt(
            words(130), negative_prompt_embeds=too_long[:, :77], negative_pooled_prompt_embeds=pooled, device=CPU
        )


# ---------------------------------------------------------------- warnings


def test_truncation_warned_once_naming_the_text_once(monkeypatch):
    import transformers.tokenization_utils_base as tokenization

    messages, third_party = [], []
    monkeypatch.setattr(encoder_module.logger, "warning", lambda message, *args: messages.append(message))
    monkeypatch.setattr(tokenization.logger, "warning", lambda message, *args: third_party.append(message))
    long = long_pipeline()
    tail = " ".join(["zebra"] * 5)
    long.encode_prompt([f"{words(246)} {tail}"] * 3, device=CPU, negative_prompt=f"{words(240)} (dark) {tail}")
    assert len(messages) == 1 and messages[0].count("zebra zebra zebra zebra zebra") == 1, messages
    long.encode_prompt(words(200), device=CPU, negative_prompt=words(150))
    assert len(messages) == 1 and third_party == [], third_party


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_refiner_short_prompts_bitwise_stock(negative):
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from sdxl_fixtures import refiner_components

    stock = StableDiffusionXLImg2ImgPipeline(**refiner_components(), requires_aesthetics_score=True)
    long = adapter.enable_long_prompts(
        StableDiffusionXLImg2ImgPipeline(**refiner_components(), requires_aesthetics_score=True)
    )
    kwargs = dict(prompt=["a red cat", words(75)], negative_prompt=negative, num_images_per_prompt=2, device=CPU)
    assert_all_equal(stock.encode_prompt(**kwargs), long.encode_prompt(**kwargs))
