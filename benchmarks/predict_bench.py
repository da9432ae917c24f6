"""Prediction throughput: ``spft.load(...).predict`` against a plain ``torch.inference_mode`` loop, same process.

Run: ``make bench`` (or ``python benchmarks/predict_bench.py [--size tiny|small|raddino] [--device cpu|cuda]
[--images N] [--batch B]``).

A randomly initialised classifier of the chosen size is written as an ``spft export`` folder and read back with
``spft.load`` (the path users take). Three measurements:

* **model** — the same pre-decoded ``pixel_values`` tensors through (a) a plain loop (``torch.inference_mode``,
  ``model(batch)``, sigmoid; bf16 autocast on a GPU, as spft) and (b) ``Classifier.predict_pixels`` (spft's batching,
  calibration and float64 probabilities). Prints img/s of both and spft/plain time;
* **decode** — spft's input pipeline alone (``load_image`` + ``ImageTransform`` in the predict thread pool) on
  grey 8-bit PNGs of ``--image-side`` pixels;
* **end to end** — ``m.predict(paths)``: decoding overlapped with the model, the table built.

``--onnx`` (CPU) adds the engines of ``spft predict --engine`` (:mod:`spft.tasks.classification.engine`): the
export folder gets its ``model.onnx`` (spft's exporter, as ``spft export --format onnx`` writes it) and is loaded a
second time with ``engine="onnx"``. On the same pre-decoded tensors: (c) a plain onnxruntime session loop
(``CPUExecutionProvider``, ``session.run(["logits"])``, sigmoid) and (d) spft's ``predict_pixels`` on the onnx
engine; end to end ``m.predict(paths)`` with each engine; the largest probability difference between the engines.
Both engines use torch's intra-op thread count (onnxruntime's ``intra_op_num_threads`` is set to it, in the plain
session too), so ``OMP_NUM_THREADS`` sets both. Prints onnx/torch time ratios (model only and end to end) and
spft/plain for each engine.

The last line is machine-readable: ``BENCH predict_model_ratio=<spft/plain time> predict_img_s=<end to end>
decode_img_s=<n> plain_img_s=<n>`` (+ ``onnx_*`` keys with ``--onnx``). Not a test: nothing here asserts a
wall-clock limit.

CPU serving measurement (``benchmarks/RESULTS.md``): ``OMP_NUM_THREADS=1 python benchmarks/predict_bench.py --size
raddino --device cpu --images 8 --batch 4 --repeats 2 --onnx`` (8 images: one RAD-DINO forward is
~4 s of CPU on the 2-core development VM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_export(folder: Path, size: str, n_classes: int = 8) -> None:
    """An export folder of a random classifier (the files ``spft export`` writes that ``spft.load`` reads)."""
    from bench import model_kwargs
    from safetensors.torch import save_file

    from spft.models.classifier import SpftClassifier
    from spft.models.encoders import build_encoder, preprocessing_for
    from spft.tasks.classification.export import encoder_config, export_state_dict, processor_config

    kwargs = model_kwargs(size)
    torch.manual_seed(0)
    encoder = build_encoder(None, {"model_type": "dinov2", **kwargs})
    model = SpftClassifier(encoder, n_classes, "mean", 512, 0.0).eval()
    prep = preprocessing_for(None, encoder, kwargs["image_size"])
    folder.mkdir(parents=True, exist_ok=True)
    save_file(export_state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = encoder_config(model)
    config["spft"] = {"task": "classification", "name": f"bench-{size}", "classes": [f"c{i}" for i in range(n_classes)],
                      "pooling": "mean", "head_hidden": 512, "head_dropout": 0.0, "n_prefix": model.n_prefix,
                      "loss": "bce", "color": "grey", "preprocessing": prep.record()}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config(prep)))
    (folder / "calibration.json").write_text(json.dumps({"method": "none", "temperature": 1.0}))
    (folder / "thresholds.json").write_text(json.dumps({"method": "default", "target": None, "split": None,
                                                        "classes": {f"c{i}": {"threshold": 0.5}
                                                                    for i in range(n_classes)}}))


def write_images(folder: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (side, side), dtype=np.uint8)
    paths = []
    for i in range(n):  # smooth-ish images (PNG compresses them like radiographs, not like noise)
        img = np.roll(base, i, axis=1) // 4 + np.linspace(0, 190, side, dtype=np.uint8)[None, :]
        paths.append(folder / f"img{i:05d}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fns: dict, device, repeats: int) -> dict[str, float]:
    """Best time of each function over ``repeats`` rounds, the functions interleaved within a round (so a busy
    spell of a shared machine hits all of them alike); one warm-up call each first."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "raddino"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-side", type=int, default=512, help="side of the grey PNGs decoded (512)")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: spft's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time the plain loop on torch.compile(model)")
    parser.add_argument("--onnx", action="store_true", help="also time the onnx engine (spft predict --engine onnx) "
                        "and a plain onnxruntime session on the export's model.onnx (CPU only)")
    args = parser.parse_args()

    import spft
    from spft.data.inputs import InputImage
    from spft.tasks.common.prediction import decode_ahead, default_workers

    with tempfile.TemporaryDirectory(prefix="spft-predict-bench-") as tmp:
        tmp = Path(tmp)
        write_export(tmp / "model", args.size)
        paths = write_images(tmp / "images", args.images, args.image_side)
        m = spft.load(tmp / "model", device=args.device, engine="torch")
        device, workers = m.device, args.workers or default_workers()
        print(f"predict bench: {args.size} Dinov2 ({m.preprocessing.size} px input), {args.images} grey PNGs "
              f"{args.image_side} px, batch {args.batch}, {device}, {workers} decode threads, "
              f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")

        items = [InputImage(str(p), p) for p in paths]
        decoded: list = []

        def decode():
            decoded[:] = [t for _, t in decode_ahead(items, m._pixels_of, workers, max(2 * args.batch, 4 * workers))]

        t_decode = timed({"decode": decode}, device, args.repeats)["decode"]
        pixels = torch.stack(decoded)

        model = m.model
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))

        def plain():
            with torch.inference_mode(), autocast:
                for i in range(0, len(pixels), args.batch):
                    torch.sigmoid(model(pixels[i:i + args.batch].to(device)).float()).cpu()

        def ours():
            m.predict_pixels(pixels, args.batch)

        str_paths = [str(p) for p in paths]
        model_fns = {"plain": plain, "ours": ours}
        e2e_fns = {"e2e": lambda: m.predict(str_paths, batch_size=args.batch, workers=workers)}
        onnx = onnx_engine(m, pixels, str_paths, args, tmp / "model", workers) if args.onnx else None
        if onnx:  # timed in the same interleaved rounds as torch: a busy spell hits both engines alike
            model_fns.update(onnx["model"])
            e2e_fns.update(onnx["e2e"])
        t = timed(model_fns, device, args.repeats)
        t_plain, t_ours = t["plain"], t["ours"]
        t.update(timed(e2e_fns, device, args.repeats))
        t_e2e = t["e2e"]
        n = len(paths)
        print(f"  model, pre-decoded tensors:  plain {n / t_plain:8.2f} img/s   spft predict_pixels "
              f"{n / t_ours:8.2f} img/s   spft/plain time {t_ours / t_plain:.3f}")
        print(f"  decode pipeline alone:       {n / t_decode:8.2f} img/s (load_image + ImageTransform, threads)")
        print(f"  end to end m.predict(paths): {n / t_e2e:8.2f} img/s")
        extra = ""
        if args.compile:
            compiled = torch.compile(model)

            def plain_compiled():
                with torch.inference_mode(), autocast:
                    for i in range(0, len(pixels), args.batch):
                        torch.sigmoid(compiled(pixels[i:i + args.batch].to(device)).float()).cpu()

            t_c = timed({"compiled": plain_compiled}, device, args.repeats)["compiled"]
            print(f"  plain loop, torch.compile:   {n / t_c:8.2f} img/s (compiled/eager time {t_c / t_plain:.3f})")
            extra += f" compiled_img_s={n / t_c:.2f}"
        if onnx:
            extra += onnx["report"](t)
        print(f"BENCH predict_model_ratio={t_ours / t_plain:.3f} predict_img_s={n / t_e2e:.2f} "
              f"decode_img_s={n / t_decode:.2f} plain_img_s={n / t_plain:.2f}{extra}")


def onnx_engine(m, pixels: torch.Tensor, paths: list[str], args, folder: Path, workers: int) -> dict | None:
    """Export ``model.onnx`` into the export folder (spft's exporter) and load it with ``engine="onnx"``: the
    functions to time (``model``: a plain onnxruntime session loop and spft's onnx ``predict_pixels``; ``e2e``:
    ``predict(paths)`` on the onnx engine) and ``report(times)``, which prints them against the torch ones."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("  onnx: skipped (onnxruntime is not installed: pip install 'spft[export]')")
        return None
    if m.device.type != "cpu":
        print("  onnx: skipped (the onnx engine runs on the CPU: --device cpu)")
        return None
    import spft
    from spft.tasks.classification.export import ONNX_FILE, export_onnx

    start = time.perf_counter()
    record = export_onnx(m.loaded, folder / ONNX_FILE)
    print(f"  model.onnx written in {time.perf_counter() - start:.0f} s ({record['exporter']}, opset "
          f"{record['opset']}, {(folder / ONNX_FILE).stat().st_size / 1e6:.0f} MB)")
    mo = spft.load(folder, device="cpu", engine="onnx")
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / ONNX_FILE), sess_options=options, providers=["CPUExecutionProvider"])
    batches = [np.ascontiguousarray(pixels[i:i + args.batch].numpy()) for i in range(0, len(pixels), args.batch)]

    def plain_onnx():
        for b in batches:
            (logits,) = session.run(["logits"], {"pixel_values": b})
            1 / (1 + np.exp(-logits))

    def ours_onnx():
        mo.predict_pixels(pixels, args.batch)

    def report(t: dict[str, float]) -> str:
        diff = float(np.abs(mo.predict_pixels(pixels, args.batch) - m.predict_pixels(pixels, args.batch)).max())
        n = len(pixels)
        print(f"  onnx engine ({threads} intra-op threads, CPUExecutionProvider, onnxruntime {ort.__version__}):")
        print(f"  model, pre-decoded tensors:  plain onnxruntime {n / t['plain_onnx']:8.2f} img/s   spft onnx engine "
              f"{n / t['ours_onnx']:8.2f} img/s   spft/plain time {t['ours_onnx'] / t['plain_onnx']:.3f}")
        print(f"  end to end m.predict(paths): {n / t['e2e_onnx']:8.2f} img/s (onnx engine)")
        print(f"  onnx/torch time: plain loops {t['plain_onnx'] / t['plain']:.3f}   spft predict_pixels "
              f"{t['ours_onnx'] / t['ours']:.3f}   end to end {t['e2e_onnx'] / t['e2e']:.3f}   "
              f"max |prob onnx - prob torch| {diff:.1e}")
        return (f" onnx_plain_img_s={n / t['plain_onnx']:.2f} onnx_img_s={n / t['ours_onnx']:.2f}"
                f" onnx_e2e_img_s={n / t['e2e_onnx']:.2f} onnx_model_ratio={t['ours_onnx'] / t['plain_onnx']:.3f}"
                f" onnx_torch_ratio={t['ours_onnx'] / t['ours']:.3f}"
                f" onnx_torch_e2e_ratio={t['e2e_onnx'] / t['e2e']:.3f} onnx_max_diff={diff:.1e}")

    return {"model": {"plain_onnx": plain_onnx, "ours_onnx": ours_onnx},
            "e2e": {"e2e_onnx": lambda: mo.predict(paths, batch_size=args.batch, workers=workers)}, "report": report}


if __name__ == "__main__":
    main()
