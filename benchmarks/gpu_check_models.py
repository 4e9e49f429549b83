"""The sections of benchmarks/gpu_check.py that run FCN-8s on the ``--device``: ``latency``
(fp32, fp16 and fp16 from a CUDA graph, each checked against fp32's labels before it is timed),
``training`` (images/s of the training loop's steps) and ``torchvision_parity`` (our trunks
against torchvision's modules under the same weights). The runner is gpu_check_runner.py.
"""
from __future__ import annotations

import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from gpu_check_runner import (Context, SkipSection, attempt, figures, goal_check,
                              label_agreement, one_line, raise_failures, time_calls)

SIZE_CONVENTION = ("sizes are W×H (width × height): 512x256 is 512 pixels wide and 256 high, "
                   "an input tensor of 1×3×256×512 (N×C×H×W)")
LATENCY_SIZES, QUICK_SIZES = ((512, 256), (1024, 512)), ((64, 32), (96, 64))
MIN_AGREEMENT = 0.98     # fp16 rounding flips a few near-tie pixels, a broken path flips most
PARITY_TOLERANCE = 1e-3  # max |Δ| over max |reference|; float32 with TF32 off lands near 1e-6
ROTATE = 4               # distinct random inputs cycled through, so no run times one cached input


# --- latency ------------------------------------------------------------------------------------

MODES = ("fp32", "fp16", "fp16+graph")


def latency(ctx: Context, record: dict) -> None:
    """Batch-1 PyTorch inference of FCN-8s ResNet18 at each size and mode, timed per call with
    CUDA events after a warm-up, each mode's labels checked against fp32's before it is timed."""
    import copy

    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = random_scores(create_fcn8s("resnet18")).to(ctx.device).eval()
    half = copy.deepcopy(model).half() if cuda else None
    iters, warmup = (5, 2) if ctx.quick else (300, 25)
    record.update(device=ctx.device, model="fcn8s resnet18, 21 classes, eval", batch=1,
                  size_convention=SIZE_CONVENTION,
                  fp16="weights and input cast with .half() (no autocast)",
                  graph="fp16 model captured once in a torch.cuda.CUDAGraph on static buffers; "
                        "each call copies its input in and replays",
                  timing=("CUDA events around every call" if cuda else "host clock per call")
                  + f", {warmup} warm-up then up to {iters} calls; {ROTATE} random inputs cycled",
                  cudnn_benchmark=cuda, tf32_convolutions=torch.backends.cudnn.allow_tf32)
    results = record.setdefault("results", {})
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda  # fixed shapes: let cuDNN pick its fastest kernels
    try:
        with torch.no_grad():
            for w, h in QUICK_SIZES if ctx.quick else LATENCY_SIZES:
                inputs = [torch.randn(1, 3, h, w, device=ctx.device) for _ in range(ROTATE)]
                for mode in MODES if cuda else MODES[:1]:
                    attempt(ctx, results, f"{w}x{h} {mode}", lambda: _latency_run(
                        ctx, mode, model, half, inputs, iters, warmup) | {"width": w, "height": h})
                if not cuda:
                    for mode in MODES[1:]:
                        results[f"{w}x{h} {mode}"] = {"status": "skipped", "reason": "CUDA only"}
    finally:
        torch.backends.cudnn.benchmark = previous
    record["goal"] = goal_check(results)
    raise_failures(results)


def _latency_run(ctx, mode, model, half, inputs, iters, warmup) -> dict:
    step, labels = _latency_step(mode, model, half, inputs)
    x = torch.randn_like(inputs[0])  # one more fresh input, for the labels only
    agreement = label_agreement(labels(x), model(x).argmax(1))
    if agreement < MIN_AGREEMENT:
        raise RuntimeError(f"labels agree with fp32's on only {agreement:.3f} of the pixels "
                           f"(< {MIN_AGREEMENT}): not timed")
    samples = time_calls(step, ctx, iters, warmup)
    return {"mode": mode, "agreement": round(agreement, 5), **figures(samples)}


def _latency_step(mode, model, half, inputs):
    """(step(i): inference on input i, labels(x): the mode's labels for a new x)."""
    if mode == "fp32":
        return (lambda i: model(inputs[i % ROTATE])), (lambda x: model(x).argmax(1))
    xs = [x.half() for x in inputs]
    if mode == "fp16":
        return (lambda i: half(xs[i % ROTATE])), (lambda x: half(x.half()).argmax(1))
    graph, static_in, static_out = _capture(half, xs[0])

    def step(i: int) -> None:
        static_in.copy_(xs[i % ROTATE])
        graph.replay()

    def labels(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x.half())
        static_out.fill_(math.nan)  # poisoned: a replay that skips an element shows
        graph.replay()
        if not torch.isfinite(static_out).all():
            raise RuntimeError("the graph replay left non-finite outputs")
        return static_out.argmax(1)

    return step, labels


def _capture(model, example):
    """A CUDA graph of ``model`` on a static copy of ``example`` (warmed up on a side stream,
    as capture requires), with its static input and output."""
    static_in = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_in)
    return graph, static_in, static_out


def create_fcn8s(backbone: str, weights: Path | None = None):
    from fcn_edge.models import create_model

    return create_model("fcn8s", num_classes=21, backbone=backbone, weights=weights)


def random_scores(model):
    """Score layers start at zero (paper §4.2): every label would be 0. Draw them instead."""
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("score"):
                param.normal_(0, 0.05) if param.ndim > 1 else param.zero_()
    return model


# --- training -----------------------------------------------------------------------------------

def training(ctx: Context, record: dict) -> None:
    """Images/s of FCN-8s VGG16 and ResNet18 training steps as fcn_edge.train's loop takes
    them on CUDA (fp16 autocast + GradScaler, channels_last, the paper's SGD), on random data."""
    cuda = ctx.device == "cuda"
    size, batch, warmup, steps = (64, 2, 1, 1) if ctx.quick else (500, 8, 5, 20)
    record.update(device=ctx.device, size=f"{size}x{size}", batch=batch, warmup_steps=warmup,
                  amp="fp16 autocast + GradScaler, channels_last" if cuda else "none (fp32)",
                  loss="fcn_edge.train.loss.pixel_loss, mean over counted pixels (paper recipe)",
                  optimizer="fcn_edge.train.optim.make_optimizer: SGD, momentum 0.9",
                  data="random images, random labels with 5% ignored (255)",
                  timing="synchronised host clock around each step; images/s = batch / p50")
    results = record.setdefault("results", {})
    # --quick leaves VGG16 out: its 120 M parameters cost seconds per CPU step, its code path
    # is ResNet18's.
    for backbone in ("resnet18",) if ctx.quick else ("vgg16", "resnet18"):
        attempt(ctx, results, backbone,
                lambda: _train_rate(ctx, backbone, size, batch, warmup, steps))
        if cuda:
            torch.cuda.empty_cache()
    raise_failures(results)


def _train_rate(ctx, backbone, size, batch, warmup, steps) -> dict:
    from fcn_edge.config import TrainConfig
    from fcn_edge.train.loss import pixel_loss
    from fcn_edge.train.optim import make_optimizer

    cuda = ctx.device == "cuda"
    torch.manual_seed(0)
    model = create_fcn8s(backbone).to(ctx.device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    optimizer = make_optimizer(model, TrainConfig(model=model.config))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    batches = [_random_batch(batch, size, ctx.device) for _ in range(2)]

    def step(i: int) -> torch.Tensor:
        x, y = batches[i % 2]
        with torch.autocast(ctx.device, dtype=torch.float16, enabled=cuda):
            logits = model(x)
        loss = pixel_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for i in range(warmup):
        step(i)
    samples, loss = [], None
    for i in range(steps):
        _sync(cuda)
        start = time.perf_counter()
        loss = step(i)
        _sync(cuda)
        samples.append((time.perf_counter() - start) * 1e3)
        if ctx.left() < 0:
            break
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is {float(loss)} after {warmup + len(samples)} steps")
    timing = figures(samples)
    out = {"images_per_s": round(batch * 1000.0 / timing["p50_ms"], 2),
           "step_p50_ms": timing["p50_ms"], "steps": timing["runs"], "loss": float(loss.detach())}
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _random_batch(batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, size, size), device=device)
    y[torch.rand(y.shape, device=device) < 0.05] = 255
    return x, y


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


# --- torchvision parity -------------------------------------------------------------------------

#: backbone → (tap, our module, torchvision's module, compare our cell (p, p) where p is the
#: layer's padding: the cell whose window is the whole pool5 map, i.e. torchvision's fc6 Linear).
PARITY_TAPS = {
    "resnet18": (("layer2 (stride 8)", "layer2", "layer2", False),
                 ("layer3 (stride 16)", "layer3", "layer3", False),
                 ("layer4 (stride 32)", "layer4", "layer4", False)),
    "vgg16": (("pool3", "pool3", "features.16", False), ("pool4", "pool4", "features.23", False),
              ("pool5", "pool5", "features.30", False), ("fc6", "fc6", "classifier.0", True)),
    "alexnet": (("pool1", "features.2", "features.2", False),
                ("pool2", "features.5", "features.5", False),
                ("pool5", "features.12", "features.12", False),
                ("fc6", "fc6", "classifier.1", True)),
    # The edge backbones keep torchvision's names: the skips' blocks and the last convolution
    # (conv_head, the convolutionalised Linear, is checked on the CPU: test_mobilenet.py).
    "mobilenet_v3_large": tuple((f"features.{i} (stride {s})", f"features.{i}",
                                 f"features.{i}", False) for i, s in ((6, 8), (12, 16), (16, 32))),
    "mobilenet_v3_small": tuple((f"features.{i} (stride {s})", f"features.{i}",
                                 f"features.{i}", False) for i, s in ((3, 8), (8, 16), (12, 32))),
    "googlenet": tuple((f"{m} (stride {s})", m, m, False)
                       for m, s in (("inception3b", 8), ("inception4e", 16), ("inception5b", 32))),
}
#: torchvision's builder options for each backbone's reference: our FCN-GoogLeNet always
#: re-normalises its input as torchvision's pretrained GoogLeNet does (transform_input), and
#: its files hold the auxiliary classifiers our loading skips.
REFERENCE_OPTIONS = {"googlenet": {"transform_input": True, "aux_logits": True,
                                   "init_weights": True}}


def torchvision_parity(ctx: Context, record: dict) -> None:
    """Our trunks against torchvision's modules under the same (random) weights, loaded into
    ours through fcn_edge's own weight loading as a user's ImageNet file would be."""
    models, why = torchvision_models()
    if models is None:
        raise SkipSection(f"torchvision is not importable here ({why})")
    record.update(device=ctx.device, input="1×3×224×224 random normal (fc6 needs a 7×7 pool5)",
                  tolerance=PARITY_TOLERANCE, measure="max |Δ| / max |torchvision|",
                  tf32="off for the comparison")
    results = record.setdefault("results", {})
    backbones = ("resnet18",) if ctx.quick else tuple(PARITY_TAPS)
    from gpu_check_segmentation import segmentation_parity

    with tempfile.TemporaryDirectory() as folder, _no_tf32():
        for backbone in backbones:
            attempt(ctx, results, backbone, lambda: _parity_one(
                getattr(models, backbone)(weights=None, **REFERENCE_OPTIONS.get(backbone, {})),
                backbone, Path(folder), ctx.device))
        segmentation_parity(ctx, models, results, Path(folder))
    raise_failures(results)


def _parity_one(reference, backbone: str, folder: Path, device: str) -> dict:
    ours = load_ours(reference, backbone, folder)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    taps = compare_taps(ours.to(device), reference.to(device), backbone, x.to(device))
    out = {"loaded_tensors": len(ours.load_report.loaded), "taps": taps}
    bad = [k for k, t in taps.items() if not t["ok"]]
    return out | {"error": f"differs from torchvision at {', '.join(bad)}"} if bad else out


def load_ours(reference: torch.nn.Module, backbone: str, folder: Path):
    """Our FCN-8s with ``reference``'s state dict (weights and BatchNorm statistics drawn
    first, so eval mode uses them), written to a file and read back by fcn_edge's weight
    loading."""
    draw_live_weights(reference)
    draw_batchnorm(reference)
    path = folder / f"{backbone}_classifier.pt"
    torch.save(reference.state_dict(), path)
    return create_fcn8s(backbone, weights=path)


def draw_live_weights(model: torch.nn.Module, seed: int = 2) -> None:
    """He-normal weights over each layer's true fan-in (a depthwise kernel's is k², not
    C·k²). torchvision's own initialisations of MobileNetV3 (fan_out) and GoogLeNet
    (N(0, 0.01²)) shrink the maps ~1000× a stage in eval mode: the taps would be BatchNorm's
    biases alone, and a wrong convolution would hide below the tolerance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen)
                                    * (2.0 / fan_in) ** 0.5)


def draw_batchnorm(model: torch.nn.Module, seed: int = 1) -> None:
    """Random BatchNorm statistics and affine weights, so eval mode uses non-trivial ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5),
                                          (module.running_var, 0.5, 1.5),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=gen))


def compare_taps(ours, reference, backbone: str, x: torch.Tensor,
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """Run ``x`` through our trunk and the reference (both in eval mode), and compare the
    maps at each of PARITY_TAPS[backbone]."""
    ours.eval(), reference.eval()
    taps = PARITY_TAPS[backbone]
    with torch.no_grad():
        # The trunk alone: FCN.taps() may pad the input for coverage; torchvision never does.
        mine = _capture_outputs(ours, [t[1] for t in taps], lambda: ours._trunk(x))
        theirs = _capture_outputs(reference, [t[2] for t in taps], lambda: reference(x))
    layers = dict(ours.named_modules())
    out = {}
    for label, own, ref, cell in taps:
        a, b = mine[own], theirs[ref]
        if cell:
            p = layers[own].padding[0]
            a = a[:, :, p, p]
        if a.shape != b.shape:
            out[label] = {"ok": False, "shapes": [list(a.shape), list(b.shape)]}
            continue
        diff, scale = float((a - b).abs().max()), float(b.abs().max())
        rel = diff / max(scale, 1e-12)
        out[label] = {"ok": rel <= tolerance, "rel": rel, "max_abs_diff": diff,
                      "reference_scale": scale, "shape": list(b.shape)}
    return out


def _capture_outputs(model, names: list[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """The outputs of ``model``'s modules ``names`` during ``run()``, copied as they are made
    (in-place ReLUs overwrite some of them afterwards)."""
    modules, outputs = dict(model.named_modules()), {}
    hooks = [modules[n].register_forward_hook(
        lambda module, args, output, n=n: outputs.__setitem__(n, output.detach().clone()))
        for n in names]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@contextmanager
def _no_tf32() -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


def torchvision_models() -> tuple[Any, str | None]:
    """(torchvision.models, None), or (None, why it does not import)."""
    try:
        import torchvision.models as models
    except Exception as exc:  # missing, or built for another torch (RuntimeError, OSError)
        return None, one_line(exc)
    return models, None
