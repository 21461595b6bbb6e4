"""`SentenceTransformer.encode` with backend="onnx" (fp32 and int8) against the torch backend (fp32), as ratios.

LongCLIP-B-sized model (real dimensions: text 512 x 12 layers at 248 positions, ViT-B/16 at 224 px, 512-d
embeddings) with random weights, built through the real conversion path and exported with the package's exporter
(towers only: `onnx/text_model*.onnx`, `onnx/vision_model*.onnx`).

1. Throughput of `encode` on 248-token captions and on 224 px images for each backend, the backends taking turns
   within every round (so drifting machine speed hits all alike); the ratios torch / onnx of each round are
   reported as median and range.
2. Agreement on 64 captions x 64 images: cosine of each embedding to torch fp32's, and the overlap of the top-10
   text-to-image retrieval lists with torch fp32's.
3. The ceiling: the towers are dominated by matrix products, so one product of each tower's MLP shape (a batch of
   captions or images, width to 4 x width) in ONNX Runtime fp32 and int8 (written by the exporter's quantizer, run
   with the backend's session options) against torch fp32 bounds what any graph of those towers can gain on this CPU.

Run: `python benchmarks/bench_onnx.py [--texts 32 --images 32 --rounds 3 --int8 qint8_avx512_vnni,quint8_avx2]`.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from timing import alternate


def _top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1)[:, :k]


def _gemm_ceiling(int8_names: list[str], batch: int, rounds: int) -> None:
    """Section 3 of the module docstring."""
    import onnx
    import onnxruntime
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from hub_configs.onnx_export import INT8_SCHEMES, OPSET, _write_int8
    from st_modules.onnx_backend import default_session_options

    rng = np.random.RandomState(0)
    folder = tempfile.mkdtemp(prefix="bench-onnx-gemm-")
    atexit.register(shutil.rmtree, folder, True)
    print("matrix product ceiling (rows x width -> 4 x width, fp32 inputs):")
    for tower, rows, width in (("text", batch * 248, 512), ("vision", batch * 197, 768)):
        weight = (0.02 * rng.randn(width, 4 * width)).astype(np.float32)
        inputs = rng.randn(rows, width).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "matmul",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", width])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 4 * width])],
            [numpy_helper.from_array(weight, "w")],
        )
        fp32 = os.path.join(folder, f"{tower}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), fp32)
        files = {"onnx fp32": fp32}
        for name in int8_names:
            files[f"onnx {name}"] = os.path.join(folder, f"{tower}_{name}.onnx")
            _write_int8(fp32, files[f"onnx {name}"], INT8_SCHEMES[name], 2**31)
        # The session options backend="onnx" uses (int8 products that do not saturate on CPUs without VNNI).
        sessions = {
            key: onnxruntime.InferenceSession(path, default_session_options(), providers=["CPUExecutionProvider"])
            for key, path in files.items()
        }
        calls = {"torch fp32": functools.partial(torch.matmul, torch.from_numpy(inputs), torch.from_numpy(weight))}
        calls.update({key: functools.partial(session.run, None, {"x": inputs}) for key, session in sessions.items()})
        samples = alternate(calls, rounds, f"matmul {tower}")
        flop = 2 * rows * width * 4 * width
        line = f"  {tower:6s} {rows} x {width} -> {4 * width}: torch fp32 {flop / min(samples['torch fp32']) / 1e9:.0f} GFLOP/s"
        for key in files:
            ratios = [t / o for t, o in zip(samples["torch fp32"], samples[key])]
            line += f", {key} x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=32, help="captions per timed encode call")
    parser.add_argument("--images", type=int, default=32, help="images per timed encode call")
    parser.add_argument("--retrieval", type=int, default=64, help="captions and images of the agreement check")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", default="qint8_avx512_vnni", help="comma-separated int8 variant names")
    parser.add_argument("--ceiling-only", action="store_true", help="only the matrix product ceiling (section 3)")
    args = parser.parse_args()

    from bench_encode import build_repo
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from hub_configs.onnx_export import export_graphs, load_fp32, longclip_graphs, parse_variants

    int8_names = [name for name in args.int8.split(",") if name]
    _gemm_ceiling(int8_names, args.batch_size, max(args.rounds, 5))
    if args.ceiling_only:
        return
    work = tempfile.mkdtemp(prefix="bench-onnx-longclip-b-")
    atexit.register(shutil.rmtree, work, True)  # the exported repo is about 1 GB
    repo = build_repo(work)  # the same LongCLIP-B-sized model as bench_encode.py
    started = time.perf_counter()
    model, processor = load_fp32(repo)
    towers = longclip_graphs(model, processor)[:2]  # the joint graph is not what encode runs
    export_graphs(towers, os.path.join(repo, "onnx"), parse_variants(["fp32", *int8_names]), verify=False)
    export_seconds = time.perf_counter() - started
    del model

    backends = {"torch fp32": SentenceTransformer(repo, trust_remote_code=True, device="cpu")}
    backends["onnx fp32"] = SentenceTransformer(repo, trust_remote_code=True, backend="onnx")
    for name in int8_names:
        backends[f"onnx {name}"] = SentenceTransformer(
            repo, trust_remote_code=True, backend="onnx", model_kwargs={"file_name": f"model_{name}.onnx"}
        )

    rng = np.random.RandomState(0)
    words = [
        "the",
        "a",
        "red",
        "blue",
        "harbour",
        "boat",
        "sky",
        "old",
        "small",
        "tall",
        "bright",
        "window",
        "street",
        "tree",
        "dog",
    ]
    count = max(args.texts, args.images, args.retrieval)
    captions = [" ".join(rng.choice(words, 400)) for _ in range(count)]  # every caption is cut to 248 tokens
    images = [Image.fromarray((rng.rand(256, 320, 3) * 255).astype(np.uint8)) for _ in range(count)]

    inputs = {"text": captions[: args.texts], "image": images[: args.images]}
    calls = {
        f"{name}, {modality}": functools.partial(model.encode, items, batch_size=args.batch_size)
        for name, model in backends.items()
        for modality, items in inputs.items()
    }
    samples = alternate(calls, args.rounds, "encode")
    timings = {name: {modality: samples[f"{name}, {modality}"] for modality in inputs} for name in backends}

    reference_text = backends["torch fp32"].encode(captions[: args.retrieval], batch_size=args.batch_size)
    reference_image = backends["torch fp32"].encode(images[: args.retrieval], batch_size=args.batch_size)
    reference_top = _top_k(reference_text, reference_image, 10)

    print(
        f"LongCLIP-B-sized, random weights, CPU ({os.cpu_count()} cores); export {export_seconds:.0f} s; "
        f"{args.texts} captions of 248 tokens, {args.images} images at 224 px, batch {args.batch_size}, "
        f"{args.rounds} rounds"
    )
    base = timings["torch fp32"]
    for name, measured in timings.items():
        rates = {
            m: len(measured[m]) and (args.texts if m == "text" else args.images) / min(measured[m]) for m in measured
        }
        line = f"{name:24s} text {rates['text']:6.2f}/s  images {rates['image']:6.2f}/s"
        if name != "torch fp32":
            for modality in ("text", "image"):
                ratios = [t / o for t, o in zip(base[modality], measured[modality])]
                line += f"  {modality} x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            text = backends[name].encode(captions[: args.retrieval], batch_size=args.batch_size)
            image = backends[name].encode(images[: args.retrieval], batch_size=args.batch_size)
            cosine = min(float((text * reference_text).sum(1).min()), float((image * reference_image).sum(1).min()))
            top = _top_k(text, image, 10)
            overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, reference_top)])
            line += f"  min cosine {cosine:.5f}  top-10 overlap {overlap:.3f}"
        print(line)


if __name__ == "__main__":
    main()
