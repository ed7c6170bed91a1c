"""Small architectures that keep parity tests fast on a CPU."""

from sam_core import SamConfig

# Reduced encoder and input size; decoder and prompt encoder at their published sizes.
# Window 5 does not divide the 16x16 grid, so window padding is exercised.
TINY = SamConfig(
    image_size=256,
    encoder_embed_dim=64,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_window_size=5,
    encoder_global_attn_indexes=(1, 3),
)
