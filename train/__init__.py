"""The training backend: packed data, the paper's augmentation and update rule,
the training loop (single device, two towers, DDP), checkpoints and evaluation.

    prepare.py      photo folders -> packed 256x256 uint8 arrays + mean image + RGB PCA
    packed.py       reading the packed format (memory-mapped)
    augment.py      §4.1 random crops, flips, PCA colour noise, mean subtraction
    loader.py       batches of a packed split, deterministic per (seed, epoch, batch); prefetch to the GPU
    optim.py        §5 update rule and the plateau schedule
    schedule.py     the lr schedule (plateau, cosine, linear) and the wall-clock budget (--budget)
    precision.py    --amp on a GPU or a CPU; deterministic set-up
    auto_recipe.py  --recipe auto: width, batch, augmentation, precision from the data and a probe
    parallel.py     --parallel model (two towers) and --parallel data (DDP); the ranks' stop vote and sums
    training_state.py  the training state on disk: atomic, keep last K and best, exact resume
    runfolder.py    a run folder's layout; a used --out refused, --overwrite
    monitor.py      the epoch's meter, the loss window, CSV/JSONL/TensorBoard logs, PNG curves, stall detector
    trainer.py      the loop
    recipe.py       recipe files (recipes/*.toml) and command-line overrides
    finetune.py     --init-from: carried-over layers, freezing, their learning rate
    evaluate.py     1 or 10 crops, top-1/top-5 error, ensembles
    synthetic.py    an ImageNet-shaped synthetic set and a timed run (the GPU check, benchmarks)
    experiments/    the paper's claims, reproduced (``alexnet-kit reproduce``)

Imports the runtime (``alexnet_kit``); the runtime never imports this.
"""
