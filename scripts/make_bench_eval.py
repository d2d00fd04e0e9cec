"""Inputs for the evaluation benchmarks.

python make_bench_eval.py coco GT_OUT DT_OUT   5000 images, 80 categories, ~7 objects and ~100
                                               detections per image (noisy copies + clutter)
python make_bench_eval.py scores OUT           a 40000 x 80 score matrix with targets (safetensors)
"""
import json
import random
import sys

import numpy as np

if sys.argv[1] == "coco":
    rng = random.Random(0)
    cats = [{"id": i + 1, "name": f"c{i + 1}"} for i in range(80)]
    images, anns, dets = [], [], []
    for i in range(1, 5001):
        images.append({"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        objs = []
        for _ in range(rng.randint(2, 12)):
            w, h = rng.uniform(4, 300), rng.uniform(4, 250)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            c = rng.randint(1, 80)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(rng.random() < 0.02)})
            objs.append((c, x, y, w, h))
        for _ in range(100):
            if objs and rng.random() < 0.4:
                c, x, y, w, h = rng.choice(objs)
                j = lambda v, s: v + rng.gauss(0, 0.08 * s)
                box = [j(x, w), j(y, h), max(1.0, j(w, w)), max(1.0, j(h, h))]
                if rng.random() < 0.1:
                    c = rng.randint(1, 80)
            else:
                w, h = rng.uniform(4, 200), rng.uniform(4, 200)
                box, c = [rng.uniform(0, 600), rng.uniform(0, 440), w, h], rng.randint(1, 80)
            dets.append({"image_id": i, "category_id": c, "bbox": [round(v, 2) for v in box],
                         "score": round(rng.random(), 3)})
    json.dump({"images": images, "annotations": anns, "categories": cats}, open(sys.argv[2], "w"))
    json.dump(dets, open(sys.argv[3], "w"))
elif sys.argv[1] == "scores":
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    targets = (rng.random((40000, 80)) < 0.04).astype(np.float32)
    logits = rng.normal(0, 1, targets.shape) + 2.5 * targets
    scores = (1 / (1 + np.exp(-logits))).astype(np.float16).astype(np.float32)  # f16 ties, as real runs
    save_file({"scores": scores, "targets": targets}, sys.argv[2])
