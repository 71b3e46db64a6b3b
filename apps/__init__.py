"""The Gradio demo (``alexnet-kit demo``): classify a photo, find similar ones, see the kernels.

Installs as ``alexnet_kit.apps``. Only :mod:`alexnet_kit.apps.demo` imports
Gradio; :mod:`~alexnet_kit.apps.figures` and :mod:`~alexnet_kit.apps.service`
are plain numpy/Pillow/torch, so they are usable (and tested) without it.
"""
