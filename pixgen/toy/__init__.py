"""The offline toy world: flat-coloured shapes on a 3x3 grid, with our own VQGAN, CLIP and evaluator.

- ``world``: the renderer and scene sampler; ``captions``: caption meanings, text and hard negatives.
- ``train_vqgan``, ``train_clip``, ``train_evaluator``: training scripts (``pixgen toy train ...``).
- ``evaluator``: the scene reader used only for judging; ``evaluate``: the prompt suite (``pixgen eval``).
"""
