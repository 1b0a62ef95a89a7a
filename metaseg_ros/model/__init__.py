"""MetaSegmenter network: backbones, pixel decoder, transformer decoder, memory."""
