#!/usr/bin/env python3
"""Python reference for scripts/bench_tag.sh: write a random-weight TResNet COCO bundle (timm
names, config.json with the multi-label protocol) and/or tag a photo folder the way a Python user
would (PIL decode + EXIF transpose + RGB + squish resize, a torch DataLoader, timm's model,
sigmoid), timing decode waits and model time like `tag` does. Benchmark only; not part of the project.
"""
import argparse
import json
import os
import time

import torch
import timm


def write_bundle(args):
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=80).eval()
    os.makedirs(args.bundle, exist_ok=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(args.bundle, "model.safetensors"))
    labels = open(os.path.join(os.path.dirname(__file__), "../configs/labels/coco80.txt")).read().split()
    cfg = {"architecture": args.model, "num_classes": 80, "label_names": labels[:80], "task": "multi_label",
           "pretrained_cfg": {"input_size": [3, args.size, args.size], "crop_mode": "squish", "crop_pct": 1.0,
                              "interpolation": "bilinear", "mean": [0, 0, 0], "std": [1, 1, 1]}}
    json.dump(cfg, open(os.path.join(args.bundle, "config.json"), "w"), indent=1)


def enlarge(args):
    """Camera-sized copies of the test photos: upscaled to 4032x3024 (portrait ones 3024x4032),
    sensor-like grain added so the files compress like real photos (3-6 MB at q92), EXIF kept."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.copies):
        for name in args.names:
            im = Image.open(os.path.join(args.photos, name))
            exif = im.info.get("exif")
            rgb = im.convert("RGB")
            size = (4032, 3024) if rgb.width >= rgb.height else (3024, 4032)
            big = np.asarray(rgb.resize(size, Image.BICUBIC), dtype=np.int16)
            big = big + rng.normal(0, 6, big.shape).astype(np.int16)
            out = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
            stem = os.path.splitext(name)[0]
            kwargs = {"exif": exif} if exif else {}
            out.save(os.path.join(args.out, f"{i}_{stem}.jpg"), quality=92, **kwargs)


class Photos(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image, ImageOps
        import torchvision.transforms.functional as F
        im = ImageOps.exif_transpose(Image.open(self.files[i])).convert("RGB")
        return F.to_tensor(im.resize((self.size, self.size), Image.BILINEAR))


def tag(args):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.photos) for f in fs)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=80).eval()
    loader = torch.utils.data.DataLoader(Photos(files, args.size), batch_size=args.batch_size,
                                         num_workers=args.threads, persistent_workers=False)
    start = time.perf_counter()
    wait = model_time = 0.0
    n = 0
    t = time.perf_counter()
    with torch.no_grad():
        for x in loader:
            wait += time.perf_counter() - t
            t = time.perf_counter()
            torch.sigmoid(model(x))
            model_time += time.perf_counter() - t
            n += len(x)
            t = time.perf_counter()
    total = time.perf_counter() - start
    print(json.dumps({"tagged": n, "seconds": total, "model_seconds": model_time, "decode_wait_seconds": wait}))


ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("what", choices=["bundle", "tag", "enlarge"])
ap.add_argument("--model", default="tresnet_m")
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--bundle")
ap.add_argument("--photos")
ap.add_argument("--out")
ap.add_argument("--copies", type=int, default=8)
ap.add_argument("--names", nargs="*", default=[])
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args()
{"bundle": write_bundle, "tag": tag, "enlarge": enlarge}[args.what](args)
