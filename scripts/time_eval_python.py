"""Python side of the evaluation benchmarks; prints JSON lines.

python time_eval_python.py coco GT DT     pycocotools, faster-coco-eval, hotcoco (those installed)
python time_eval_python.py scores FILE    scikit-learn average_precision_score and the ASL mAP
"""
import contextlib
import json
import sys
import time

if sys.argv[1] == "coco":
    gt, dt = sys.argv[2], sys.argv[3]
    for name in ["pycocotools", "faster_coco_eval", "hotcoco"]:
        try:
            if name == "pycocotools":
                from pycocotools.coco import COCO
                from pycocotools.cocoeval import COCOeval
            elif name == "faster_coco_eval":
                from faster_coco_eval import COCO, COCOeval_faster as COCOeval
            else:
                from hotcoco import COCO, COCOeval
        except ImportError:
            continue
        with contextlib.redirect_stdout(sys.stderr):
            t = time.perf_counter()
            g = COCO(gt)
            d = g.loadRes(dt) if hasattr(g, "loadRes") else g.load_res(dt)
            e = COCOeval(g, d, "bbox")
            e.evaluate(); e.accumulate(); e.summarize()
            seconds = time.perf_counter() - t
        print(json.dumps({"tool": name, "seconds": seconds, "AP": float(e.stats[0])}))
else:
    import numpy as np
    from safetensors.numpy import load_file
    from sklearn.metrics import average_precision_score
    t = load_file(sys.argv[2])
    scores, targets = t["scores"], t["targets"]
    s = time.perf_counter()
    sk = average_precision_score(targets, scores, average=None)
    sk_seconds = time.perf_counter() - s
    s = time.perf_counter()
    aps = []
    for k in range(scores.shape[1]):  # the ASL repository's helper, vectorised per class
        order = scores[:, k].argsort()[::-1]
        tk = targets[order, k] == 1
        pos = np.cumsum(tk)
        prec = pos / np.arange(1, len(tk) + 1)
        aps.append(prec[tk].sum() / (pos[-1] + 1e-8))
    asl_seconds = time.perf_counter() - s
    print(json.dumps({"tool": "python", "sklearn_map": float(np.mean(sk)), "sklearn_seconds": sk_seconds,
                      "asl_map": 100 * float(np.mean(aps)), "asl_seconds": asl_seconds}))
