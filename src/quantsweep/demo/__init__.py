"""The embedded demo: a synthetic dataset and one trained detector deployed under two
contracts (PaddleDetection's in Paddle, RT-DETR's in PyTorch)."""
