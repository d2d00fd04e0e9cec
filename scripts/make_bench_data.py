"""Inputs for the data benchmarks.

python make_bench_data.py photos OUT_DIR [N]   N JPEG files made from the real test photos
                                               (varied sizes and qualities, EXIF, CMYK kept)
python make_bench_data.py coco OUT_FILE        a COCO instances json the size of
                                               instances_val2014.json (40,504 images, ~291k
                                               annotations with polygon segmentations, ~160 MB)
"""
import json
import os
import random
import sys

if sys.argv[1] == "photos":
    from PIL import Image, ImageOps
    src_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "photos")
    out, n = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 256
    os.makedirs(out, exist_ok=True)
    names = ["astronaut.jpg", "chelsea.png", "rocket_exif_rot90.jpg", "hubble_deep_field_cmyk.jpg",
             "camera_gray.png", "logo_rgba.webp"]
    rng = random.Random(0)
    for i in range(n):
        im = ImageOps.exif_transpose(Image.open(os.path.join(src_dir, names[i % len(names)]))).convert("RGB")
        s = rng.uniform(0.8, 1.6)  # photo-like sizes around 400-1000 px
        im = im.resize((max(64, int(im.width * s)), max(64, int(im.height * s))), Image.BICUBIC)
        im.save(os.path.join(out, f"{i:05d}.jpg"), quality=rng.choice([75, 85, 92]))
elif sys.argv[1] == "coco":
    rng = random.Random(0)
    cats = [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in range(1, 91) if i not in
            {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
    images, anns = [], []
    for i in range(40504):
        images.append({"license": 3, "file_name": f"COCO_val2014_{i:012d}.jpg", "coco_url": "http://x/y.jpg",
                       "height": 480, "width": 640, "date_captured": "2013-11-14 11:18:45", "id": i + 1})
    for k in range(291875):
        x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 400), rng.uniform(2, 140), rng.uniform(2, 80)
        poly = [round(v, 2) for _ in range(rng.randint(10, 40)) for v in (x + rng.uniform(0, w), y + rng.uniform(0, h))]
        anns.append({"segmentation": [poly], "area": round(w * h * 0.6, 2), "iscrowd": 0,
                     "image_id": rng.randint(1, 40504), "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                     "category_id": rng.choice(cats)["id"], "id": k + 1})
    with open(sys.argv[2], "w") as f:
        json.dump({"info": {"description": "synthetic"}, "images": images, "licenses": [],
                   "annotations": anns, "categories": cats}, f)
