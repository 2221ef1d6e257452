"""fkd's side of the PyTorch peer comparison (`cargo xtask bench` runs this).

Builds the peer's own nets -- `Net` and `DEFAULTS` from ../shared/bench/torch_imm.py for NoseNet
(part 1) and FaceNet (part 2), torchvision's resnet18 with a 1-channel stem and 136 outputs as in
../shared/bench/torch_resnet18.py, and Part 4's Simple Baselines net (that resnet18's trunk,
three 4x4/2 ConvTranspose2d of --deconv-channels channels (Part 4's default 128; the paper's
256) with BatchNorm and ReLU, a 1x1 conv to 68 maps; 128x128 input, 32x32 maps), and that net's
head alone (`deconv-head`: the input is a 512x4x4 feature map that requires its gradient, as
layer4's output would) -- and times
them exactly as fkd's child process times its own: random data, a training step = forward + MSE
+ backward + Adam(lr 1e-3), then forward in eval mode without gradients; a few warm-up steps,
then steps until --seconds have passed.

With --latency (resnet18 or deconv, --batch 1, --size S, optionally --flip) it times single
faces instead, as fkd's `bench-child --latency` does: eval mode under torch.inference_mode, one
face per call (with --flip, its mirror image through a second pass), each output copied to a
NumPy-free Python list as predict reads it back, every call timed; prints median_ms and p95_ms.

Usage: python peer.py --peer-dir ../shared/bench --model nose|face|resnet18|deconv|deconv-head --batch 8
       [--threads 2] [--seconds 3] [--device cpu] [--precision tf32|f32] [--deconv-channels 128]
Prints one JSON line: train_images_per_s, fwd_images_per_s, peak_rss_mb, and on CUDA
peak_gpu_mb (torch.cuda.max_memory_allocated). --precision tf32 allows TF32 in cuDNN
convolutions (PyTorch's default) and in matrix products (not PyTorch's default, but what fkd's
tf32 does); f32 forbids it in both.
"""
import argparse, json, resource, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--peer-dir", required=True)
ap.add_argument("--model", required=True, choices=["nose", "face", "resnet18", "deconv", "deconv-head"])
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seconds", type=float, default=3.0)
ap.add_argument("--warmup", type=int, default=3)
ap.add_argument("--device", default="cpu")
ap.add_argument("--deconv-channels", type=int, default=128)
ap.add_argument("--precision", default="tf32", choices=["tf32", "f32"])
ap.add_argument("--latency", action="store_true")
ap.add_argument("--size", type=int, default=128)
ap.add_argument("--flip", action="store_true")
a = ap.parse_args()
sys.path.insert(0, a.peer_dir)

import torch, torch.nn as nn, torch.nn.functional as F  # noqa: E402

torch.set_num_threads(a.threads)
torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
torch.manual_seed(0)
channels = 1
if a.model == "resnet18":
    import torchvision

    net = torchvision.models.resnet18(num_classes=136)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    hw, out = ((a.size, a.size) if a.latency else (224, 224)), (136,)
elif a.model in ("deconv", "deconv-head"):
    import torchvision

    head, c = [], 512
    for _ in range(3):
        d = a.deconv_channels
        head += [nn.ConvTranspose2d(c, d, 4, 2, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True)]
        c = d
    head.append(nn.Conv2d(c, 68, 1))
    if a.model == "deconv":
        trunk = torchvision.models.resnet18()
        trunk.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        net = nn.Sequential(*list(trunk.children())[:-2], *head)
        hw = (a.size, a.size) if a.latency else (128, 128)
    else:
        net = nn.Sequential(*head)
        channels, hw = 512, (4, 4)
    out = (68, 32, 32)
else:
    from torch_imm import DEFAULTS, Net

    part = 1 if a.model == "nose" else 2
    hw = (60, 80) if part == 1 else (120, 160)
    net = Net(DEFAULTS[part], hw)
    out = (DEFAULTS[part]["out"],)
net = net.to(a.device)

if a.latency:
    if a.model not in ("resnet18", "deconv") or a.batch != 1:
        sys.exit("--latency measures resnet18 or deconv at --batch 1")
    net.eval()
    x = torch.rand(1, 1, *hw, device=a.device) - 0.5

    def face():
        with torch.inference_mode():
            out = net(x).flatten().tolist()
            if a.flip:
                out = net(torch.flip(x, [3])).flatten().tolist()
        return out

    for _ in range(max(a.warmup, 5)):
        face()
    ms, t0 = [], time.perf_counter()
    while len(ms) < 20 or time.perf_counter() - t0 < a.seconds:
        t = time.perf_counter()
        face()
        ms.append(1000.0 * (time.perf_counter() - t))
    ms.sort()

    def rank(q):
        import math
        return ms[min(max(math.ceil(q * len(ms)), 1), len(ms)) - 1]

    print(json.dumps({
        "impl": "pytorch-" + torch.__version__,
        "model": a.model,
        "size": a.size,
        "flip": a.flip,
        "median_ms": rank(0.5),
        "p95_ms": rank(0.95),
        "calls": len(ms),
    }))
    sys.exit(0)

opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x = torch.rand(a.batch, channels, *hw, device=a.device) - 0.5
# The head's input stands for the encoder's output, whose gradient training computes.
x.requires_grad_(channels > 1)
y = torch.rand(a.batch, *out, device=a.device)


def sync():
    if a.device == "cuda":
        torch.cuda.synchronize()


def timed(step):
    for _ in range(a.warmup):
        step()
    sync()
    n, t = 0, time.perf_counter()
    while True:
        step()
        n += 1
        sync()
        dt = time.perf_counter() - t
        if dt >= a.seconds and n >= 3:
            return n * a.batch / dt


def train_step():
    loss = F.mse_loss(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


net.train()
train = timed(train_step)
net.eval()
with torch.no_grad():
    fwd = timed(lambda: net(x))
print(json.dumps({
    "impl": "pytorch-" + torch.__version__,
    "model": a.model,
    "batch": a.batch,
    "threads": a.threads,
    "train_images_per_s": train,
    "fwd_images_per_s": fwd,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else None,
}))
