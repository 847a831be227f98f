"""What every open_clip-based part of distillctl shares: the ``coca`` and ``clip`` support, the quickstart
teacher and the evaluators use these, and ``coca`` / ``clip`` import nothing of each other.

* :mod:`~distillctl.openclip.tokenizer` -- open_clip's BPE tokenizer at a model's context length;
* :mod:`~distillctl.openclip.transforms` -- preprocess configs and eval image transforms;
* :mod:`~distillctl.openclip.config` -- any open_clip model config, by name, JSON file or ``local-dir`` folder;
* :mod:`~distillctl.openclip.tags` -- the pretrained tags we know and their torch-free preflight;
* :mod:`~distillctl.openclip.weights` -- ``--teacher-weights`` resolution and strict loading;
* :mod:`~distillctl.openclip.hashing` -- weight fingerprints for reports;
* :mod:`~distillctl.openclip.bundle` -- a built model wrapped as a frozen :class:`~distillctl.interfaces.Teacher`;
* :mod:`~distillctl.openclip.export` -- the ``local-dir`` export and the methods both families share.

Only ``tags`` is torch-free; the other submodules import torch (and most open_clip) at import time.
Internal to distillctl: plugins use the documented API (``plugins/README.md``, "What a plugin may import").
"""
