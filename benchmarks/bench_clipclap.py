"""CLIPCLAP audio throughput: SentenceTransformer against the raw model, torch against numpy features, ONNX Runtime.

Every ratio compares two functions on the same inputs, timed alternately, best of `--repeats` rounds, with the spread
of the per-round ratios:

1. arrays: `SentenceTransformer.encode` on `{"array", "sampling_rate"}` clips against the repo's processor called
   plainly (features on the CPU) + `get_audio_features` on the same arrays;
2. files: the same on WAV files, both sides decoding them (soundfile);
3. features: CLIPCLAP's extractor (log-mel in torch, on `--device`) against the stock numpy `ClapFeatureExtractor`;
4. ONNX Runtime against PyTorch for the audio forward on ready features (needs the `onnx` extra; skipped with a
   one-line note otherwise);
5. with `--processes N` (accelerators): `encode` through a pool of N processes on the device against the raw path.

Run: `python benchmarks/bench_clipclap.py [--model REPO_DIR] [--clips 16] [--seconds 5] [--batch-size 8]
[--repeats 5] [--device cpu]`. Without `--model` a tiny random repo is built (the forward is then tiny and the
figures measure preprocessing and overheads, not a real HTSAT).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from timing import compare, machine_line, pool_lines, progress, require, synchronize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=1, help="also measure a pool of N processes per device")
    args = parser.parse_args()
    require("sentence_transformers", "soundfile", "soxr")

    import numpy as np
    import soundfile
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor, ClapFeatureExtractor

    from hub_configs.factory import make_repo

    scratch = tempfile.mkdtemp(prefix="bench-clipclap-")
    if args.model is None:
        progress("building a tiny random CLIPCLAP repo")
    repo = args.model or make_repo("clipclap", os.path.join(scratch, "repo"), tiny=True)
    rng = np.random.default_rng(0)
    rate = 48_000
    clips = [(0.1 * rng.standard_normal(int(args.seconds * rate))).astype(np.float32) for _ in range(args.clips)]
    paths = []
    for index, clip in enumerate(clips):
        paths.append(os.path.join(scratch, f"{index}.wav"))
        soundfile.write(paths[-1], clip, rate, subtype="FLOAT")
    arrays = [{"array": clip, "sampling_rate": rate} for clip in clips]

    device = torch.device(args.device)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    st = SentenceTransformer(repo, trust_remote_code=True, device=args.device)
    starts = range(0, len(clips), args.batch_size)

    def raw_forward(batch_clips):
        # The plain processor call, as a user writes it (its features are computed on the CPU).
        inputs = processor(audio=batch_clips, sampling_rate=rate)
        model.get_audio_features(
            input_features=inputs["input_features"].to(device), is_longer=inputs["is_longer"].to(device)
        )

    def raw_arrays():
        with torch.inference_mode():
            for start in starts:
                raw_forward(clips[start : start + args.batch_size])
        synchronize(device)

    def raw_files():
        with torch.inference_mode():
            for start in starts:
                raw_forward(
                    [soundfile.read(path, dtype="float32")[0] for path in paths[start : start + args.batch_size]]
                )
        synchronize(device)

    def st_arrays():
        st.encode(arrays, batch_size=args.batch_size)

    def st_files():
        st.encode(paths, batch_size=args.batch_size)

    extractor = processor.feature_extractor
    stock = ClapFeatureExtractor.from_dict(extractor.to_dict())

    def numpy_features():
        stock(clips, sampling_rate=rate, return_tensors="pt")

    def torch_features():
        extractor(clips, sampling_rate=rate, return_tensors="pt", device=device)

    lines = [
        compare(raw_arrays, st_arrays, args.repeats, "arrays").line("arrays", "raw", "encode", len(clips), "clips"),
        compare(raw_files, st_files, args.repeats, "files").line("WAV files", "raw", "encode", len(clips), "clips"),
        compare(numpy_features, torch_features, args.repeats, "features").line(
            f"log-mel features on {device.type}", "numpy", "torch", len(clips), "clips"
        ),
    ]

    features = processor(audio=clips[: args.batch_size], sampling_rate=rate)["input_features"]
    try:
        require("onnx", "onnxruntime")
    except SystemExit:
        lines.append("ONNX Runtime: skipped (see the line above)")
    else:
        import onnxruntime

        from hub_configs.clipclap_onnx import export_onnx

        progress("exporting the audio tower to ONNX")
        onnx_dir = os.path.join(scratch, "onnx")
        export_onnx(repo, onnx_dir, verify=False)
        audio_session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "audio_model.onnx"))
        projection_session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "audio_projection.onnx"))
        projection_input = projection_session.get_inputs()[0].name  # "input" in Termite's layout
        cpu_model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        feed = features.numpy()

        def torch_forward():
            with torch.inference_mode():
                cpu_model.get_audio_features(input_features=features)

        def onnx_forward():
            pooled = audio_session.run(None, {"input_features": feed})[0]
            projection_session.run(None, {projection_input: pooled})

        lines.append(
            compare(torch_forward, onnx_forward, args.repeats, "onnx").line(
                "audio forward on CPU", "PyTorch", "ONNX Runtime", args.batch_size, "clips"
            )
        )

    if args.processes > 1:
        cases = [("arrays", raw_arrays, arrays, len(clips), args.batch_size)]
        lines += pool_lines(st, device, args.processes, args.repeats, cases)

    print(machine_line())
    print(
        f"model: {'tiny random' if args.model is None else args.model}, {args.clips} clips of {args.seconds} s, "
        f"batch {args.batch_size}, device={device}, best of {args.repeats} alternated rounds "
        "(spread: lowest-highest per-round ratio)"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
