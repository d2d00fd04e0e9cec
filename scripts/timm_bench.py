"""Time timm's TResNet on PyTorch with the same protocol as our `bench` app.

Random weights (timm's init, pretrained=False), a fixed uniform [0, 1) batch, eval mode under
torch.inference_mode, `warmup` untimed passes, then the mean over `iters` timed passes.
Prints one CSV row in timm's benchmark columns:
model,infer_img_size,infer_batch_size,infer_samples_per_sec,infer_step_time,param_count
"""
import argparse
import time

import timm
import torch

p = argparse.ArgumentParser()
p.add_argument("--model", default="tresnet_m")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--img-size", type=int, default=224)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--device", default="cpu")
p.add_argument("--amp", action="store_true", help="float16 autocast (GPU)")
p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or GPU; no loss scaling)")
p.add_argument("--channels-last", action="store_true")
p.add_argument("--train", action="store_true", help="time forward + cross-entropy + backward + SGD steps")
args = p.parse_args()
if args.amp and args.bf16:
    p.error("--amp and --bf16 are two different autocast precisions: pick one")
autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16
autocast_on = args.amp or args.bf16

if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = timm.create_model(args.model, pretrained=False).eval().to(args.device)
x = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
params = sum(p.numel() for p in model.parameters())


if args.train:
    model.train()
    targets = torch.arange(args.batch_size, device=args.device) % 1000
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(enabled=args.amp)


def step():
    if args.train:
        with torch.autocast(args.device.split(":")[0], dtype=autocast_dtype, enabled=autocast_on):
            loss = torch.nn.functional.cross_entropy(model(x), targets)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        out = loss
    else:
        with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=autocast_dtype, enabled=autocast_on):
            out = model(x)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


for _ in range(args.warmup):
    step()
times = []
for _ in range(args.iters):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
mean = sum(times) / len(times)
print(f"{args.model},{args.img_size},{args.batch_size},{args.batch_size / mean:.2f},{mean * 1e3:.3f},{params / 1e6:.2f}")
