"""`mmhub export-onnx REPO`: the ONNX files each ecosystem's runtimes load, for every family.

Written into `REPO/onnx/` (the Hub builder ships the folder with the repo):

- per-tower graphs `text_model.onnx`, `vision_model.onnx`, `audio_model.onnx` (transformers.js' names), each ending
  at the model's `get_<modality>_features` output, with dynamic batch and sequence/time axes and empty batches
  allowed; `backend="onnx"` of the sentence-transformers module runs these;
- the joint `model.onnx` in transformers.js' contract of the family's model type (jina-clip-v2: `input_ids` and
  `pixel_values` with independent batch sizes -> `text_embeddings`, `image_embeddings`, `l2norm_text_embeddings`,
  `l2norm_image_embeddings`; LongCLIP, a stock CLIP: `input_ids`, `pixel_values`, `attention_mask` ->
  `logits_per_image`, `logits_per_text`, `text_embeds`, `image_embeds`);
- variants of every graph under both naming schemes: `<stem>_fp16.onnx` (transformers.js `dtype: "fp16"`),
  `<stem>_quantized.onnx` (transformers.js `"q8"`) and sentence-transformers' dynamic-quantization names
  `<stem>_qint8_arm64.onnx`, `<stem>_qint8_avx512.onnx`, `<stem>_qint8_avx512_vnni.onnx`, `<stem>_quint8_avx2.onnx`;
  a graph over 2 GB keeps its tensors in `<file>_data` (transformers.js' convention), declared in `config.json`'s
  `transformers.js_config.use_external_data_format`.

Beside the folder, `REPO/preprocessor_config.json` (the image processor settings transformers.js and other runtimes
read) is written in step with `processor_config.json`. Every fp32 graph is checked against PyTorch with ONNX Runtime
on inputs of other sizes than the export used, empty batches included; variants are compared with PyTorch by cosine.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from st_modules.onnx_backend import (
    EXTERNAL_DATA_SUFFIX,
    JOINT_FILE_STEM,
    ONNX_SUBFOLDER,
    PREPROCESSOR_CONFIG,
    TOWER_FILE_STEMS,
    TRANSFORMERS_JS_CONFIG,
    write_preprocessor_config,
)

from .builder import read_json, write_json

logger = logging.getLogger(__name__)

OPSET = 17
# protobuf cannot serialise a model of 2 GiB or more; larger graphs keep their tensors in an external data file.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26

# Dynamic int8 quantization schemes by file-name suffix: (weights signed, per channel, reduce range). The
# sentence-transformers names carry optimum's presets for those CPUs (ONNX Runtime quantizes activations to uint8
# dynamically in every scheme); "quantized" is transformers.js' q8, with 7-bit weights as transformers.js' own
# converter writes it by default: its users cannot set ONNX Runtime's precise-int8 option (see
# `st_modules.onnx_backend.PRECISE_INT8_ENTRY`), and full-range signed weights saturate on x86 CPUs without VNNI.
# Only MatMul/Gemm weights are quantized: ONNX Runtime has no CPU kernel for int8 ConvInteger, and the few
# patch-embedding convolutions cost little.
INT8_SCHEMES = {
    "quantized": (True, True, True),
    "qint8_arm64": (True, True, False),
    "qint8_avx512": (True, True, True),
    "qint8_avx512_vnni": (True, True, False),
    "quint8_avx2": (False, True, True),
}
INT8_OPS = ("MatMul", "Gemm")
FP16 = "fp16"
FP32 = "fp32"
# `--variants` words: a precision, "int8" for every int8 name, or one int8 name.
VARIANT_GROUPS = {FP32: (FP32,), FP16: (FP16,), "int8": tuple(INT8_SCHEMES)}
DEFAULT_VARIANTS = (FP32, FP16, "int8")

# Example texts per call: the export, then checks with other batch sizes and sequence lengths (one text runs past
# CLIP's 77 tokens).
_TEXT_SETS = (
    ("a photo of a cat", "two dogs playing in the snow"),
    (
        " ".join(["a tall lighthouse on a rocky coast under heavy grey clouds with gulls circling"] * 8),
        "red",
        "a small boat on a calm lake at dawn",
    ),
    ("an old wooden bridge over a river in autumn", "blue sky"),
    ("a red bicycle leaning against a whitewashed wall in a narrow street", "snow", "fog", "a cat", "rain"),
)
_BATCHES = (2, 3, 2, 5)
# The calls whose shapes tell the constant parts of every reshape apart from the dynamic ones (three, so that no
# size coincides by chance in all of them).
_PROBES = (1, 2, 3)
# The calls the parity checks run (other batch sizes and lengths than the export's, 1000 audio frames in the second).
_CHECKS = (1, 2)


def variant_suffix(variant: str) -> str:
    """File-name suffix of a variant: "" for fp32, "_fp16", "_quantized", "_qint8_avx512_vnni", ..."""
    return "" if variant == FP32 else f"_{variant}"


def parse_variants(text: str | Iterable[str]) -> list[str]:
    """Variants named by `--variants` ("fp32,fp16,int8", "qint8_avx512_vnni", ...); fp32 always comes first.

    Raises:
        ValueError: an unknown word (the message lists the known ones).
    """
    words = [word.strip() for word in (text.split(",") if isinstance(text, str) else text) if word.strip()]
    known = {**VARIANT_GROUPS, **{name: (name,) for name in INT8_SCHEMES}}
    unknown = [word for word in words if word not in known]
    if unknown:
        raise ValueError(f"Unknown ONNX variants {unknown}; known: {sorted(known)}")
    chosen = [FP32] + [variant for word in words for variant in known[word]]
    return list(dict.fromkeys(chosen))


@dataclasses.dataclass
class GraphSpec:
    """One ONNX graph to export.

    Args:
        stem: File stem (`text_model`, `model`, ...).
        module: The `torch.nn.Module` traced; its forward takes `inputs` in order and returns `outputs` in order.
        inputs: ONNX input names.
        outputs: ONNX output names.
        axes: Dynamic axes per input and output name (`{"input_ids": {0: "batch", 1: "sequence"}}`).
        sample: `sample(k)` -> example inputs as numpy arrays: k=0 for the export, k=1, 2 for the checks (other
            batch sizes and lengths).
        symbolic_output_dims: Output dims (`{name: [axis, ...]}`) to declare symbolic in the file even where their
            size is fixed (for consumers that read fixed output widths as something else).
        reference: `reference(torch inputs)` -> the PyTorch outputs the file must equal, when they are not simply
            `module`'s (the audio tower is checked against the model's own stretching, not the exported one).
    """

    stem: str
    module: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: dict[str, dict[int, str]]
    sample: Callable[[int], dict[str, Any]]
    symbolic_output_dims: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    reference: Callable[..., Any] | None = None


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and measured.

    Args:
        files: Written file names, relative to the output folder.
        max_abs_diff: Per fp32 file, the largest |ONNX Runtime - PyTorch| over the checks.
        min_cosine: Per variant file, the smallest cosine to PyTorch over output rows.
        external_data: Files whose tensors live in `<file>_data`.
    """

    files: list[str] = dataclasses.field(default_factory=list)
    max_abs_diff: dict[str, float] = dataclasses.field(default_factory=dict)
    min_cosine: dict[str, float] = dataclasses.field(default_factory=dict)
    external_data: list[str] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------------- wrappers


def _feature_tower(model, modality: str, pre=None):
    """A module running `model.get_<modality>_features(**inputs).pooler_output` (after `pre` on the inputs)."""
    import torch

    method = f"get_{modality}_features"
    names = {"text": ("input_ids", "attention_mask"), "image": ("pixel_values",), "audio": ("input_features",)}

    class FeatureTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.pre = pre

        def forward(self, *tensors):
            inputs = dict(zip(names[modality], tensors))
            if self.pre is not None:
                inputs = self.pre(inputs)
            output = getattr(self.model, method)(**inputs)
            output = getattr(output, "pooler_output", output)
            # A plain tensor: tensor subclasses (LongCLIPFeatures) are not traceable outputs.
            return output.as_subclass(torch.Tensor)

    return FeatureTower()


def _clip_joint(model):
    """transformers.js' CLIPModel contract: input_ids, pixel_values, attention_mask -> logits and unit embeddings."""
    import torch

    class ClipJoint(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, pixel_values, attention_mask):
            out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
            return out.logits_per_image, out.logits_per_text, out.text_embeds, out.image_embeds

    return ClipJoint()


def _jina_joint(model):
    """transformers.js' JinaCLIPModel contract: input_ids and pixel_values with independent batch sizes."""
    import torch
    import torch.nn.functional as F

    pad_id = model.config.text_config.pad_token_id

    class JinaJoint(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, pixel_values):
            # transformers.js and the card's snippet pass no attention mask: padding is the pad id, as upstream.
            mask = (input_ids != pad_id).long()
            text = self.model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output
            image = self.model.get_image_features(pixel_values=pixel_values).pooler_output
            return text, image, F.normalize(text, dim=-1), F.normalize(image, dim=-1)

    return JinaJoint()


# ------------------------------------------------------------------------------------------- bicubic stretch

_CUBIC_A = -0.75  # PyTorch's bicubic kernel coefficient


def _cubic_near(x):
    return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1


def _cubic_far(x):
    return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A


def bicubic_stretch_time(features, target: int):
    """Stretch axis 2 of `features` to `target` rows as `F.interpolate(mode="bicubic", align_corners=True)` does.

    Written with gathers and arithmetic on the traced frame count, so the exported graph keeps a dynamic time axis
    (ONNX Resize's cubic mode differs from PyTorch's at the 1e-3 level). Along an axis that is not resized the 2-D
    bicubic is this 1-D one; with `target` rows already present it is the identity.
    """
    import torch

    frames = features.shape[2]
    frames = frames if isinstance(frames, torch.Tensor) else torch.tensor(frames)
    scale = (frames - 1).to(torch.float32) / float(target - 1)
    source = torch.arange(target, dtype=torch.float32) * scale
    base = torch.floor(source)
    t = source - base
    weights = (_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t))
    last = frames - 1
    stretched = None
    for offset, weight in zip((-1, 0, 1, 2), weights):
        index = torch.minimum(torch.clamp(base.long() + offset, min=0), last)
        term = features.index_select(2, index) * weight[None, None, :, None]
        stretched = term if stretched is None else stretched + term
    return stretched


def clap_frames_target(audio_config) -> int:
    """The time rows HTSAT stretches its log-mel input to (`spec_size * freq_ratio`)."""
    return int(audio_config.spec_size * (audio_config.spec_size // audio_config.num_mel_bins))


# -------------------------------------------------------------------------------------------- example inputs


def _pixel_shape(processor) -> tuple[int, int, int]:
    from PIL import Image

    pixels = processor.image_processor(Image.new("RGB", (40, 30), (120, 80, 40)), return_tensors="np")
    return tuple(pixels["pixel_values"].shape[1:])


def text_sample(processor, k: int) -> dict[str, Any]:
    import numpy as np

    tokens = processor.tokenizer(list(_TEXT_SETS[k]), padding=True, truncation=True, return_tensors="np")
    return {name: np.asarray(tokens[name], dtype=np.int64) for name in ("input_ids", "attention_mask")}


def image_sample(processor, k: int) -> dict[str, Any]:
    import numpy as np

    shape = _pixel_shape(processor)
    return {"pixel_values": np.random.default_rng(10 + k).standard_normal((_BATCHES[k], *shape)).astype(np.float32)}


def audio_sample(processor, k: int) -> dict[str, Any]:
    """Log-mel features of random clips; the last check cuts one frame, as Termite's Go runtime sends 1000."""
    import numpy as np

    extractor = processor.feature_extractor
    rng = np.random.default_rng(20 + k)
    waves = [
        (0.1 * rng.standard_normal(extractor.sampling_rate * (1 + i))).astype(np.float32) for i in range(_BATCHES[k])
    ]
    state = np.random.get_state()
    np.random.seed(0)  # CLAP's extractor crops and pads at random
    try:
        features = extractor(waves, sampling_rate=extractor.sampling_rate, return_tensors="np")["input_features"]
    finally:
        np.random.set_state(state)
    features = np.asarray(features, dtype=np.float32)
    return {"input_features": features[:, :, :-1] if k == 2 else features}


# ------------------------------------------------------------------------------------------ family graphs

_TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


def tower_spec(model, processor, modality: str, output: str, pre=None) -> GraphSpec:
    """The per-tower graph of `modality`, ending at `get_<modality>_features`."""
    if modality == "text":
        inputs, axes, sample = ("input_ids", "attention_mask"), dict(_TEXT_AXES), text_sample
    elif modality == "image":
        inputs, axes, sample = ("pixel_values",), {"pixel_values": {0: "batch"}}, image_sample
    else:
        inputs, axes, sample = ("input_features",), {"input_features": {0: "batch", 2: "time"}}, audio_sample
    return GraphSpec(
        stem=TOWER_FILE_STEMS[modality],
        module=_feature_tower(model, modality, pre),
        reference=_feature_tower(model, modality) if pre is not None else None,
        inputs=inputs,
        outputs=(output,),
        axes={**axes, output: {0: "batch"}},
        sample=lambda k: sample(processor, k),
    )


def longclip_graphs(model, processor) -> list[GraphSpec]:
    """LongCLIP (a stock CLIP): towers with transformers.js' CLIP output names, and the joint CLIPModel graph."""
    joint = GraphSpec(
        stem=JOINT_FILE_STEM,
        module=_clip_joint(model),
        inputs=("input_ids", "pixel_values", "attention_mask"),
        outputs=("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"),
        axes={
            "input_ids": {0: "text_batch", 1: "sequence"},
            "attention_mask": {0: "text_batch", 1: "sequence"},
            "pixel_values": {0: "image_batch"},
            "logits_per_image": {0: "image_batch", 1: "text_batch"},
            "logits_per_text": {0: "text_batch", 1: "image_batch"},
            "text_embeds": {0: "text_batch"},
            "image_embeds": {0: "image_batch"},
        },
        sample=lambda k: {**text_sample(processor, k), **image_sample(processor, k)},
    )
    return [
        tower_spec(model, processor, "text", "text_embeds"),
        tower_spec(model, processor, "image", "image_embeds"),
        joint,
    ]


def jina_graphs(model, processor) -> list[GraphSpec]:
    """jina-clip-v2: towers (un-normalised embeddings) and the joint graph of the published card."""
    joint = GraphSpec(
        stem=JOINT_FILE_STEM,
        module=_jina_joint(model),
        inputs=("input_ids", "pixel_values"),
        outputs=("text_embeddings", "image_embeddings", "l2norm_text_embeddings", "l2norm_image_embeddings"),
        axes={
            "input_ids": {0: "text_batch", 1: "sequence"},
            "pixel_values": {0: "image_batch"},
            "text_embeddings": {0: "text_batch"},
            "image_embeddings": {0: "image_batch"},
            "l2norm_text_embeddings": {0: "text_batch"},
            "l2norm_image_embeddings": {0: "image_batch"},
        },
        sample=lambda k: {"input_ids": text_sample(processor, k)["input_ids"], **image_sample(processor, k)},
    )
    return [
        tower_spec(model, processor, "text", "text_embeddings"),
        tower_spec(model, processor, "image", "image_embeddings"),
        joint,
    ]


def clap_time_stretch(audio_config):
    """Inputs hook of the audio tower: stretch any frame count to HTSAT's input rows inside the graph."""
    target = clap_frames_target(audio_config)

    def pre(inputs):
        return {"input_features": bicubic_stretch_time(inputs["input_features"], target)}

    return pre


def clipclap_graphs(model, processor) -> list[GraphSpec]:
    """CLIPCLAP: the three towers (unit embeddings in CLIP's space). transformers.js has no CLIPCLAP model type,
    so there is no joint graph."""
    if model.config.audio_config.enable_fusion:
        raise ValueError("export-onnx supports unfused CLAP audio towers only (the fused branch is data-dependent)")
    return [
        tower_spec(model, processor, "text", "text_embeds"),
        tower_spec(model, processor, "image", "image_embeds"),
        tower_spec(model, processor, "audio", "audio_embeds", pre=clap_time_stretch(model.config.audio_config)),
    ]


FAMILY_GRAPHS: dict[str, Callable[[Any, Any], list[GraphSpec]]] = {
    "longclip": longclip_graphs,
    "jina-clip-v2": jina_graphs,
    "clipclap": clipclap_graphs,
}


# ------------------------------------------------------------------------------------------------ onnx files


def _session(model_or_path, providers=("CPUExecutionProvider",)):
    import onnxruntime

    from st_modules.onnx_backend import default_session_options

    # The checks run the variants the way backend="onnx" runs them (int8 products that do not saturate).
    options = default_session_options()
    options.log_severity_level = 3  # the empty-batch checks make ONNX Runtime log expected shape warnings
    if isinstance(model_or_path, str):
        return onnxruntime.InferenceSession(model_or_path, options, providers=list(providers))
    if model_or_path.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        return onnxruntime.InferenceSession(model_or_path.SerializeToString(), options, providers=list(providers))
    folder = tempfile.mkdtemp(prefix="mmhub-onnx-")
    path = os.path.join(folder, "probe.onnx")
    save_model(model_or_path, path, threshold=0)
    session = onnxruntime.InferenceSession(path, options, providers=list(providers))
    shutil.rmtree(folder, ignore_errors=True)  # ONNX Runtime has read the data
    return session


def save_model(model, path: str, threshold: int = EXTERNAL_DATA_THRESHOLD) -> bool:
    """Write `model`; over `threshold` bytes its tensors go to `<file>_data`. Returns whether they did."""
    import onnx

    for stale in (path, path + EXTERNAL_DATA_SUFFIX):
        if os.path.exists(stale):
            os.remove(stale)
    external = model.ByteSize() >= threshold
    if external:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=os.path.basename(path) + EXTERNAL_DATA_SUFFIX,
            # Small tensors (shape constants) stay inline: ONNX Runtime's shape inference reads them at load.
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, path)
    return external


def _constants(graph) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def make_reshapes_batch_safe(model, feeds: Sequence[Mapping[str, Any]]) -> int:
    """Turn the parts of Reshape shapes that never change into constants, the inferred (-1) entry included.

    Traced code such as `x.view(batch, length, -1, head_dim)` exports a shape built at run time
    (`Concat(Shape(x)[0], Shape(x)[1], [-1], [head_dim])`), and ONNX Runtime's own graph optimisation rewrites such
    shapes into `[0, 0, -1, head_dim]`-style constants. With an empty batch neither can be resolved: -1 cannot be
    inferred from zero elements, and the session fails. Running the graph on `feeds` (inputs of different batch
    sizes and lengths) shows which pieces of each shape take the same value every time: those depend on no dynamic
    axis and become constants (-1 replaced by the size it resolved to), which leaves every non-empty result
    unchanged and lets an empty batch through.

    Returns:
        The number of shape pieces made constant.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _constants(graph)
    candidates = []  # (reshape, concat) with a Concat only Reshapes read
    for node in graph.node:
        concat = producers.get(node.input[1]) if node.op_type == "Reshape" else None
        if (
            concat is not None
            and concat.op_type == "Concat"
            and all(user.op_type == "Reshape" for user in consumers.get(concat.output[0], []))
        ):
            candidates.append((node, concat))
    if not candidates:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {output.name for output in probe.graph.output}
    for node, concat in candidates:
        for name in (node.input[0], node.output[0], *concat.input):
            if name not in declared and name not in constants:
                probe.graph.output.append(helper.make_empty_tensor_value_info(name))
                declared.add(name)
    session = _session(probe)
    names = [output.name for output in session.get_outputs()]
    runs = [dict(zip(names, session.run(None, dict(feed)))) for feed in feeds]
    rewritten = 0
    for node, concat in candidates:
        offset = 0
        pieces = []
        for name in concat.input:
            values = [np.asarray(constants[name] if name in constants else run[name]).reshape(-1) for run in runs]
            pieces.append((name, values, offset))
            offset += values[0].size
        copies = node.attribute and any(a.name == "allowzero" and a.i for a in node.attribute)
        for position, (name, values, start) in enumerate(pieces):
            if any(value.shape != values[0].shape or (value != values[0]).any() for value in values[1:]):
                # A dynamic size that is always the input's size at the same place becomes 0, ONNX's "copy this
                # dimension" (what ONNX Runtime's optimiser cannot prove, so it would write -1 there instead).
                if (
                    not copies
                    and values[0].size == 1
                    and all(
                        start < run[node.input[0]].ndim and int(value[0]) == run[node.input[0]].shape[start]
                        for value, run in zip(values, runs)
                    )
                ):
                    constant = f"{concat.name or concat.output[0]}/copy_{position}"
                    graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.int64), constant))
                    concat.input[position] = constant
                    rewritten += 1
                continue
            piece = values[0].astype(np.int64).copy()
            for slot in np.flatnonzero(piece == -1):
                sizes = {int(run[node.output[0]].shape[start + slot]) for run in runs}
                if len(sizes) != 1:
                    break
                piece[slot] = sizes.pop()
            if (piece == -1).any() or (name in constants and (piece == values[0]).all()):
                continue  # still inferred, or already this constant
            constant = f"{concat.name or concat.output[0]}/constant_{position}"
            graph.initializer.append(numpy_helper.from_array(piece, constant))
            concat.input[position] = constant
            rewritten += 1
    if rewritten:
        drop_unused(graph)
    return rewritten


def drop_unused(graph) -> None:
    """Remove nodes and initializers nothing reads any more (ONNX Runtime would warn about each one)."""
    while True:
        used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
        dead = [node for node in graph.node if not any(name in used for name in node.output)]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def declare_symbolic_dims(model, dims: Mapping[str, Iterable[int]]) -> None:
    """Declare the given output dims symbolic (`<output>_dim<axis>`) in the file's output signature."""
    for output in model.graph.output:
        for axis in dims.get(output.name, ()):
            dim = output.type.tensor_type.shape.dim[axis]
            dim.Clear()
            dim.dim_param = f"{output.name}_dim{axis}"


def _trace(spec: GraphSpec, path: str) -> None:
    import torch

    example = spec.sample(0)
    args = tuple(torch.from_numpy(example[name]) for name in spec.inputs)
    spec.module.eval()
    # The tracer refuses to bake tensors that require grad into the graph (LongCLIP builds its position table from
    # two parameters on every call); the flags come back after the export.
    trainable = [parameter for parameter in spec.module.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        _export_traced(spec, args, path)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def _export_traced(spec: GraphSpec, args, path: str) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns about every traced Python branch; the checks below are what counts.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module,
            args,
            path,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_fp32(spec: GraphSpec, path: str, threshold: int = EXTERNAL_DATA_THRESHOLD, checks=None) -> bool:
    """Trace `spec`, make its reshapes empty-batch safe and write it to `path`. Returns whether data is external."""
    import onnx

    checks = checks or _Checks(spec)
    with tempfile.TemporaryDirectory(prefix="mmhub-onnx-") as folder:
        traced = os.path.join(folder, "traced.onnx")
        _trace(spec, traced)
        model = onnx.load(traced)  # loads any external data the exporter wrote for a large model
    rewritten = make_reshapes_batch_safe(model, [checks.feed(k) for k in _PROBES])
    if rewritten:
        logger.info("%s: %d reshape pieces made constant (empty-batch safe)", spec.stem, rewritten)
    declare_symbolic_dims(model, spec.symbolic_output_dims)
    return save_model(model, path, threshold)


def _write_fp16(source: str, path: str, threshold: int) -> bool:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(source)
    # float32 inputs and outputs: processors produce float32 and transformers.js does not cast inputs.
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=model.ByteSize() >= threshold)
    return save_model(half, path, threshold)


def _write_int8(source: str, path: str, scheme: tuple[bool, bool, bool], threshold: int) -> bool:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    signed, per_channel, reduce_range = scheme
    with tempfile.TemporaryDirectory(prefix="mmhub-onnx-") as folder:
        quantized = os.path.join(folder, "quantized.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "please run pre-processing": shapes come from the graph itself
            quantize_dynamic(
                source,
                quantized,
                weight_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                op_types_to_quantize=list(INT8_OPS),
                use_external_data_format=os.path.getsize(source) >= threshold
                or os.path.isfile(source + EXTERNAL_DATA_SUFFIX),
            )
        model = onnx.load(quantized)
    return save_model(model, path, threshold)


def export_graphs(
    specs: Sequence[GraphSpec],
    out_dir: str,
    variants: Sequence[str] = (FP32,),
    *,
    verify: bool = True,
    atol: float = 1e-4,
    threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> ExportReport:
    """Export every spec with every variant into `out_dir` and check them against PyTorch.

    Raises:
        ValueError: an fp32 graph differs from PyTorch by more than `atol` (relative to the output's scale), fails
            on an empty batch, or a variant gives non-finite outputs.
    """
    os.makedirs(out_dir, exist_ok=True)
    report = ExportReport()
    for spec in specs:
        checks = _Checks(spec)
        fp32 = os.path.join(out_dir, f"{spec.stem}.onnx")
        written = {FP32: (fp32, export_fp32(spec, fp32, threshold, checks))}
        by_scheme: dict[tuple[bool, bool, bool], str] = {}
        copies: dict[str, str] = {}  # copy -> the file it copies (checked once, under the original's name)
        for variant in variants:
            if variant == FP32:
                continue
            path = os.path.join(out_dir, f"{spec.stem}{variant_suffix(variant)}.onnx")
            if variant == FP16:
                written[variant] = (path, _write_fp16(fp32, path, threshold))
                continue
            scheme = INT8_SCHEMES[variant]
            if scheme in by_scheme:
                # Identical presets (arm64 and avx512_vnni, transformers.js q8) are the same file under two names.
                external = _copy_model(by_scheme[scheme], path, threshold)
                copies[path] = by_scheme[scheme]
            else:
                external = _write_int8(fp32, path, scheme, threshold)
                by_scheme[scheme] = path
            written[variant] = (path, external)
        for path, external in written.values():
            name = os.path.basename(path)
            report.files.append(name)
            if external:
                report.external_data.append(name)
                report.files.append(name + EXTERNAL_DATA_SUFFIX)
        if verify:
            check_graph(spec, fp32, atol, report, checks)
            for variant, (path, _) in written.items():
                if variant != FP32 and path not in copies:
                    report.min_cosine[os.path.basename(path)] = variant_cosine(spec, path, checks)
            for path, source in copies.items():
                report.min_cosine[os.path.basename(path)] = report.min_cosine[os.path.basename(source)]
    return report


def _copy_model(source: str, target: str, threshold: int) -> bool:
    if not os.path.isfile(source + EXTERNAL_DATA_SUFFIX):
        if os.path.exists(target + EXTERNAL_DATA_SUFFIX):
            os.remove(target + EXTERNAL_DATA_SUFFIX)  # left by an earlier export of a larger graph
        shutil.copyfile(source, target)
        return False
    import onnx

    # Re-saved rather than copied: the graph names its external data file, which must carry the new file's name.
    return save_model(onnx.load(source), target, threshold)


class _Checks:
    """The check inputs of one spec and PyTorch's outputs on them, each computed once."""

    def __init__(self, spec: GraphSpec):
        self.spec = spec
        self._feeds: dict[int, dict[str, Any]] = {}
        self._expected: dict[int, list[Any]] = {}

    def feed(self, k: int) -> dict[str, Any]:
        if k not in self._feeds:
            self._feeds[k] = self.spec.sample(k)
        return self._feeds[k]

    def expected(self, k: int) -> list[Any]:
        import torch

        if k not in self._expected:
            feed = self.feed(k)
            args = tuple(torch.from_numpy(feed[name]) for name in self.spec.inputs)
            with torch.inference_mode():
                outputs = (self.spec.reference or self.spec.module)(*args)
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            self._expected[k] = [output.float().numpy() for output in outputs]
        return self._expected[k]

    def run(self, session, k: int) -> list[Any]:
        feed = self.feed(k)
        return session.run(list(self.spec.outputs), {name: feed[name] for name in self.spec.inputs})


def _empty_feeds(spec: GraphSpec, feed: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per batch axis name (`batch`, `text_batch`, ...), `feed` with that batch cut to zero rows."""
    feeds = {}
    batch_axes = {axes[0] for name, axes in spec.axes.items() if name in spec.inputs and 0 in axes}
    for axis_name in sorted(batch_axes):
        feeds[axis_name] = {
            name: value[:0] if spec.axes.get(name, {}).get(0) == axis_name else value for name, value in feed.items()
        }
    return feeds


def check_graph(spec: GraphSpec, path: str, atol: float, report: ExportReport, checks: _Checks | None = None) -> float:
    """Run the fp32 file on the check inputs and on empty batches; record and enforce parity with PyTorch."""
    import numpy as np

    checks = checks or _Checks(spec)
    session = _session(path)
    worst = 0.0
    for k in _CHECKS:
        for name, a, b in zip(spec.outputs, checks.run(session, k), checks.expected(k)):
            if a.shape != b.shape:
                raise ValueError(f"{os.path.basename(path)}: {name} has shape {a.shape}, PyTorch {b.shape}")
            scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
            diff = float(np.abs(a - b).max()) / scale if b.size else 0.0
            worst = max(worst, diff)
    report.max_abs_diff[os.path.basename(path)] = worst
    if worst > atol:
        raise ValueError(f"{os.path.basename(path)}: ONNX Runtime differs from PyTorch by {worst:.2e} > {atol}")
    for axis_name, feed in _empty_feeds(spec, checks.feed(_CHECKS[0])).items():
        try:
            got = session.run(list(spec.outputs), {name: feed[name] for name in spec.inputs})
        except Exception as error:
            raise ValueError(f"{os.path.basename(path)} fails on an empty {axis_name}: {error}") from error
        for name, value in zip(spec.outputs, got):
            if spec.axes.get(name, {}).get(0) == axis_name and value.shape[0] != 0:
                raise ValueError(
                    f"{os.path.basename(path)}: {name} has {value.shape[0]} rows for an empty {axis_name}"
                )
    return worst


def variant_cosine(spec: GraphSpec, path: str, checks: _Checks | None = None) -> float:
    """Smallest cosine between a variant's output rows and PyTorch's (over every output of the first check)."""
    import numpy as np

    checks = checks or _Checks(spec)
    session = _session(path)
    worst = 1.0
    k = _CHECKS[0]
    for a, b in zip(checks.run(session, k), checks.expected(k)):
        if not np.isfinite(a).all():
            raise ValueError(f"{os.path.basename(path)} gives non-finite outputs")
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = (a * b).sum(1) / np.maximum(norms, 1e-12)
        worst = min(worst, float(cosine.min()) if cosine.size else 1.0)
    return worst


# ------------------------------------------------------------------------------------------------- side files


def declare_external_data(repo_dir: str, files: Sequence[str]) -> None:
    """Record the graphs with external data in `config.json` (`transformers.js_config`), as transformers.js reads."""
    path = os.path.join(repo_dir, "config.json")
    config = read_json(path)
    js_config = dict(config.get(TRANSFORMERS_JS_CONFIG) or {})
    declared = {name: value for name, value in (js_config.get("use_external_data_format") or {}).items()}
    for name in files:
        declared[name] = 1
    if declared:
        js_config["use_external_data_format"] = dict(sorted(declared.items()))
        config[TRANSFORMERS_JS_CONFIG] = js_config
        write_json(path, config)


# --------------------------------------------------------------------------------------------------- the repo


def load_fp32(repo_dir: str):
    """The repo's model (float32, eval) and processor, through the Auto classes with the repo's remote code."""
    import torch
    from transformers import AutoModel, AutoProcessor

    if not os.path.isfile(os.path.join(repo_dir, "config.json")):
        raise FileNotFoundError(f"{repo_dir!r} is not a repo folder (no config.json)")
    model = AutoModel.from_pretrained(repo_dir, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(repo_dir, trust_remote_code=True)
    return model, processor


def export_repo(
    repo_dir: str,
    *,
    variants: Sequence[str] = (FP32,),
    verify: bool = True,
    atol: float = 1e-4,
    threshold: int = EXTERNAL_DATA_THRESHOLD,
    model=None,
    processor=None,
) -> ExportReport:
    """Write `repo_dir/onnx/` for the repo's family, `preprocessor_config.json`, and the external-data declaration."""
    from .families import family_of

    family = family_of(repo_dir)
    if family.name not in FAMILY_GRAPHS:
        raise ValueError(f"{repo_dir!r} is a {family.name} repo; export-onnx supports {sorted(FAMILY_GRAPHS)}")
    if model is None or processor is None:
        model, processor = load_fp32(repo_dir)
    out_dir = os.path.join(repo_dir, ONNX_SUBFOLDER)
    if os.path.isdir(out_dir):
        # Stale variants of an earlier export must not outlive it.
        for name in os.listdir(out_dir):
            if name.endswith((".onnx", ".onnx" + EXTERNAL_DATA_SUFFIX)):
                os.remove(os.path.join(out_dir, name))
    report = export_graphs(
        FAMILY_GRAPHS[family.name](model, processor),
        out_dir,
        list(variants),
        verify=verify,
        atol=atol,
        threshold=threshold,
    )
    report.files = [f"{ONNX_SUBFOLDER}/{name}" for name in report.files]
    if write_preprocessor_config(repo_dir):
        report.files.append(PREPROCESSOR_CONFIG)
    declare_external_data(repo_dir, report.external_data)
    return report


def print_report(report: ExportReport, where: str) -> None:
    for name, diff in report.max_abs_diff.items():
        print(f"{name}: max |onnxruntime - torch| = {diff:.2e} (relative to the output scale)")
    for name, cosine in report.min_cosine.items():
        print(f"{name}: min cosine to torch = {cosine:.5f}")
    for name in report.external_data:
        print(f"{name}: tensors in {name}{EXTERNAL_DATA_SUFFIX}")
    print(f"wrote {len(report.files)} files into {where}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The family-independent options of `mmhub export-onnx` (cli.py adds them to its parser)."""
    parser.add_argument("repo", help="a folder written by `mmhub convert` or `mmhub tiny`")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated: fp32, fp16, int8 (= {', '.join(INT8_SCHEMES)}) or one int8 name; fp32 is always "
        "written (default: %(default)s)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime checks against PyTorch")
    parser.add_argument("--atol", type=float, default=1e-4, help="fp32 parity tolerance (default: %(default)s)")
    parser.add_argument(
        "--termite-out",
        default=None,
        help="CLIPCLAP only: folder for the Termite file set (default: REPO/termite); 'none' skips it",
    )


def run_from_args(args: argparse.Namespace) -> int:
    report = export_repo(args.repo, variants=parse_variants(args.variants), verify=not args.no_verify, atol=args.atol)
    print_report(report, args.repo)
    return 0


__all__ = [
    "DEFAULT_VARIANTS",
    "FAMILY_GRAPHS",
    "INT8_SCHEMES",
    "GraphSpec",
    "ExportReport",
    "export_graphs",
    "export_repo",
    "parse_variants",
    "variant_suffix",
    "write_preprocessor_config",
]
