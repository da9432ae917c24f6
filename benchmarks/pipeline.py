"""Input-pipeline throughput: img/s out of a real DataLoader for each way of reading images, per worker count.

This module owns the input-pipeline benchmark ("the GPU never waits"). It writes synthetic grey PNGs at
``source_px`` (X-ray-like: smooth anatomy plus noise, 8 bit) to a temporary folder and times a real
``torch.utils.data.DataLoader`` over the real :class:`spft.data.dataset.ImageDataset` + :class:`ImageTransform`
(decode, resize to ``size``, normalise, collate) for:

- ``source-pil``: the source PNGs decoded by Pillow (``spft.data.io.load_image``, what training uses);
- ``source-torchvision``: the same, decoded by ``torchvision.io.decode_png`` (the alternative that was measured);
- ``cache-png``: the ``png`` image cache (``spft prepare cache``, pre-resized PNG files);
- ``cache-npy``: the ``npy`` image cache (rows of one memory-mapped uint8 array).

Run ``python benchmarks/pipeline.py [--images N] [--workers 0,1,2]``. Not a test: nothing asserts a time.
:func:`decode_report` gives the single-process cost per image of each step (decode, resize, transform).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spft.data.dataset import ImageDataset

CONFIGS = ("source-pil", "source-torchvision", "cache-png", "cache-npy")


def write_sources(folder: Path, n_images: int, source_px: int, seed: int = 0) -> list[str]:
    """``n_images`` distinct 8-bit grey PNGs of ``source_px`` x ``source_px`` (compressibility close to X-rays)."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:source_px, 0:source_px].astype(np.float32) / source_px
    base = 120 + 70 * np.sin(6.0 * x) * np.cos(4.5 * y) + 30 * np.exp(-((x - 0.5) ** 2 + (y - 0.45) ** 2) * 8)

    def one(i: int) -> str:
        rng = np.random.default_rng(seed + i)
        shift = int(rng.integers(0, source_px))
        noise = rng.integers(-6, 7, size=base.shape, dtype=np.int16)
        pixels = np.clip(np.roll(base, shift, axis=1) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img{i:05d}.png"
        Image.fromarray(pixels).save(path)
        return str(path)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, range(n_images)))


def _table(paths: list[str]):
    from spft.data.contract import LabelTable

    n = len(paths)
    return LabelTable(classes=["finding"], paths=list(paths), ids=[f"i{k}" for k in range(n)],
                      groups=[f"g{k}" for k in range(n)], splits=["train"] * n,
                      labels=np.zeros((n, 1), dtype=np.float32))


def _torchvision_load(path: str, color: str) -> Image.Image:
    """A PNG decoded by torchvision, converted the way ``spft.data.io`` converts (grey 8/16-bit only)."""
    from torchvision.io import ImageReadMode, decode_png, read_file

    from spft.data.io import _SIXTEEN_TO_EIGHT

    decoded = decode_png(read_file(path), ImageReadMode.UNCHANGED)
    if decoded.shape[0] != 1:
        raise ValueError(f"{path}: the torchvision comparison reads grey PNGs only, got {decoded.shape[0]} channels")
    pixels = decoded[0].numpy()
    if pixels.dtype == np.uint16:
        pixels = _SIXTEEN_TO_EIGHT[pixels]
    image = Image.fromarray(pixels)
    return image if color == "grey" else image.convert("RGB")


class TorchvisionDataset(ImageDataset):
    """ImageDataset with the decode done by torchvision (everything else the same)."""

    def __getitem__(self, i: int) -> dict:
        row = int(self.index[i])
        return {"image": self.transform(_torchvision_load(self.table.paths[row], self.color)),
                "labels": torch.from_numpy(self.table.labels[row].copy()), "id": self.table.ids[row],
                "group": self.table.groups[row], "index": i}


def _img_s(dataset, workers: int, batch: int) -> tuple[float, float]:
    """(img/s, seconds) of one full epoch, worker start-up included (as an epoch of training pays it)."""
    options = {"num_workers": workers}
    if workers > 0:
        options["prefetch_factor"] = 4
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, **options)
    start, n = time.perf_counter(), 0
    for item in loader:
        n += len(item["image"])
    seconds = time.perf_counter() - start
    return n / seconds, seconds


def decode_report(source_px: int = 1024, size: int = 518, repeats: int = 10) -> dict:
    """Milliseconds per image in one process: PNG decode (Pillow / torchvision, 8 and 16 bit), ``load_image``,
    the resize + crop, the transform of a pre-resized image, and reading one npy cache row."""
    from spft.data.io import load_image
    from spft.data.transforms import ImageTransform

    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    transform = ImageTransform(size, (0.5,) * 3, (0.25,) * 3)
    with tempfile.TemporaryDirectory(prefix="spft-decode-") as tmp:
        eight = write_sources(Path(tmp), 1, source_px)[0]
        sixteen = str(Path(tmp) / "sixteen.png")
        deep = np.asarray(Image.open(eight), dtype=np.uint16) * 257 + rng.integers(0, 257, (source_px, source_px))
        Image.fromarray(deep.astype(np.uint16)).save(sixteen)
        rows = np.lib.format.open_memmap(Path(tmp) / "rows.npy", mode="w+", dtype=np.uint8, shape=(4, size, size))
        rows.flush()

        def ms(fn) -> float:
            fn()
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                best = min(best, (time.perf_counter() - start) / repeats * 1e3)
            return best

        def pil_decode(path):
            with Image.open(path) as image:
                image.load()

        from torchvision.io import ImageReadMode, decode_png, read_file

        grey = load_image(eight)
        small = transform.resize_crop(grey)
        return {
            "decode_png8_pil_ms": ms(lambda: pil_decode(eight)),
            "decode_png8_torchvision_ms": ms(lambda: decode_png(read_file(eight), ImageReadMode.UNCHANGED)),
            "decode_png16_pil_ms": ms(lambda: pil_decode(sixteen)),
            "decode_png16_torchvision_ms": ms(lambda: decode_png(read_file(sixteen), ImageReadMode.UNCHANGED)),
            "load_image_png8_ms": ms(lambda: load_image(eight)),
            "load_image_png16_ms": ms(lambda: load_image(sixteen)),
            "resize_crop_ms": ms(lambda: transform.resize_crop(grey)),
            "transform_presized_ms": ms(lambda: transform(small)),
            "load_image_npy_row_ms": ms(lambda: load_image(f"{Path(tmp) / 'rows.npy'}::2")),
        }


def pipeline_report(workers_list=(0, 1, 2), n_images: int = 256, source_px: int = 1024, size: int = 518,
                    batch: int = 32) -> list[dict]:
    """img/s through DataLoader + ImageDataset + ImageTransform for each reading configuration and worker count.

    Returns one dict per (configuration, workers): ``config`` (one of :data:`CONFIGS`), ``workers``, ``images``,
    ``img_s``, ``seconds``, ``source_px``, ``size``, ``batch``; plus ``prepare_s`` (time to write the cache, 2
    threads) for the cache configurations.
    """
    from spft.data.cache import ImageCache
    from spft.data.transforms import ImageTransform

    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    transform = ImageTransform(size, (0.5,) * 3, (0.25,) * 3)
    results = []
    with tempfile.TemporaryDirectory(prefix="spft-pipeline-") as tmp:
        table = _table(write_sources(Path(tmp) / "sources", n_images, source_px))
        readings = {"source-pil": (ImageDataset, table, None), "source-torchvision": (TorchvisionDataset, table, None)}
        for fmt in ("png", "npy"):
            cache = ImageCache(Path(tmp) / "cache", size, "grey", fmt)
            start = time.perf_counter()
            summary = cache.fill(list(table.paths), transform.resize_crop, workers=2)
            if summary["failed"]:
                raise RuntimeError(f"caching failed: {summary['failed']}")
            readings[f"cache-{fmt}"] = (ImageDataset, cache.redirect(table), time.perf_counter() - start)
        for config in CONFIGS:
            dataset_cls, reading, prepare_s = readings[config]
            dataset = dataset_cls(reading, "train", transform, "grey")
            for workers in workers_list:
                img_s, seconds = _img_s(dataset, workers, batch)
                row = {"config": config, "workers": workers, "images": n_images, "img_s": img_s, "seconds": seconds,
                       "source_px": source_px, "size": size, "batch": batch}
                if prepare_s is not None:
                    row["prepare_s"] = prepare_s
                results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160,
                        help="synthetic source images (160: about 1.5 min on 2 cores)")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated (0,1,2)")
    parser.add_argument("--source-px", type=int, default=1024)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-decode", action="store_true", help="skip the per-step single-process timings")
    args = parser.parse_args(argv)
    workers = tuple(int(w) for w in args.workers.split(","))
    print(f"input pipeline: {args.images} synthetic {args.source_px} px grey PNGs -> {args.size} px, batch "
          f"{args.batch}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    if not args.no_decode:
        for key, value in decode_report(args.source_px, args.size).items():
            print(f"  {key:<28} {value:7.2f}")
    for row in pipeline_report(workers, args.images, args.source_px, args.size, args.batch):
        extra = f"  (cache written in {row['prepare_s']:.1f} s)" if "prepare_s" in row else ""
        print(f"{row['config']:<19} workers {row['workers']:>2}  {row['img_s']:8.1f} img/s  "
              f"{row['images']} images in {row['seconds']:.2f} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
