"""The papers' configurations as plain Python values, importable by experiments, benchmarks
and notebooks alike: ``jsnn.recipes.RECIPES["dspike_cifar10"]``, changed with
:meth:`jsnn.config.Config.override` or ``--section.field value`` on the command line."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from jsnn.config import Config, DataConfig, InitConfig, ModelConfig
from jsnn.methods.dspike import DspikeSearch
from jsnn.train import TrainConfig

__all__ = ["CIFAR", "DIGITS", "EVENT_DRIVEN", "RECIPES"]

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

# Event-driven learning (Zhu et al., NeurIPS 2022; the authors' networks/*.yaml, their Table 2
# and supplement B.10): per data set the network, T, tau_m / tau_s / tau_grad, the spike counts,
# the optimizer and the initialisation's target rate. Not reproduced: the CIFAR nets' dropout
# (0.1 after each pooling and FC layer of CIFAR-10) and torchvision's ImageNet AutoAugment
# policy of their CIFAR-10 (the CIFAR policy here).
_EVENT_DRIVEN = Config().override({"method.name": "event_driven"})
_MNIST = _EVENT_DRIVEN.override(
    {
        "data.name": "mnist",
        "method.architecture": "15C5-P2-40C5-P2-300",
        "train.lr": 5e-4,
        "train.epochs": 100,
        "train.batch_size": 50,
        "train.seed": 3,
        "train.workdir": "runs/event_driven_mnist",
    }
)
_CIFAR_VGG = "128C3p1-128C3p1-P2-256C3p1-256C3p1-256C3p1-P2-512C3p1-512C3p1-512C3p1-P2-2048-2048"
_ED_CIFAR10 = _MNIST.override(
    {
        "data.name": "cifar10",
        "data.autoaugment": True,
        "model.time_steps": 12,
        "method.architecture": _CIFAR_VGG,
        "method.tau_m": 7.0,
        "method.tau_s": 4.0,
        "method.tau_grad": 3.5,
        "method.desired_count": 10.0,
        "method.avg_spike_init": 1.0,
        "method.learn_scale": False,
        "train.optimizer": "sgd",
        "train.lr": 0.05,
        "train.epochs": 500,
        "train.workdir": "runs/event_driven_cifar10",
    }
)
EVENT_DRIVEN: Mapping[str, Config] = MappingProxyType(
    {
        "event_driven_digits": _EVENT_DRIVEN.override({"train.workdir": "runs/event_driven"}),
        "event_driven_digits_events": _EVENT_DRIVEN.override(
            {"data.name": "digits_events", "train.workdir": "runs/event_driven_events"}
        ),
        "event_driven_mnist": _MNIST,
        "event_driven_fashion_mnist": _MNIST.override(
            {
                "data.name": "fashion_mnist",
                "data.augment": True,
                "method.architecture": "32C5p2-P2-64C5p2-P2-1024",
                "train.epochs": 150,
                "train.workdir": "runs/event_driven_fashion_mnist",
            }
        ),
        "event_driven_nmnist": _MNIST.override(
            {
                "data.name": "nmnist",
                "model.time_steps": 30,
                "method.architecture": "12C5p1-P2-64C5-P2",
                "method.tau_m": 8.0,
                "method.tau_s": 4.0,
                "method.tau_grad": 3.0,
                "method.desired_count": 15.0,
                "method.undesired_count": 2.0,
                "method.avg_spike_init": 2.0,
                "train.epochs": 120,
                "train.workdir": "runs/event_driven_nmnist",
            }
        ),
        "event_driven_cifar10": _ED_CIFAR10,
        "event_driven_cifar100": _ED_CIFAR10.override(
            {
                "data.name": "cifar100",
                "data.autoaugment": False,
                "model.time_steps": 16,
                "method.tau_m": 10.0,
                "method.tau_s": 6.0,
                "method.tau_grad": 5.5,
                "method.desired_count": 15.0,
                "method.avg_spike_init": 1.2,
                "train.lr": 0.06,
                "train.workdir": "runs/event_driven_cifar100",
            }
        ),
    }
)

RECIPES: Mapping[str, Config] = MappingProxyType({**DIGITS, **CIFAR, **EVENT_DRIVEN})
