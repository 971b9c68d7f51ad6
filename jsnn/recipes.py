"""The papers' configurations as plain Python values, importable by experiments, benchmarks
and notebooks alike: ``jsnn.recipes.RECIPES["dspike_cifar10"]``, changed with
:meth:`jsnn.config.Config.override` or ``--section.field value`` on the command line."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from jsnn.config import Config, DataConfig, InitConfig, ModelConfig
from jsnn.methods.dspike import DspikeSearch
from jsnn.train import TrainConfig

__all__ = ["CIFAR", "DIGITS", "RECIPES"]

# The quickstart: a small spiking CNN on scikit-learn's bundled digits, no download needed.
DIGITS: Mapping[str, Config] = MappingProxyType({"digits": Config()})

# Dspike's CIFAR-10 pipeline (Li et al., NeurIPS 2021, Sec. 5.2): the ANN twin trained first,
# the modified ResNet-18 at T = 6 from it (300 epochs, lr 0.01), then Time Inheritance down to
# T = 4 and 2 (50 epochs each at lr 0.004), every spiking round with the temperature search.
_DSPIKE = Config(
    data=DataConfig(name="cifar10", autoaugment=True, cutout=16),
    model=ModelConfig(
        name="resnet18_modified",
        time_steps=6,
        neuron="lif",
        decay=0.25,
        v_th=0.5,
        surrogate="dspike",
        norm="tdbn",
    ),
    train=TrainConfig(
        epochs=300,
        batch_size=128,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="cosine",
        workdir="runs/cifar10",
        checkpoint_every=1000,
        log_every=50,
    ),
    init=InitConfig(ann=True, tit_steps=(4, 2), tit_epochs=50, tit_lr=0.004),
    # XLA needs ~10 GiB for the search at batch 128 with chunk 1, ~57 GiB with 16.
    method=DspikeSearch(chunk=1),
)

# The CPNG paper's baselines (its Sec. 5 and appendix A.2, Table 5): triangular surrogate with
# beta 1 at threshold 1.0 (the paper's Fig. 1-2), tdBN, SGD with momentum 0.9, wd 1e-4, lr 0.1
# warmed up from 0.01 over 1/20 of the epochs, then cosine decay to 0; ResNet-19 on CIFAR-10 at
# T = 6, VGG-16 on CIFAR-100 at T = 5 (300 epochs, batch 256). The paper states no decay: the
# Dspike recipe's 0.25 is kept.
_CPNG_BASELINE = _DSPIKE.override(
    {
        "method.name": "surrogate",
        "init.ann": False,
        "init.tit_steps": (),
        "data.autoaugment": False,
        "data.cutout": 0,
        "model.name": "resnet19",
        "model.surrogate": "triangular",
        "model.v_th": 1.0,
        "train.batch_size": 256,
        "train.epochs": 200,
        "train.lr": 0.1,
        "train.warmup_epochs": 10.0,
        "train.warmup_from": 0.1,
        "train.workdir": "runs/cpng_baseline_resnet19_cifar10",
    }
)
_CPNG_BASELINE_VGG = _CPNG_BASELINE.override(
    {
        "data.name": "cifar100",
        "model.name": "vgg16",
        "model.time_steps": 5,
        "train.epochs": 300,
        "train.warmup_epochs": 15.0,
        "train.workdir": "runs/cpng_baseline_vgg16_cifar100",
    }
)
# CPNG itself: the same runs with Algorithm 1 after every epoch (Sec. 5: "except for applying
# the CPNG method at the end of each epoch, all other conditions ... are consistent").
_CPNG = {
    "cpng_resnet19_cifar10": _CPNG_BASELINE.override(
        {"method.name": "cpng", "train.workdir": "runs/cpng_resnet19_cifar10"}
    ),
    "cpng_vgg16_cifar100": _CPNG_BASELINE_VGG.override(
        {"method.name": "cpng", "train.workdir": "runs/cpng_vgg16_cifar100"}
    ),
}
# CPNG with the TET loss: Table 5's last column (Adam, lr 0.001, wd 4e-5, no warm-up).
_TET = {
    "loss": "tet",
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 4e-5,
    "warmup_epochs": 0.0,
}
_CPNG_TET = {
    name.replace("cpng_", "cpng_tet_"): config.override(
        {
            **{f"train.{field}": value for field, value in _TET.items()},
            "train.workdir": config.train.workdir.replace("cpng_", "cpng_tet_"),
        }
    )
    for name, config in _CPNG.items()
}

CIFAR: Mapping[str, Config] = MappingProxyType(
    {
        "dspike_cifar10": _DSPIKE,
        "dspike_cifar100": _DSPIKE.override(
            {"data.name": "cifar100", "train.workdir": "runs/cifar100"}
        ),
        "cpng_baseline_resnet19_cifar10": _CPNG_BASELINE,
        "cpng_baseline_vgg16_cifar100": _CPNG_BASELINE_VGG,
        **_CPNG,
        **_CPNG_TET,
    }
)

RECIPES: Mapping[str, Config] = MappingProxyType({**DIGITS, **CIFAR})
