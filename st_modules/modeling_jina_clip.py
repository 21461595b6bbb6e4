"""jina-clip-v2 for transformers 5: native `JinaEmbeddingsV3Model` text tower + EVA02 vision tower, upstream API kept.

Text: Jina-XLM-RoBERTa (rotary positions, post-LN) with the default LoRA task adapter merged into the weights, masked
mean pooling, optional linear projection. Images: EVA02 ViT, CLS token through the final norm and head. Both towers
write into the same `projection_dim` space; embeddings are Matryoshka-truncatable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import JinaEmbeddingsV3Model, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_jina_clip import JinaCLIPConfig
from .jina_eva_vision import EvaRotaryEmbedding2D, EvaVisionTransformer
from .media_inputs import DEFAULT_SETTINGS, LoadSettings, classify, load_all, load_image, process_images
from .token_truncation import FastTruncatingTokenizer, pad_to_tensors

logger = logging.getLogger(__name__)

try:
    from PIL import Image
except ImportError:  # pragma: no cover - pillow is a transformers vision dependency
    Image = None


@dataclass
class JinaCLIPOutput(ModelOutput):
    """Output of `JinaCLIPModel.forward`: similarity logits and the L2-normalised embeddings of both towers."""

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


def _check_truncate_dim(truncate_dim: Any, width: int) -> int | None:
    if truncate_dim is None:
        return None
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 0 < truncate_dim <= width:
        raise ValueError(f"truncate_dim must be None or an int in [1, {width}], got {truncate_dim!r}")
    return truncate_dim


def _finish(embeddings: torch.Tensor, truncate_dim: int | None, normalize: bool) -> torch.Tensor:
    # Matryoshka: truncate first, then normalise, so every prefix is itself a unit vector.
    if truncate_dim is not None:
        embeddings = embeddings[:, :truncate_dim]
    if normalize:
        embeddings = F.normalize(embeddings.float(), p=2, dim=-1).to(embeddings.dtype)
    return embeddings


class JinaCLIPPreTrainedModel(PreTrainedModel):
    config_class = JinaCLIPConfig
    config: JinaCLIPConfig
    base_model_prefix = "jina_clip"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["JinaEmbeddingsV3Embeddings", "JinaEmbeddingsV3Layer", "EvaBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, EvaRotaryEmbedding2D):
            cos, sin = module.compute_table()
            module.freqs_cos.copy_(cos)
            module.freqs_sin.copy_(sin)
        elif not isinstance(
            module, (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm, EvaVisionTransformer, JinaCLIPModel)
        ):
            # Text-tower internals (rotary inverse frequencies, position buffers) keep transformers' own init.
            super()._init_weights(module)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, EvaVisionTransformer):
            nn.init.normal_(module.cls_token, std=std)
            nn.init.normal_(module.pos_embed, std=std)
        elif isinstance(module, JinaCLIPModel):
            module.logit_scale.fill_(self.config.logit_scale_init_value)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """Load as usual; without an explicit dtype, bf16 when CUDA is available and fp32 otherwise (as upstream)."""
        if "dtype" not in kwargs and "torch_dtype" not in kwargs:
            kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return super().from_pretrained(*args, **kwargs)


class JinaCLIPModel(JinaCLIPPreTrainedModel):
    """jina-clip-v2 dual encoder.

    Feature methods (`get_text_features`, `get_image_features`) return `BaseModelOutputWithPooling` whose
    `pooler_output` is the un-normalised embedding; `encode_text` / `encode_image` are the upstream convenience API
    (instruction prefixes, Matryoshka truncation, L2 normalisation, media loading).
    """

    def __init__(self, config: JinaCLIPConfig):
        super().__init__(config)
        self.text_model = JinaEmbeddingsV3Model(config.text_config, add_pooling_layer=False)
        if config.text_projection_type is None:
            self.text_projection = nn.Identity()
        else:
            self.text_projection = nn.Linear(
                config.text_config.hidden_size, config.projection_dim, bias=config.text_projection_bias
            )
        self.vision_model = EvaVisionTransformer(config.vision_config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self._processor = None
        self.post_init()

    # ----------------------------------------------------------------------------------------------- features
    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """Mean-pooled (over `attention_mask`) and projected text embeddings in `pooler_output`, not normalised.

        Args:
            input_ids: token ids, shape (batch, length).
            attention_mask: 1 for real tokens; derived from the pad id when omitted (as upstream).
            token_type_ids: ignored beyond the single segment the model was trained with.
        """
        if input_ids is None:
            raise ValueError("get_text_features needs input_ids (a LongTensor of shape (batch, length))")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a 2-D tensor, got {type(input_ids).__name__}")
        if attention_mask is None:
            attention_mask = (input_ids != self.config.text_config.pad_token_id).long()
        hidden = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.to(hidden.device, torch.float32).unsqueeze(-1)
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = self.text_projection(pooled.to(hidden.dtype))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)

    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutputWithPooling:
        """CLS embedding of the vision tower (after its final norm and head) in `pooler_output`, not normalised.

        Args:
            pixel_values: normalised images, shape (batch, 3, image_size, image_size).
        """
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4:
            raise ValueError(
                f"get_image_features needs pixel_values, a (batch, 3, H, W) tensor, got {type(pixel_values).__name__}"
            )
        tokens = self.vision_model.forward_features(pixel_values)
        pooled = self.vision_model.head(self.vision_model.norm(tokens)[:, 0])
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=pooled)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs: Any,
    ) -> JinaCLIPOutput:
        """CLIP-style similarity of every text with every image (and the symmetric InfoNCE loss if asked)."""
        text = F.normalize(self.get_text_features(input_ids, attention_mask).pooler_output, dim=-1)
        image = F.normalize(self.get_image_features(pixel_values).pooler_output, dim=-1)
        logits_per_text = text @ image.t() * self.logit_scale.exp()
        loss = None
        if return_loss:
            labels = torch.arange(len(logits_per_text), device=logits_per_text.device)
            loss = (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)) / 2
        return JinaCLIPOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text,
            image_embeds=image,
        )

    # ------------------------------------------------------------------------------------------ upstream API
    @property
    def processor(self):
        """The repo's `JinaCLIPProcessor`, loaded on first use from the folder the model came from."""
        if self._processor is None:
            from transformers import AutoProcessor

            if not self.config.name_or_path:
                raise ValueError(
                    "This model was not loaded from a repo; set `model.processor = JinaCLIPProcessor(...)`"
                )
            self._processor = AutoProcessor.from_pretrained(self.config.name_or_path, trust_remote_code=True)
        return self._processor

    @processor.setter
    def processor(self, value) -> None:
        self._processor = value

    def get_tokenizer(self):
        return self.processor.tokenizer

    def get_preprocess(self):
        return self.processor.image_processor

    def get_instruction_from_task(self, task: str | None) -> str:
        """The instruction prefix of `task`, as upstream: `None` means `config.default_instruction_task` (usually none).

        Raises:
            ValueError: `task` is not one of the checkpoint's tasks (the list is in the message).
        """
        instructions = self.config.task_instructions
        if task is None:
            default = self.config.default_instruction_task
            return instructions[default] if default is not None else ""
        if not instructions:
            # Upstream ignores a task when the checkpoint has no instructions at all.
            logger.warning("This checkpoint has no task instructions; ignoring task %r", task)
            return ""
        if not isinstance(task, str) or task not in instructions:
            raise ValueError(
                f"Unsupported task {task!r}: this checkpoint's tasks are {', '.join(map(repr, instructions))}; "
                "pass one of them, or task=None for no instruction"
            )
        return instructions[task]

    def _run_batches(self, items: list, batch_size: int, sort_key, encode_batch, show_progress_bar: bool | None):
        """Call `encode_batch` on `(position, item)` pairs, positions counted in the whole call; keep input order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        # Longest first so padding is shared by similar lengths; results are put back in input order.
        order = np.argsort([-sort_key(item) for item in items], kind="stable")
        starts = range(0, len(items), batch_size)
        if show_progress_bar:
            try:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="Encoding")
            except ImportError:
                pass
        chunks = [encode_batch([(int(i), items[i]) for i in order[start : start + batch_size]]) for start in starts]
        stacked = torch.cat(chunks) if chunks else torch.empty(0, self.config.projection_dim)
        return stacked[torch.as_tensor(np.argsort(order, kind="stable"), device=stacked.device)]

    def _fast_tokenizer(self, tokenizer, tokenizer_kwargs: dict[str, Any]) -> FastTruncatingTokenizer | None:
        """The exact fast tokenizer when the call is the default truncating one (padding=True, truncation=True)."""
        if set(tokenizer_kwargs) != {"padding", "truncation", "max_length"}:
            return None
        max_length = tokenizer_kwargs["max_length"]
        if tokenizer_kwargs["padding"] not in (True, "longest") or tokenizer_kwargs["truncation"] is not True:
            return None
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            return None
        fast = FastTruncatingTokenizer.cached_on(self, tokenizer)
        return fast if fast is not None and max_length > fast.num_special_tokens else None

    @staticmethod
    def _convert(embeddings: torch.Tensor, single: bool, convert_to_numpy: bool, convert_to_tensor: bool):
        if convert_to_tensor:
            result = embeddings
        elif convert_to_numpy:
            result = embeddings.float().cpu().numpy()
        else:
            result = list(embeddings)
        return result[0] if single else result

    @torch.inference_mode()
    def encode_text(
        self,
        sentences: str | list[str],
        task: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = True,
        truncate_dim: int | None = None,
        **tokenizer_kwargs: Any,
    ):
        """Embed texts as upstream jina-clip-v2 does.

        Args:
            sentences: a string or a list of strings.
            task: `None` (no prefix) or a key of `config.task_instructions`, e.g. `"retrieval.query"`; it only
                chooses the instruction prefix (the merged default LoRA adapter serves every text).
            batch_size: texts per forward pass.
            show_progress_bar: show a tqdm bar.
            convert_to_numpy: return a numpy array (default) instead of a list of tensors.
            convert_to_tensor: return one stacked tensor (overrides `convert_to_numpy`).
            device: move the model there first.
            normalize_embeddings: L2-normalise (after truncation).
            truncate_dim: keep the first `truncate_dim` dimensions (default `config.truncate_dim`).
            **tokenizer_kwargs: passed to the tokenizer (`max_length` defaults to `config.max_text_length`).

        Returns:
            Embeddings of shape (n, dim), or (dim,) for a single string.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else sentences
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"sentences must be a string or a list of strings, got {type(sentences).__name__}")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"sentences[{position}] must be a string, got {type(text).__name__}")
            classify({"text": text}, position, ("text",))  # valid Unicode, named by its position
        truncate_dim = _check_truncate_dim(
            truncate_dim if truncate_dim is not None else self.config.truncate_dim, self.config.projection_dim
        )
        prefix = self.get_instruction_from_task(task)
        texts = [prefix + t for t in texts]
        if device is not None:
            self.to(device)
        tokenizer = self.get_tokenizer()
        tokenizer_kwargs.setdefault("padding", True)
        tokenizer_kwargs.setdefault("truncation", True)
        tokenizer_kwargs.setdefault("max_length", self.config.max_text_length)
        was_training = self.training
        self.eval()

        fast = self._fast_tokenizer(tokenizer, tokenizer_kwargs)

        def encode_batch(batch: list[tuple[int, str]]) -> torch.Tensor:
            texts = [text for _, text in batch]
            if fast is not None:
                # The same ids as the tokenizer call below, tokenizing only the prefix of long texts that is kept.
                ids, _ = fast(texts, tokenizer_kwargs["max_length"])
                tokens = pad_to_tensors(ids, tokenizer.pad_token_id, tokenizer.padding_side)
                tokens = {name: value.to(self.device) for name, value in tokens.items()}
            else:
                tokens = tokenizer(texts, return_tensors="pt", **tokenizer_kwargs).to(self.device)
            features = self.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
            ).pooler_output
            return _finish(features, truncate_dim, normalize_embeddings)

        embeddings = self._run_batches(texts, batch_size, len, encode_batch, show_progress_bar)
        self.train(was_training)
        return self._convert(embeddings, single, convert_to_numpy, convert_to_tensor)

    # Limits for media inputs of `encode_image` (pixel limits, URL timeout and size, reduced decoding); replace on
    # an instance to change them.
    load_settings: LoadSettings = DEFAULT_SETTINGS

    @staticmethod
    def _classify_images(images: list, positions: list[int] | None = None) -> list[tuple[int, Any]]:
        """Check every image before any is read; errors name `images[position]` in the caller's whole call."""
        pairs = []
        for position, image in zip(positions or range(len(images)), images):
            if not isinstance(image, (str, np.ndarray, torch.Tensor)) and not (
                Image is not None and isinstance(image, Image.Image)
            ):
                raise TypeError(
                    f"images[{position}] must be a URL, a data:image/ URI, a file path, a PIL image or an array, "
                    f"got {type(image).__name__}"
                )
            pairs.append((position, classify(image, position, ("image",))[1]))
        return pairs

    @classmethod
    def load_images(cls, images: list, positions: list[int] | None = None) -> list:
        """Open URLs, `data:image/...` URIs, local paths, PIL images and arrays as RGB PIL images (threaded).

        Args:
            images: The images.
            positions: Their positions in the caller's call, for error messages (default 0, 1, ...).
        """
        settings = cls.load_settings
        pairs = cls._classify_images(images, positions)
        return load_all(lambda item, index: load_image(item, index, settings), pairs, workers=8)

    @torch.inference_mode()
    def encode_image(
        self,
        images,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = True,
        truncate_dim: int | None = None,
    ):
        """Embed images as upstream jina-clip-v2 does.

        Args:
            images: one image or a list; each a URL, a `data:image/...` URI, a file path or a PIL image.
            batch_size, show_progress_bar, convert_to_numpy, convert_to_tensor, device, normalize_embeddings,
            truncate_dim: as in `encode_text`.

        Returns:
            Embeddings of shape (n, dim), or (dim,) for a single image.
        """
        single = isinstance(images, str) or (Image is not None and isinstance(images, Image.Image))
        items = [images] if single else images
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"images must be an image or a list of images, got {type(images).__name__}")
        # Every image is checked before any is fetched or decoded (a bad one fails fast, with its position).
        self._classify_images(list(items))
        truncate_dim = _check_truncate_dim(
            truncate_dim if truncate_dim is not None else self.config.truncate_dim, self.config.projection_dim
        )
        if device is not None:
            self.to(device)
        image_processor = self.get_preprocess()
        was_training = self.training
        self.eval()

        def encode_batch(batch: list[tuple[int, Any]]) -> torch.Tensor:
            pixels = process_images(batch, image_processor, settings=self.load_settings)["pixel_values"]
            features = self.get_image_features(pixel_values=pixels.to(self.device, self.dtype)).pooler_output
            return _finish(features, truncate_dim, normalize_embeddings)

        # Images all cost the same, so keep input order.
        embeddings = self._run_batches(list(items), batch_size, lambda item: 0, encode_batch, show_progress_bar)
        self.train(was_training)
        return self._convert(embeddings, single, convert_to_numpy, convert_to_tensor)


__all__ = ["JinaCLIPModel", "JinaCLIPPreTrainedModel", "JinaCLIPOutput"]
