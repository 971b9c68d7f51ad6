"""Dspike's CIFAR-10/100 recipe: the modified spiking ResNet-18 (Li et al., NeurIPS 2021, Sec. 5.2).

    python -m experiments.cifar [--recipe dspike_cifar10] [--dataset cifar100] [--model resnet19]
        [--T 6] [--tit-steps 4,2] [--ann-init true] [--method dspike] [--batch-size 128]
        [--workdir runs/cifar10] [--data-dir DIR] ...

The paper's whole pipeline in one command: the ANN twin trained first (``workdir/ann``), the
spiking model at T = 6 initialised from it (``workdir/T6``, 300 epochs, lr 0.01), then Time
Inheritance Training down to T = 4 and T = 2 (``workdir/T4``, ``workdir/T2``, 50 epochs each at
lr 0.004), every spiking round with Dspike's temperature search before each epoch (FDG of the
first layer with eps 0.1, b from 1 in steps of 0.2). SGD with momentum 0.9, cosine decay to 0,
weight decay 1e-4, random crop + flip, AutoAugment and Cutout; LIF neurons (decay 0.25,
threshold 0.5, hard reset), tdBN. ``--ann-init false --tit-steps none`` trains one model at T.

The data come from tensorflow-datasets (``pip install -e ".[tfds]"``; see the README for
preparing CIFAR once). ``--help`` lists every field that can be overridden; every round resumes
from its workdir.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jsnn import train

_DSPIKE = train.Config(
    dataset="cifar10",
    autoaugment=True,
    cutout=16,
    model="resnet18_modified",
    steps=6,
    neuron="lif",
    decay=0.25,
    v_th=0.5,
    surrogate="dspike",
    norm="tdbn",
    epochs=300,
    batch_size=128,
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="cosine",
    method="dspike",
    fdg_chunk=1,  # XLA needs ~10 GiB for the search at batch 128 with 1, ~57 GiB with 16
    ann_init=True,
    tit_steps=(4, 2),
    tit_epochs=50,
    tit_lr=0.004,
    workdir="runs/cifar10",
    checkpoint_every=1000,
    log_every=50,
)

# The CPNG paper's baselines (its Sec. 5 and appendix A.2, Table 5): triangular surrogate,
# tdBN, SGD with momentum 0.9, wd 1e-4, lr 0.1 warmed up from 0.01 over 1/20 of the epochs,
# then cosine decay to 0. Its chi-controlled surrogate width is a method of its own.
_CPNG_BASELINE = dataclasses.replace(
    _DSPIKE,
    method="surrogate",
    ann_init=False,
    tit_steps=(),
    autoaugment=False,
    cutout=0,
    model="resnet19",
    surrogate="triangular",
    batch_size=256,
    epochs=200,
    lr=0.1,
    warmup_epochs=10.0,
    warmup_from=0.1,
    workdir="runs/cpng_resnet19_cifar10",
)

RECIPES = {
    "dspike_cifar10": _DSPIKE,
    "dspike_cifar100": dataclasses.replace(_DSPIKE, dataset="cifar100", workdir="runs/cifar100"),
    "cpng_baseline_resnet19_cifar10": _CPNG_BASELINE,
    "cpng_baseline_vgg16_cifar100": dataclasses.replace(
        _CPNG_BASELINE,
        dataset="cifar100",
        model="vgg16",
        steps=5,
        epochs=300,
        warmup_epochs=15.0,
        workdir="runs/cpng_vgg16_cifar100",
    ),
}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    return train.main(argv, RECIPES, default="dspike_cifar10", description=__doc__.split("\n")[0])


if __name__ == "__main__":
    main()
