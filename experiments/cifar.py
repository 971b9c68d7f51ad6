"""Dspike's CIFAR-10/100 recipe: the modified spiking ResNet-18 (Li et al., NeurIPS 2021, Sec. 5.2).

    python -m experiments.cifar [--recipe dspike_cifar10] [--data.name cifar100]
        [--model.name resnet19] [--T 6] [--init.tit-steps 4,2] [--init.ann true]
        [--method.name dspike] [--train.batch-size 128] [--train.workdir runs/cifar10]
        [--data.data-dir DIR] ...

The paper's whole pipeline in one command: the ANN twin trained first (``workdir/ann``), the
spiking model at T = 6 initialised from it (``workdir/T6``, 300 epochs, lr 0.01), then Time
Inheritance Training down to T = 4 and T = 2 (``workdir/T4``, ``workdir/T2``, 50 epochs each at
lr 0.004), every spiking round with Dspike's temperature search before each epoch (FDG of the
first layer with eps 0.1, b from 1 in steps of 0.2). SGD with momentum 0.9, cosine decay to 0,
weight decay 1e-4, random crop + flip, AutoAugment and Cutout; LIF neurons (decay 0.25,
threshold 0.5, hard reset), tdBN. ``--init.ann false --init.tit-steps none`` trains one model
at T. The recipes are
:data:`jsnn.recipes.CIFAR`, the CPNG paper's among them: ``--recipe cpng_vgg16_cifar100``
(VGG-16 on CIFAR-100 at T = 5) and ``cpng_resnet19_cifar10`` (ResNet-19 on CIFAR-10 at T = 6)
with CPNG after every epoch, ``cpng_tet_*`` the same with the TET loss, ``cpng_baseline_*``
without CPNG; ``--method cpng`` switches any recipe to CPNG (with a triangular surrogate).

The data come from tensorflow-datasets (``pip install -e ".[tfds]"``; see the README for
preparing CIFAR once). ``--help`` lists every field that can be overridden; every round resumes
from its workdir.
"""

from __future__ import annotations

from collections.abc import Sequence

from jsnn import recipes, run


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    return run.main(
        argv, recipes.CIFAR, default="dspike_cifar10", description=__doc__.split("\n")[0]
    )


if __name__ == "__main__":
    main()
