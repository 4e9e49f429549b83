"""From datasets of numpy samples to reproducible torch batches.

Reproducibility is what makes ``--resume`` exact: the augmentation of sample ``i`` in epoch
``e`` draws from its own generator seeded by ``(seed, e, i)``, and the order of an epoch is a
permutation seeded by ``(seed, e)``, so neither depends on worker processes, on how many ranks
share the data, or on whether the run was interrupted.
"""
from __future__ import annotations

import functools
import signal
import sys
import threading
from typing import Iterator, Sequence

import numpy as np
import torch

from ..data import TrainAugment
from ..errors import FcnEdgeError
from .tasks import keep_used, sample_input, sample_target


class AugmentedDataset(torch.utils.data.Dataset):
    """Wraps a dataset of ``Sample``s: augments (training only) and encodes each one.

    ``inputs`` are the model's modalities in channel order (paper §5: rgb, depth, hha) and
    ``tasks`` its heads: with two or more the target is K×H×W, one label map per head.
    """

    def __init__(self, dataset, mean, std, augment: TrainAugment | None, seed: int,
                 inputs: Sequence[str] = ("rgb",), tasks: Sequence[str] | None = None) -> None:
        self.dataset, self.mean, self.std = dataset, mean, std
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.inputs, self.tasks = tuple(inputs), tuple(tasks) if tasks else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = keep_used(self.dataset[index], self.inputs, self.tasks)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.augment.sample(sample, rng)  # the draws of augment(image, mask)
        x = torch.from_numpy(sample_input(sample, self.inputs, self.mean, self.std))
        target = sample_target(sample, self.tasks)
        return x, torch.from_numpy(np.ascontiguousarray(target)).long()


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, split across ``world`` ranks (every rank gets the
    same number of samples; the last few indices repeat when the length does not divide)."""

    def __init__(self, length: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world, self.epoch = rank, world, 0

    def __iter__(self) -> Iterator[int]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
                 if self.shuffle else np.arange(self.length))
        per_rank = -(-self.length // self.world)
        order = np.resize(order, per_rank * self.world)  # pad by repeating from the start
        return iter(order[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return -(-self.length // self.world)


def pad_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples of different sizes by padding to the largest: zeros for the image (the
    mean colour after normalisation) and ``ignore_index`` for the masks (H×W, or K×H×W for
    K heads), so padding never counts in the loss."""
    h = max(x.shape[1] for x, _ in batch)
    w = max(x.shape[2] for x, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], h, w)
    masks = torch.full((len(batch), *batch[0][1].shape[:-2], h, w), ignore_index,
                       dtype=torch.long)
    for i, (x, m) in enumerate(batch):
        images[i, :, :x.shape[1], :x.shape[2]] = x
        masks[i, ..., :m.shape[-2], :m.shape[-1]] = m
    return images, masks


class _Loader(torch.utils.data.DataLoader):
    """A DataLoader whose worker processes' fcn-edge errors arrive as themselves. Torch raises
    an error from a worker again in the main process as the same class, but with the worker's
    whole traceback for its message ("Caught InputError in DataLoader worker process 0.
    Original Traceback …"), which the CLI would print as its "one line"; here the message is
    the original one again (``voc/JPEGImages/x.jpg: unreadable image …``)."""

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except FcnEdgeError as exc:
                raise _unwrapped(exc) from None
            yield batch


def _unwrapped(exc: FcnEdgeError) -> FcnEdgeError:
    text = str(exc)
    if "\nOriginal Traceback" not in text:
        return exc
    last = text.rstrip().splitlines()[-1]  # "fcn_edge.errors.InputError: <the message>"
    return type(exc)(last.partition(": ")[2] or last)


def _worker_stops_quietly(worker_id: int) -> None:
    """systemd and ``kill -- -PGID`` send SIGTERM/SIGHUP to every process of the group, workers
    included. Killed by it, a worker makes torch raise "DataLoader worker … is killed by signal"
    over the main process's own clean stop; raising KeyboardInterrupt instead ends the worker
    the way Ctrl-C does (torch's worker loop exits quietly on it), and the main process, which
    got the signal too, stops as it does on Ctrl-C."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.default_int_handler)
    sys.excepthook = functools.partial(_quiet_when_the_parent_hangs_up, sys.excepthook)


def _quiet_when_the_parent_hangs_up(report, kind, value, trace) -> None:
    """A worker hands each batch's tensors to the main process through its resource-sharer
    thread (one fd per tensor). A main process stopped by a signal mid-hand-off drops that
    connection, and the thread printed "ConnectionResetError" through ``sys.excepthook`` over
    the clean stop. A dropped connection off the main thread means exactly that; anything else
    is still reported."""
    hung_up = issubclass(kind, (EOFError, ConnectionError))
    if not (hung_up and threading.current_thread() is not threading.main_thread()):
        report(kind, value, trace)


def make_loader(dataset: AugmentedDataset, sampler: EpochSampler, batch_size: int,
                workers: int, ignore_index: int) -> torch.utils.data.DataLoader:
    return _Loader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
        worker_init_fn=_worker_stops_quietly if workers else None)
