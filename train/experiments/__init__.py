"""The paper's claims, reproduced at small scale.

    common.py       data caches (CIFAR-10, Caltech-101 split), results JSON, machine facts
    fig1.py         Figure 1: ReLU vs tanh, epochs to 25% training error on CIFAR-10
    convnet18.py    cuda-convnet's CIFAR-10 example net (layers-18pct), the network of Figure 1
    ablations.py    §3.3/§3.4/§4.1/§4.2 ablations on a Caltech-101 subset, narrow AlexNet
    fig3.py         Figure 3: the first-layer kernels, one block per tower
    fig4.py         Figure 4: top-5 predictions and nearest training photos by fc7 distance

Each module has ``run(out, size=..., ...) -> dict`` that writes ``<name>.json``
and ``<name>.png`` under ``out``; ``alexnet-kit reproduce NAME`` calls it. They
train and count through the library (``alexnet_kit.train``: PaperSGD, the
§4.1 augmentation, the loader's data stream; ``alexnet_kit.metrics``), so a
fix there reaches their numbers too.
"""
