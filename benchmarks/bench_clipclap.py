"""CLIPCLAP audio throughput: SentenceTransformer vs raw model, and ONNX Runtime vs PyTorch on CPU.

Usage: python benchmarks/bench_clipclap.py [--model REPO_DIR] [--clips 32] [--seconds 5] [--batch-size 8]
Without --model a tiny random repo is built (numbers then measure overheads, not a real HTSAT).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _timed(function, repeats: int = 3) -> float:
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import soundfile
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    from hub_configs.clipclap_onnx import export_onnx
    from hub_configs.factory import make_repo

    scratch = tempfile.mkdtemp()
    repo = args.model or make_repo("clipclap", os.path.join(scratch, "repo"), tiny=True)
    rng = np.random.default_rng(0)
    rate = 48_000
    clips = [(0.1 * rng.standard_normal(int(args.seconds * rate))).astype(np.float32) for _ in range(args.clips)]
    paths = []
    for index, clip in enumerate(clips):
        paths.append(os.path.join(scratch, f"{index}.wav"))
        soundfile.write(paths[-1], clip, rate, subtype="FLOAT")

    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    st = SentenceTransformer(repo, trust_remote_code=True, device="cpu")

    def raw():
        with torch.inference_mode():
            for start in range(0, len(clips), args.batch_size):
                inputs = processor(audio=clips[start : start + args.batch_size], sampling_rate=rate)
                model.get_audio_features(input_features=inputs["input_features"], is_longer=inputs["is_longer"])

    def sentence_transformers():
        st.encode(paths, batch_size=args.batch_size)

    features = processor(audio=clips[: args.batch_size], sampling_rate=rate)["input_features"]

    def torch_forward():
        with torch.inference_mode():
            model.get_audio_features(input_features=features)

    onnx_dir = os.path.join(scratch, "onnx")
    export_onnx(repo, onnx_dir, verify=False)
    import onnxruntime

    audio_session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "audio_model.onnx"))
    projection_session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "audio_projection.onnx"))
    feed = features.numpy()

    def onnx_forward():
        pooled = audio_session.run(None, {"input_features": feed})[0]
        projection_session.run(None, {"pooler_output": pooled})

    raw_time, st_time = _timed(raw), _timed(sentence_transformers)
    torch_time, onnx_time = _timed(torch_forward), _timed(onnx_forward)
    print(f"model: {'tiny random' if args.model is None else args.model}, {args.clips} clips of {args.seconds} s")
    print(f"raw processor + get_audio_features: {len(clips) / raw_time:8.1f} clips/s")
    print(f"SentenceTransformer.encode (files):  {len(clips) / st_time:8.1f} clips/s  ratio {raw_time / st_time:.2f}")
    print(f"PyTorch audio forward (features):   {args.batch_size / torch_time:8.1f} clips/s")
    print(
        f"ONNX Runtime audio forward:          {args.batch_size / onnx_time:8.1f} clips/s  "
        f"ratio {torch_time / onnx_time:.2f}"
    )


if __name__ == "__main__":
    main()
