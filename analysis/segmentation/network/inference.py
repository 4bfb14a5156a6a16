"""Sliding-window inference of the body network: the same code on CPU and CUDA.

On CUDA the windows run in mixed precision (``torch.autocast`` float16) and MONAI aggregates the
overlapping windows on the GPU (``sw_device`` = ``device`` = cuda), so only the final probability map
crosses to the host. On CPU everything is float32. Windows overlap by ``overlap`` and are blended with a
Gaussian weight, which removes seams at window borders.
"""

from __future__ import annotations

import numpy as np

DEFAULT_INFERENCE = {"roi_size": [96, 96, 96], "overlap": 0.25, "sw_batch_size": 2, "threshold": 0.5}


def resolve_device(device):
    """The torch device to run on: ``"cuda"`` only when asked for and available (else ``"cpu"``).

    Also applies ``BMDSITE_TORCH_THREADS`` (CPU threads of torch) when set: on a machine whose cores are
    shared with other busy processes, torch's default of one thread per core spins waiting for descheduled
    threads (measured on a 2-core machine at load 11: 9.4 s per training step with 2 threads, 0.36 s with 1).
    """
    import os

    import torch

    threads = os.environ.get("BMDSITE_TORCH_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"BMDSITE_TORCH_THREADS must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"


def predict_probability(model, image, inference=None, device="cpu", foreground=1):
    """Foreground probability of an image on the network grid.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (batch, 1, z, y, x) to logits (batch, classes, z, y, x); already on ``device``, in eval mode.
    image : np.ndarray of float32, shape (z, y, x)
        Preprocessed intensities (0..1).
    inference : dict, optional
        ``roi_size``, ``overlap``, ``sw_batch_size`` (:data:`DEFAULT_INFERENCE`).
    device : {"cpu", "cuda"}
        A resolved device (:func:`resolve_device`).
    foreground : int or None
        Softmax channel returned; None returns all class probabilities (classes, z, y, x).

    Returns
    -------
    np.ndarray of float32, shape (z, y, x) (or (classes, z, y, x) with ``foreground=None``)
    """
    import torch
    from monai.inferers import sliding_window_inference

    inference = {**DEFAULT_INFERENCE, **(inference or {})}
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    cuda = device == "cuda"
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
        logits = sliding_window_inference(
            x, roi_size=tuple(int(r) for r in inference["roi_size"]), sw_batch_size=int(inference["sw_batch_size"]),
            predictor=model, overlap=float(inference["overlap"]), mode="gaussian", sw_device=device, device=device,
        )
        prob = torch.softmax(logits.float(), dim=1)[0]
        if foreground is not None:
            prob = prob[foreground]
    return prob.cpu().numpy().astype(np.float32, copy=False)
