#!/usr/bin/env python3
"""Checks `convert-weights` output with timm itself (scripts/check_timm_interop.sh runs it): for
each converted directory, build the model from its config.json alone
(timm.create_model(architecture, num_classes=..., **model_args), plus timm's MLDecoder head when
config.json says "head": "ml_decoder"), load model.safetensors with strict=True, and compare the
logits on the reference input with timm's reference logits. Exits non-zero on any failure.
Benchmark-venv tool; not part of the project.

Usage: timm_interop.py DIR REFERENCE.safetensors INPUT_KEY LOGITS_KEY TOLERANCE [DIR ...]
"""
import json
import os
import sys

import timm
import torch
from safetensors.torch import load_file
from timm.layers.ml_decoder import MLDecoder


def build(directory):
    cfg = json.load(open(os.path.join(directory, "config.json")))
    model = timm.create_model(cfg["architecture"], pretrained=False,
                              num_classes=cfg["num_classes"], **cfg["model_args"])
    decoder = None
    if cfg.get("head") == "ml_decoder":
        args = cfg["ml_decoder"]
        decoder = MLDecoder(num_classes=cfg["num_classes"], num_of_groups=args["num_of_groups"],
                            decoder_embedding=args["decoder_embedding"],
                            initial_num_features=model.num_features)
        # Recent torch's nn.TransformerDecoder refuses this layer type in its fast path: run
        # its single layer directly, as the reference forward does.
        def layers_only(tgt, memory, *args, **kwargs):
            for layer in decoder.decoder.layers:
                tgt = layer(tgt, memory)
            return tgt
        decoder.decoder.forward = layers_only
        model.head = decoder
    state = load_file(os.path.join(directory, "model.safetensors"))
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    model.eval()

    def forward(x):
        with torch.no_grad():
            if decoder is not None:
                return decoder(model.forward_features(x))
            return model(x)
    return cfg, forward


failed = False
args = sys.argv[1:]
while args:
    directory, reference, input_key, logits_key, tolerance, *args = args
    ref = load_file(reference)
    cfg, forward = build(directory)
    logits = forward(ref[input_key].float())
    diff = (logits.double() - ref[logits_key].double()).abs().max().item()
    ok = diff <= float(tolerance)
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {directory}: {cfg['architecture']} {cfg['model_args']} "
          f"head={cfg.get('head', 'linear')}, strict load, max |logit - timm| = {diff:.2e} (tolerance {tolerance})")
sys.exit(1 if failed else 0)
