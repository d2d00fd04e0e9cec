"""The Python reference for `data-bench`: PIL decode + torchvision transforms + DataLoader, or
pycocotools' COCO() on an instances file. Prints one JSON line like `data-bench`.

python torch_data_bench.py --images DIR --input-size 224 --resize crop --workers 1
python torch_data_bench.py --coco instances.json
"""
import argparse
import json
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--images")
p.add_argument("--coco")
p.add_argument("--input-size", type=int, default=224)
p.add_argument("--resize", default="crop")
p.add_argument("--workers", type=int, default=1)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--passes", type=int, default=2)
a = p.parse_args()

if a.coco:
    import contextlib
    import sys
    from pycocotools.coco import COCO
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # COCO() prints progress
        c = COCO(a.coco)
    print(json.dumps({"task": "coco_parse", "images": len(c.imgs), "annotations": len(c.anns),
                      "seconds": time.perf_counter() - t}))
    raise SystemExit

import torch
from PIL import Image
from torchvision import transforms as T

torch.set_num_threads(1)
if a.resize == "crop":
    tf = T.Compose([T.Resize(int(a.input_size / 0.875)), T.CenterCrop(a.input_size), T.ToTensor()])
else:
    tf = T.Compose([T.Resize((a.input_size, a.input_size)), T.ToTensor()])
exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.images) for f in fs
               if os.path.splitext(f)[1].lower() in exts)


class Files(torch.utils.data.Dataset):
    def __len__(self):
        return len(files)

    def __getitem__(self, i):
        with Image.open(files[i]) as im:
            return tf(im.convert("RGB"))


loader = torch.utils.data.DataLoader(Files(), batch_size=a.batch_size, num_workers=a.workers)
rates = []
for pass_ in range(max(a.passes, 2)):
    t = time.perf_counter()
    n = sum(len(b) for b in loader)
    if pass_ > 0:
        rates.append(n / (time.perf_counter() - t))
print(json.dumps({"task": "images", "images": len(files), "input_size": a.input_size, "resize": a.resize,
                  "workers": a.workers, "img_per_sec": max(rates)}))
