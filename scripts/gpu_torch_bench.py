#!/usr/bin/env python3
"""PyTorch peers for scripts/gpu-check.sh, on the same GPU: device-to-device copy bandwidth, and
the latency of MiniLM-L3 (batch 1, sequence 128) and ResNet-50 (batch 1, 224x224) in eager mode
and under torch.compile. Needs only torch (no network, no torchvision, no transformers).

The models are the same architectures as the ONNX files kuaxin runs (BERT 3 layers x 384,
12 heads, FFN 1536; ResNet-50 v1 bottlenecks) with random weights: latency does not depend on
the values. f32 with TF32 off, as kuaxin runs f32 by default. Inputs already live on the GPU.

Prints one JSON object per line: {"what": ..., "value": ..., "unit": ...}.
Usage: python gpu_torch_bench.py [--copy-mib 1024] [--iters 50] [--skip-compile] [--only copy|minilm|resnet50]
"""
import argparse
import json
import sys
import time


def emit(what, value, unit, **extra):
    print(json.dumps({"what": what, "value": value, "unit": unit, **extra}), flush=True)


def median_ms(torch, fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def resnet50(torch):
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride, down):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.c2, self.b2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.c3, self.b3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.down = (nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
                         if down else None)

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = F.relu(self.b2(self.c2(y)))
            y = self.b3(self.c3(y))
            return F.relu(y + (self.down(x) if self.down is not None else x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(n):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1, i == 0))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000), nn.Softmax(dim=1)]
    return nn.Sequential(*layers).eval(), (torch.randn(1, 3, 224, 224),)


def minilm(torch):
    nn = torch.nn

    class MiniLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.word, self.pos, self.typ = nn.Embedding(30522, 384), nn.Embedding(512, 384), nn.Embedding(2, 384)
            self.ln = nn.LayerNorm(384, eps=1e-12)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu", batch_first=True,
                                           layer_norm_eps=1e-12) for _ in range(3))

        def forward(self, ids, mask):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.ln(self.word(ids) + self.pos(pos)[None] + self.typ(torch.zeros_like(ids)))
            pad = mask == 0
            for layer in self.layers:
                x = layer(x, src_key_padding_mask=pad)
            return x

    ids = torch.randint(0, 30522, (1, 128))
    return MiniLM().eval(), (ids, torch.ones(1, 128, dtype=torch.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--only", action="append", default=[])
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_torch_bench: torch sees no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    emit("gpu", torch.cuda.get_device_name(0), "", torch=torch.__version__)
    want = lambda n: not a.only or n in a.only
    if want("copy"):
        x = torch.empty(a.copy_mib << 18, dtype=torch.float32, device="cuda").normal_()
        y = torch.empty_like(x)
        ms = median_ms(torch, lambda: y.copy_(x), 3, 20)
        emit("copy_bandwidth", 2 * x.numel() * 4 / (ms * 1e-3) / 1e9, "GB/s", bytes=2 * x.numel() * 4, ms=ms)
        del x, y
    for name, make in [("minilm", minilm), ("resnet50", resnet50)]:
        if not want(name):
            continue
        model, inputs = make(torch)
        model = model.cuda()
        inputs = tuple(t.cuda() for t in inputs)
        with torch.inference_mode():
            emit(f"{name}_eager", median_ms(torch, lambda: model(*inputs), 10, a.iters), "ms")
            if a.skip_compile:
                continue
            try:
                t0 = time.time()
                compiled = torch.compile(model)
                compiled(*inputs)
                torch.cuda.synchronize()
                emit(f"{name}_compile_time", time.time() - t0, "s")
                emit(f"{name}_compiled", median_ms(torch, lambda: compiled(*inputs), 10, a.iters), "ms")
            except Exception as e:  # one model's compile failure must not hide the other's numbers
                print(f"gpu_torch_bench: torch.compile of {name} failed: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
