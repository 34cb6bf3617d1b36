"""Standard image-generation metrics: FID, KID and Inception Score on the standard FID Inception.

- ``inception``: the TensorFlow-compatible InceptionV3 of published FIDs (pytorch-fid, torch-fidelity),
  loaded from either standard weights file with ``weights_only=True``; or a user's TorchScript network.
- ``distances``: FID, KID and IS from features and logits (numpy).
- ``image_sets``: image folders and ``.npz`` arrays in, uint8 tensors and features out.
- ``python -m harness.metrics``: two image sets scored in one command, torch-fidelity's key names out.
"""
