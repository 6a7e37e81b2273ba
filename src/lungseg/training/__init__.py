"""Stage 2: the U-Net, its augmentation, the training loop, curves and ONNX export.

Needs the training extras: ``pip install -e '.[train]'`` (torch, MONAI, Lightning).
"""
