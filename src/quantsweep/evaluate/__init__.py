"""Evaluation: preprocessing per model contract, output decoding, COCO scoring."""
